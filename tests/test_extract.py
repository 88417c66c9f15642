"""extract.py: sampling cubes at sites (nearest, window, per time) and the training-table join."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from globalflux.errors import DataError, GridError, RecipeError
from globalflux.extract import join_sites, sample_points
from globalflux.grid import MODIS_500M, BBox, GridSpec, modis_8day_start

G = GridSpec("EPSG:4326", 1.0, BBox(0, 0, 5, 4))
T = pd.DatetimeIndex(["2020-01-01", "2020-01-09", "2020-01-17"])
A = np.arange(3 * 4 * 5, dtype="float32").reshape(3, 4, 5)


@pytest.fixture(params=["numpy", "dask"])
def cube(request):
    ds = xr.Dataset(
        {"a": (("time", "y", "x"), A.copy()), "cls": (("y", "x"), np.arange(20, dtype="uint8").reshape(4, 5))},
        coords={"time": T, "y": G.y, "x": G.x},
    ).rio.write_crs("EPSG:4326")
    ds["a"][:, 1, 1] = np.nan
    return ds.chunk({"time": -1, "y": 2, "x": 2}) if request.param == "dask" else ds


PTS = pd.DataFrame({"site_id": ["s1", "s2"], "lat": [3.5, 0.2], "lon": [0.5, 4.9]})


def test_nearest_every_time(cube):
    out = sample_points(cube, PTS)
    assert len(out) == 6
    s1 = out[out.site_id == "s1"]
    np.testing.assert_array_equal(s1["a"].to_numpy(), A[:, 0, 0])
    assert (s1["cls"] == 0).all()
    s2 = out[out.site_id == "s2"]
    np.testing.assert_array_equal(s2["a"].to_numpy(), A[:, 3, 4])
    assert s2["pixel_x"].iloc[0] == 4.5 and s2["pixel_y"].iloc[0] == 0.5
    assert list(out.columns[:4]) == ["site_id", "lat", "lon", "time"]


def test_window_mean_skips_nan_and_edges(cube):
    out = sample_points(cube, PTS, method="window", window=3)
    s1 = out[out.site_id == "s1"]["a"].to_numpy()
    a = A.copy()
    a[:, 1, 1] = np.nan
    exp = np.nanmean(a[:, 0:2, 0:2].reshape(3, -1), axis=1)  # pixels beyond the edge are left out
    np.testing.assert_allclose(s1, exp, rtol=1e-6)
    assert (out[out.site_id == "s1"]["cls"] == 0).all()  # categorical: centre pixel


def test_points_with_time_pick_their_period(cube):
    pts = PTS.assign(time=pd.to_datetime(["2020-01-10", "2019-12-01"]))
    out = sample_points(cube, pts)
    assert len(out) == 2
    assert out.loc[0, "a"] == A[1, 0, 0] and out.loc[0, "cube_time"] == pd.Timestamp("2020-01-09")
    assert np.isnan(out.loc[1, "a"]) and pd.isna(out.loc[1, "cube_time"])


def test_static_cube_one_row_per_point():
    ds = xr.Dataset({"e": (("y", "x"), A[0])}, coords={"y": G.y, "x": G.x}).rio.write_crs("EPSG:4326")
    out = sample_points(ds, PTS)
    assert out["e"].tolist() == [0.0, 19.0]
    # y ascending cubes work too
    flipped = ds.isel(y=slice(None, None, -1))
    assert sample_points(flipped, PTS)["e"].tolist() == [0.0, 19.0]


def test_points_outside_name_the_site(cube):
    pts = pd.DataFrame({"site_id": ["ok", "FAR_AWAY"], "lat": [1.0, 50.0], "lon": [1.0, 3.0]})
    with pytest.raises(GridError) as e:
        sample_points(cube, pts)
    assert str(e.value).startswith("site FAR_AWAY: 1 site(s) outside the cube extent")


def test_bad_points_and_options(cube):
    with pytest.raises(DataError, match="lacks columns"):
        sample_points(cube, PTS.drop(columns="lon"))
    with pytest.raises(DataError, match="invalid coordinates at sites"):
        sample_points(cube, PTS.assign(lat=[100.0, 1.0]))
    with pytest.raises(RecipeError, match="positive odd"):
        sample_points(cube, PTS, method="window", window=2)
    with pytest.raises(RecipeError, match="unknown extraction method"):
        sample_points(cube, PTS, method="bilinear")


def test_sinusoidal_cube_points_are_transformed():
    one = GridSpec.modis_sinusoidal(BBox(1.0, 4_400_001.0, 2.0, 4_400_002.0))
    w, n, r = one.bbox.west, one.bbox.north, MODIS_500M
    sin = GridSpec(one.crs, r, BBox(w, n - 4 * r, w + 4 * r, n))
    vals = np.arange(16, dtype="float32").reshape(4, 4)
    ds = xr.Dataset({"v": (("y", "x"), vals)}, coords={"y": sin.y, "x": sin.x}).rio.write_crs(sin.crs)
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(sin.crs, "EPSG:4326", always_xy=True).transform(sin.x[2], sin.y[1])
    out = sample_points(ds, pd.DataFrame({"site_id": ["s"], "lat": [lat], "lon": [lon]}))
    assert out["v"].iloc[0] == vals[1, 2]


def test_join_sites_by_8day_period(cube):
    long = pd.DataFrame({
        "site_id": ["s1"] * 4 + ["zz"],
        "lat": 3.5, "lon": 0.5, "igbp": "ENF",
        "time": pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-12", "2020-01-20", "2020-01-02"]),
        "variable": ["Rh", "Rh", "Rh", "Ts", "Rh"], "value": [1.0, 2.0, 3.0, 4.0, 9.0], "units": "x", "n": 1,
    })
    samples = sample_points(cube, PTS)
    out = join_sites(samples, long, on="8day")
    s1 = out[out.site_id == "s1"]
    assert len(s1) == 4
    assert s1["period"].tolist() == list(modis_8day_start(s1["time"]))
    np.testing.assert_array_equal(s1["a"].to_numpy(), [A[0, 0, 0], A[0, 0, 0], A[1, 0, 0], A[2, 0, 0]])
    assert s1["Rh"].tolist()[:3] == [1.0, 2.0, 3.0] and s1["Ts"].iloc[3] == 4.0
    assert np.isnan(out[out.site_id == "zz"]["a"]).all()  # a site without samples keeps NaN predictors
    assert {"n_Rh", "igbp", "lat", "lon"} <= set(out.columns)


def test_join_sites_by_day_and_static():
    ds = xr.Dataset({"e": (("y", "x"), A[0])}, coords={"y": G.y, "x": G.x}).rio.write_crs("EPSG:4326")
    long = pd.DataFrame({"site_id": ["s2", "s2"], "time": pd.to_datetime(["2020-03-01", "2020-03-02"]),
                         "variable": "Rs", "value": [1.0, 2.0]})
    out = join_sites(sample_points(ds, PTS), long, on="day")
    assert out["e"].tolist() == [19.0, 19.0]
    with pytest.raises(DataError, match="no site_id in common"):
        join_sites(sample_points(ds, PTS), long.assign(site_id="other"))
    with pytest.raises(DataError, match="site table lacks columns"):
        join_sites(sample_points(ds, PTS), long.drop(columns="value"))


def test_sample_nearest_valid_falls_back_to_the_neighbourhood_mean():
    from globalflux.extract import sample_nearest_valid

    v = np.arange(25, dtype="float64").reshape(5, 5)
    v[2, 2] = np.nan
    grid = xr.DataArray(v, dims=("y", "x"), coords={"y": np.arange(5.0), "x": np.arange(5.0)})
    out = sample_nearest_valid(grid, np.array([1.1, 2.0, np.nan]), np.array([3.2, 2.0, 1.0]),
                               radius=1)
    assert out[0] == v[1, 3]
    assert out[1] == np.nanmean(v[1:4, 1:4])  # the coast cell: mean of its finite neighbours
    assert np.isnan(out[2])
