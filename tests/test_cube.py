"""cube.py: resampling, indices, time handling, annual stats, zone factors, chunking, laziness.

Expected values are computed independently with numpy/pandas in the tests.
"""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from globalflux.cube import (
    annual_stats,
    check_time_axes,
    choose_chunks,
    composite_8day,
    daily_interpolate,
    evi,
    finalize_cube,
    lswi,
    ndvi,
    regrid,
    sin_doy,
    static_cube,
    zone_factors,
)
from globalflux.errors import DataError, GridError
from globalflux.grid import MODIS_500M, BBox, GridSpec, modis_8day_start
from globalflux.io.products import PRODUCTS
from globalflux.io.rasters import decode, mask_qc


def _no_compute(dsk, keys, **kwargs):
    raise AssertionError("a Dask graph was computed")


def _da(values, grid: GridSpec, name="v", time=None, chunks=None):
    dims = ("y", "x") if time is None else ("time", "y", "x")
    coords = {"y": grid.y, "x": grid.x}
    if time is not None:
        coords["time"] = pd.DatetimeIndex(time)
    da = xr.DataArray(values, dims=dims, coords=coords, name=name).rio.write_crs(grid.crs)
    return da.chunk(chunks or {d: -1 for d in dims})


# ------------------------------------------------------------------------------------- regrid


def test_regrid_block_average_matches_numpy_and_skips_nan():
    rng = np.random.default_rng(1)
    src = GridSpec("EPSG:4326", 0.1, BBox(0, 0, 1.2, 0.6))  # 6 x 12
    a = rng.normal(size=(6, 12)).astype("float32")
    a[0, 0] = np.nan
    a[3:6, 9:12] = np.nan  # a whole coarse cell
    out = regrid(_da(a, src, chunks={"y": 3, "x": 6}), GridSpec("EPSG:4326", 0.3, BBox(0, 0, 1.2, 0.6)))
    blocks = a.reshape(2, 3, 4, 3)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmean(blocks.astype("float64"), axis=(1, 3))
    np.testing.assert_allclose(out.values, expected, rtol=1e-6)
    assert np.isnan(out.values[1, 3])
    assert out.attrs["resampling"] == "average"
    assert out.rio.crs.to_epsg() == 4326
    np.testing.assert_array_equal(out.x.values, GridSpec("EPSG:4326", 0.3, BBox(0, 0, 1.2, 0.6)).x)


def test_regrid_bool_average_is_fraction_and_subsets():
    src = GridSpec("EPSG:4326", 0.5, BBox(0, 0, 4, 2))
    m = np.zeros((4, 8), bool)
    m[0, :3] = True
    m[1, 0] = True
    target = GridSpec("EPSG:4326", 1.0, BBox(0, 1, 2, 2))  # the north-west 1 x 2 cells
    out = regrid(_da(m, src), target)
    np.testing.assert_allclose(out.values, [[0.75, 0.25]])


def test_regrid_mode_matches_independent_majority():
    rng = np.random.default_rng(2)
    src = GridSpec("EPSG:4326", 0.25, BBox(0, 0, 2, 1))  # 4 x 8
    a = rng.integers(0, 4, size=(4, 8)).astype("uint8")
    a[:2, :2] = 255  # one cell all nodata
    a[2:, 6:] = [[1, 255], [255, 255]]  # majority ignores nodata
    out = regrid(_da(a, src), GridSpec("EPSG:4326", 0.5, BBox(0, 0, 2, 1)), method="mode", nodata=255)
    exp = np.zeros((2, 4), "uint8")
    for i in range(2):
        for j in range(4):
            cell = a[2 * i:2 * i + 2, 2 * j:2 * j + 2].ravel()
            cell = cell[cell != 255]
            if cell.size == 0:
                exp[i, j] = 255
            else:
                vals, counts = np.unique(cell, return_counts=True)
                exp[i, j] = vals[np.argmax(counts)]  # ties -> lowest class
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out.values, exp)
    assert exp[0, 0] == 255 and exp[1, 3] == 1


def test_regrid_finer_target_takes_the_containing_pixel():
    src = GridSpec("EPSG:4326", 0.5, BBox(0, 0, 1, 1))
    a = np.array([[1.0, 2.0], [3.0, 4.0]], dtype="float32")
    out = regrid(_da(a, src), GridSpec("EPSG:4326", 0.25, BBox(0, 0, 1, 1)))
    np.testing.assert_array_equal(out.values, np.kron(a, np.ones((2, 2))))


def test_regrid_non_integer_ratio_uses_warp():
    """1/3-degree pixels onto 0.5 degrees: the exact area-weighted mean of the source pixels."""
    src = GridSpec("EPSG:4326", 1 / 3, BBox(0, 0, 4, 2))
    xx = np.broadcast_to(src.x, (6, 12)).astype("float32")
    dst = GridSpec("EPSG:4326", 0.5, BBox(0.5, 0.5, 3.5, 1.5))
    out = regrid(_da(xx, src), dst)
    edges = np.arange(13) / 3
    exp = []
    for a in dst.x - 0.25:
        b = a + 0.5
        w = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0, None)
        exp.append((w * src.x).sum() / w.sum())
    np.testing.assert_allclose(out.values, np.broadcast_to(exp, (2, 6)), rtol=1e-5)
    assert out.attrs["resampling"] == "average"


def test_regrid_reprojects_sinusoidal_to_latlon():
    sin = GridSpec.modis_sinusoidal(BBox(0.0, 4_400_000.0, 46_331.27, 4_446_331.27))
    ny, nx = sin.shape
    const = np.full((ny, nx), 7.0, dtype="float32")
    da = _da(const, sin)
    target = GridSpec("EPSG:4326", 0.05, BBox(0.1, 39.6, 0.4, 39.9))
    out = regrid(da, target, method="average")
    assert out.shape == target.shape
    np.testing.assert_allclose(out.values, 7.0)


def test_regrid_bbox_outside_the_source_names_it():
    src = GridSpec("EPSG:4326", 0.5, BBox(0, 0, 1, 1))
    with pytest.raises(GridError) as e:
        regrid(_da(np.ones((2, 2), "float32"), src, name="lst.tif"),
               GridSpec("EPSG:4326", 0.5, BBox(20, 20, 21, 21)))
    assert str(e.value).startswith("lst.tif: target bbox (20, 20, 21, 21) is outside the source extent")
    assert "Choose a cube bbox inside the source" in str(e.value)


@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 4), ny=st.integers(2, 4), nx=st.integers(2, 4), seed=st.integers(0, 999))
def test_property_block_average_equals_numpy(k, ny, nx, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(ny * k, nx * k)).astype("float32")
    src = GridSpec("EPSG:4326", 0.5, BBox(0, 0, 0.5 * nx * k, 0.5 * ny * k))
    dst = GridSpec("EPSG:4326", 0.5 * k, src.bbox)
    out = regrid(_da(a, src, chunks={"y": k, "x": k}), dst)
    np.testing.assert_allclose(out.values, a.reshape(ny, k, nx, k).mean(axis=(1, 3)), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------- indices


def test_indices_from_decoded_reflectance_match_numpy_and_drop_fill():
    rng = np.random.default_rng(3)
    g = GridSpec("EPSG:4326", 0.5, BBox(0, 0, 3, 2))
    raw = {b: rng.integers(200, 6000, size=(4, 6)).astype("int16") for b in ("b01", "b02", "b03", "b06")}
    raw["b01"][0, 0] = -28672  # fill
    raw["b02"][1, 1] = 16500  # outside the valid range
    dec = {}
    for b, r in raw.items():
        p = PRODUCTS[f"sr_{b}"]
        dec[b] = decode(_da(r, g, name=b), scale=p.scale, offset=p.offset, fill=p.fill, valid_range=p.valid_range)
    refl = {b: np.where((r == -28672) | (r < -100) | (r > 16000), np.nan, r * 1e-4) for b, r in raw.items()}
    red, nir, blue, swir = refl["b01"], refl["b02"], refl["b03"], refl["b06"]
    np.testing.assert_allclose(ndvi(dec["b02"], dec["b01"]).values, (nir - red) / (nir + red), rtol=1e-5)
    np.testing.assert_allclose(evi(dec["b02"], dec["b01"], dec["b03"]).values,
                               2.5 * (nir - red) / (nir + 6 * red - 7.5 * blue + 1), rtol=1e-5)
    np.testing.assert_allclose(lswi(dec["b02"], dec["b06"]).values, (nir - swir) / (nir + swir), rtol=1e-5)
    v = ndvi(dec["b02"], dec["b01"]).values
    assert np.isnan(v[0, 0]) and np.isnan(v[1, 1])
    assert np.isfinite(np.delete(v.ravel(), [0, 7])).all()


def test_ndvi_zero_denominator_is_nan_not_inf():
    g = GridSpec("EPSG:4326", 1.0, BBox(0, 0, 2, 1))
    z = _da(np.zeros((1, 2), "float32"), g)
    assert np.isnan(ndvi(z, z).values).all()


# ------------------------------------------------------------------------------------- time


def _series(n_days=40, start="2020-12-20"):
    g = GridSpec("EPSG:4326", 1.0, BBox(0, 0, 2, 1))
    t = pd.date_range(start, periods=n_days, freq="D")
    rng = np.random.default_rng(4)
    v = rng.normal(size=(n_days, 1, 2)).astype("float32")
    v[3, 0, 0] = np.nan
    return g, t, v


def test_composite_8day_matches_pandas_groupby():
    g, t, v = _series()
    out = composite_8day(_da(v, g, time=t))
    keys = modis_8day_start(t)
    df = pd.DataFrame({"k": keys, "a": v[:, 0, 0], "b": v[:, 0, 1]}).groupby("k").mean()
    assert pd.DatetimeIndex(out.time.values).equals(pd.DatetimeIndex(df.index))
    np.testing.assert_allclose(out.values[:, 0, 0], df["a"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(out.values[:, 0, 1], df["b"].to_numpy(), rtol=1e-6)
    # 2020-12-26 period is 6 days (leap year), 2021-01-01 starts a new year's periods
    assert int(out.period_days.sel(time="2020-12-26")) == 6
    assert pd.Timestamp("2021-01-01") in pd.DatetimeIndex(out.time.values)


def test_daily_interpolate_is_linear_between_period_centres():
    g = GridSpec("EPSG:4326", 1.0, BBox(0, 0, 1, 1))
    starts = pd.DatetimeIndex(["2021-01-01", "2021-01-09", "2021-01-17"])
    vals = np.array([0.0, 8.0, 4.0], "float32").reshape(3, 1, 1)
    da = _da(vals, g, time=starts).assign_coords(period_days=("time", [8, 8, 8]))
    out = daily_interpolate(da)
    centres = (starts + pd.Timedelta(days=4)).to_numpy().astype("datetime64[s]").astype(float)
    days = pd.DatetimeIndex(out.time.values).to_numpy().astype("datetime64[s]").astype(float)
    exp = np.interp(days, centres, vals[:, 0, 0], left=np.nan, right=np.nan)
    np.testing.assert_allclose(out.values[:, 0, 0], exp, equal_nan=True)
    assert float(out.sel(time="2021-01-09")[0, 0]) == pytest.approx(4.0)  # halfway between 0 and 8
    assert np.isnan(float(out.sel(time="2021-01-01")[0, 0]))  # before the first centre


def test_sin_doy():
    t = pd.DatetimeIndex(["2021-01-01", "2021-07-02", "2020-12-31"])
    s = sin_doy(t)
    doy = np.array([1, 183, 366])
    np.testing.assert_allclose(s.values, np.sin(2 * np.pi * (doy - 1) / 365.25), atol=1e-6)
    assert s.values[0] == 0.0  # 1 January is angle 0 in every year
    # the one day-of-year encoding: the LSTM's doy_sin/doy_cos are its sine and cosine
    from globalflux.models.lstm import add_doy_features

    ds = add_doy_features(xr.Dataset(coords={"time": pd.date_range("2019-12-25", "2021-01-05")}))
    np.testing.assert_array_equal(ds["doy_sin"].values, sin_doy(ds["time"].values).values)
    np.testing.assert_allclose(ds["doy_sin"] ** 2 + ds["doy_cos"] ** 2, 1.0, rtol=1e-6)


def test_annual_stats_never_see_fill_or_qc_masked_values():
    """LST DNs with fill (0) and bad QC: the annual max/min/mean equal numpy on the good pixels."""
    rng = np.random.default_rng(5)
    g = GridSpec("EPSG:4326", 1.0, BBox(0, 0, 3, 2))
    t = pd.date_range("2019-01-01", periods=92, freq="8D")  # 2019-2020
    t = modis_8day_start(t)
    dn = rng.integers(13000, 16000, size=(len(t), 2, 3)).astype("uint16")
    dn[::5, 0, 0] = 0
    dn[1::7, 1, 2] = 65000  # within valid range, but QC says cloud
    qc = np.zeros_like(dn, dtype="uint8")
    qc[1::7, 1, 2] = 0b11
    qc[2::9, 0, 1] = 0b01
    p = PRODUCTS["lst_day"]
    lst = decode(_da(dn, g, time=t), scale=p.scale, offset=p.offset, fill=p.fill, valid_range=p.valid_range)
    lst = mask_qc(lst, _da(qc, g, time=t), p.qc).rename("lst")
    st_ = annual_stats(lst)
    good = (dn != 0) & ((qc & 0b11) == 0)
    phys = np.where(good, dn.astype("float64") * 0.02 - 273.15, np.nan)
    years = pd.DatetimeIndex(t).year
    for y in (2019, 2020):
        sel = phys[years == y]
        np.testing.assert_allclose(st_.lst_max.sel(year=y).values, np.nanmax(sel, axis=0), rtol=1e-5)
        np.testing.assert_allclose(st_.lst_min.sel(year=y).values, np.nanmin(sel, axis=0), rtol=1e-5)
        np.testing.assert_allclose(st_.lst_mean.sel(year=y).values, np.nanmean(sel, axis=0), rtol=1e-5)
    assert float(st_.lst_min.min()) >= 13000 * 0.02 - 273.15 - 1e-3  # a leaked fill would be -273.15 degC
    assert float(st_.lst_max.max()) <= 16000 * 0.02 - 273.15 + 1e-3  # leaked cloud DN 65000: 1026.85 degC
    only = annual_stats(lst, years=[2020])
    assert only.year.values.tolist() == [2020]


def test_check_time_axes_names_the_mismatch():
    g = GridSpec("EPSG:4326", 1.0, BBox(0, 0, 1, 1))
    a = _da(np.zeros((3, 1, 1)), g, time=pd.date_range("2020-01-01", periods=3, freq="8D"))
    b = _da(np.zeros((2, 1, 1)), g, time=pd.date_range("2020-01-01", periods=2, freq="8D"))
    assert len(check_time_axes({"a": a, "a2": a})) == 3
    with pytest.raises(DataError) as e:
        check_time_axes({"lst": a, "gpp": b})
    msg = str(e.value)
    assert msg.startswith("gpp: time axis (2 steps") and "differs from 'lst' (3 steps" in msg
    assert "2020-01-17" in msg


def test_zone_factors_match_numpy():
    rng = np.random.default_rng(6)
    g = GridSpec("EPSG:4326", 1.0, BBox(0, 0, 2, 1))
    t = modis_8day_start(pd.date_range("2019-01-01", "2020-12-31", freq="8D"))
    n = len(t)
    tem = rng.normal(5, 10, size=(n, 1, 2)).astype("float32")
    pre = rng.gamma(2, 5, size=(n, 1, 2)).astype("float32")
    nd = rng.uniform(0, 1, size=(n, 1, 2)).astype("float32")
    lw = rng.uniform(-0.2, 0.5, size=(n, 1, 2)).astype("float32")
    dem = _da(np.array([[100.0, 2000.0]], "float32"), g)
    soc = _da(np.array([[50.0, 80.0]], "float32"), g)
    z = zone_factors(_da(tem, g, time=t), _da(pre, g, time=t), _da(nd, g, time=t), _da(lw, g, time=t), dem, soc)
    years = pd.DatetimeIndex(t).year
    np.testing.assert_allclose(z.TEM.values, tem.mean(0), rtol=1e-5)
    np.testing.assert_allclose(z.PRE.values, np.mean([pre[years == y].sum(0) for y in (2019, 2020)], axis=0), rtol=1e-5)
    np.testing.assert_allclose(z.NDVI.values, nd.mean(0), rtol=1e-5)
    np.testing.assert_allclose(z.LSWI_GS.values, np.nanmean(np.where(tem > 0, lw, np.nan), axis=0), rtol=1e-5)
    np.testing.assert_array_equal(z.DEM.values, dem.values)
    assert z.TEM.attrs["units"] == "degC" and z.PRE.attrs["units"] == "mm yr-1"


# --------------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("sizes", [
    {"time": 460, "y": 3600, "x": 7200},
    {"time": 46, "y": 21600, "x": 43200},
    {"time": 8000, "y": 360, "x": 720},
    {"y": 3600, "x": 7200},
])
def test_choose_chunks_keeps_time_whole_and_10_to_100_mb(sizes):
    ch = choose_chunks(sizes, 4)
    if "time" in sizes:
        assert ch["time"] == sizes["time"]
    mb = np.prod([ch[d] for d in sizes]) * 4 / 2**20
    assert 10 <= mb <= 100


def test_choose_chunks_small_array_is_one_chunk():
    assert choose_chunks({"time": 10, "y": 20, "x": 30}, 4) == {"time": 10, "y": 20, "x": 30}


def test_finalize_cube_sets_crs_chunks_and_attrs():
    g = GridSpec("EPSG:4326", 0.5, BBox(0, 0, 2, 1))
    ds = xr.Dataset({"a": _da(np.zeros((2, 4), "float32"), g)})
    out = finalize_cube(ds, g, attrs={"title": "t"}, chunks={"y": 1, "x": 2})
    assert out.rio.crs.to_epsg() == 4326
    assert out.a.chunks == ((1, 1), (2, 2))
    assert out.attrs["title"] == "t" and out.attrs["chunking"] == "y=1,x=2"
    assert out.a.attrs["grid_mapping"] == "spatial_ref"


# ---------------------------------------------------------------------------------- laziness


def _small_static_sources():
    fine = GridSpec("EPSG:4326", 0.25, BBox(0, 0, 2, 1))
    coarse = GridSpec("EPSG:4326", 1.0, BBox(0, 0, 2, 1))
    rng = np.random.default_rng(7)
    return {
        "land_mask": _da(rng.random((4, 8)) > 0.3, fine, "land_mask"),
        "land_cover": _da(rng.integers(0, 17, (4, 8)).astype("uint8"), fine, "land_cover"),
        "koppen": _da(rng.integers(0, 6, (4, 8)).astype("uint8"), fine, "koppen"),
        "ndvi_max": _da(rng.random((4, 8)).astype("float32"), fine, "ndvi_max"),
        "elevation": _da(rng.normal(500, 100, (1, 2)).astype("float32"), coarse, "elevation"),
        "mat": _da(rng.normal(10, 5, (1, 2)).astype("float32"), coarse, "mat"),
    }


def test_raising_scheduler_catches_computes():
    g = GridSpec("EPSG:4326", 1.0, BBox(0, 0, 2, 1))
    with dask.config.set(scheduler=_no_compute), pytest.raises(AssertionError, match="computed"):
        _da(np.zeros((1, 2)), g).sum().compute()


def test_building_cubes_computes_nothing():
    sources = _small_static_sources()
    g = GridSpec("EPSG:4326", 0.5, BBox(0, 0, 2, 1))
    t = modis_8day_start(pd.date_range("2020-01-01", periods=10, freq="8D"))
    fine = GridSpec("EPSG:4326", 0.25, BBox(0, 0, 2, 1))
    refl = _da(np.full((10, 4, 8), 0.3, "float32"), fine, time=t)
    with dask.config.set(scheduler=_no_compute):
        ds = static_cube(sources, g)
        ds = finalize_cube(ds, g)
        idx = ndvi(refl, refl * 0.5)
        comp = composite_8day(regrid(idx, g))
        stats = annual_stats(comp.rename("ndvi"))
        daily = daily_interpolate(comp)
    assert all(isinstance(v.data, dask.array.Array) for v in ds.data_vars.values())
    assert isinstance(stats.ndvi_max.data, dask.array.Array) and isinstance(daily.data, dask.array.Array)
    # and the values are right once computed
    assert ds.land_mask.dtype == bool and ds.land_cover.dtype == np.uint8
    np.testing.assert_allclose(daily.dropna("time").values, 1 / 3, rtol=1e-5)
    np.testing.assert_allclose(ds.mat.values, np.kron(sources["mat"].values, np.ones((2, 2))), rtol=1e-6)


def test_static_cube_attrs_and_land_fraction():
    sources = _small_static_sources()
    g = GridSpec("EPSG:4326", 0.5, BBox(0, 0, 2, 1))
    ds = static_cube(sources, g)
    lm = sources["land_mask"].values
    np.testing.assert_allclose(ds.land_fraction.values, lm.reshape(2, 2, 4, 2).mean(axis=(1, 3)), rtol=1e-6)
    np.testing.assert_array_equal(ds.land_mask.values, ds.land_fraction.values >= 0.5)
    for v in ds.data_vars:
        assert "units" in ds[v].attrs and "long_name" in ds[v].attrs
    assert ds.koppen.attrs["resampling"] == "mode" and ds.ndvi_max.attrs["resampling"] == "average"
    assert ds.land_cover.attrs["flag_fill"] == 255
    assert ds.rio.crs.to_epsg() == 4326
    assert ds.y.values[0] > ds.y.values[-1]
    with pytest.raises(DataError, match="no static sources"):
        static_cube({}, g)


def test_modis_sinusoidal_grid_supported_by_regrid():
    one = GridSpec.modis_sinusoidal(BBox(1.0, 4_400_001.0, 2.0, 4_400_002.0))  # one lattice pixel
    w, n, r = one.bbox.west, one.bbox.north, MODIS_500M
    sin = GridSpec(one.crs, r, BBox(w, n - 4 * r, w + 8 * r, n))
    ny, nx = sin.shape
    assert (ny, nx) == (4, 8)
    a = np.arange(ny * nx, dtype="float32").reshape(ny, nx)
    dst = GridSpec(sin.crs, 2 * MODIS_500M, sin.bbox)
    out = regrid(_da(a, sin), dst)
    np.testing.assert_allclose(out.values, a.reshape(ny // 2, 2, nx // 2, 2).mean(axis=(1, 3)))


def test_regrid_bool_average_through_warp_is_a_fraction():
    src = GridSpec("EPSG:4326", 0.25, BBox(0, 0, 3, 3))
    m = np.zeros((12, 12), bool)
    m[:, :6] = True  # west half land
    out = regrid(_da(m, src), GridSpec("EPSG:4326", 0.6, BBox(0.0, 0.0, 3.0, 3.0)))
    assert out.dtype.kind == "f"
    # the 0.6-degree column 1.2-1.8 straddles the coast at 1.5: half land
    np.testing.assert_allclose(out.values[:, 2], 0.5, atol=1e-6)
    np.testing.assert_allclose(out.values[:, 0], 1.0)
    np.testing.assert_allclose(out.values[:, 4], 0.0)


def test_finalize_cube_aligns_auto_chunks_with_source_chunks():
    """Whole source chunks are merged (not cut) so the write holds few source chunks at once."""
    g = GridSpec("EPSG:4326", 0.01, BBox(0, 0, 30.72, 30.72))
    t = modis_8day_start(pd.date_range("2020-01-01", periods=46, freq="8D"))
    data = dask.array.zeros((46, 3072, 3072), dtype="float32", chunks=(46, 256, 256))
    ds = xr.Dataset({"v": (("time", "y", "x"), data)}, coords={"time": t, "y": g.y, "x": g.x})
    out = finalize_cube(ds, g)
    cy, cx = out.v.chunks[1][0], out.v.chunks[2][0]
    assert cy % 256 == 0 and cx % 256 == 0
    assert out.v.chunks[0] == (46,)
    assert 10 <= 46 * cy * cx * 4 / 2**20 <= 100


def test_fill_short_gaps_fills_only_interior_gaps_up_to_the_limit():
    from globalflux.cube import fill_short_gaps, fill_short_gaps_dataset

    x = np.array([np.nan, 1, np.nan, 3, np.nan, np.nan, np.nan, 7.0, np.nan])
    np.testing.assert_array_equal(fill_short_gaps(x, 1),
                                  [np.nan, 1, 2, 3, np.nan, np.nan, np.nan, 7, np.nan])
    np.testing.assert_array_equal(fill_short_gaps(x, 3), [np.nan, 1, 2, 3, 4, 5, 6, 7, np.nan])
    ds = xr.Dataset({"Ts": (("time", "site"), np.stack([x, x[::-1]], axis=1)),
                     "keep": (("time",), x)})
    out = fill_short_gaps_dataset(ds, ["Ts"], 1)
    assert out["Ts"].dims == ("time", "site")
    np.testing.assert_array_equal(out["Ts"].values[:, 0], fill_short_gaps(x, 1))
    np.testing.assert_array_equal(out["Ts"].values[:, 1], fill_short_gaps(x[::-1], 1))
    np.testing.assert_array_equal(out["keep"].values, x)  # other variables untouched
