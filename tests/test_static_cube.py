"""The real static cube from ../shared/data/grids (readers, the 0.5° build through the CLI, and
the 0.05° build, slow-marked). Spot values are checked against independent readings of the
source files and against geography everyone knows.
"""

from __future__ import annotations

import time

import dask
import numpy as np
import pandas as pd
import pytest
import rasterio
import rioxarray  # noqa: F401
from rasterio.windows import Window

from globalflux.cli import main
from globalflux.errors import InputFileError, RecipeError
from globalflux.grid import GridSpec, grid_of
from globalflux.io.static_grids import STATIC_FILES, open_static_sources, read_land_mask
from globalflux.io.store import open_dataset

pytestmark = pytest.mark.realdata


def _no_compute(dsk, keys, **kwargs):
    raise AssertionError("a Dask graph was computed")


@pytest.fixture(scope="module")
def grids(shared_data):
    return shared_data / "grids"


def test_open_static_sources_lazy_native_grids(grids):
    with dask.config.set(scheduler=_no_compute):
        src = open_static_sources(grids)
    assert set(src) == {"land_mask", "koppen", "land_cover", "ndvi_max", "ndvi_min", "elevation", "mat", "map",
                        "soc", "land_fraction_tbase"}
    res = {"land_mask": 1 / 120, "koppen": 1 / 120, "land_cover": 0.05, "ndvi_max": 0.05, "elevation": 1 / 3,
           "mat": 0.5, "land_fraction_tbase": 0.5}
    for name, da in src.items():
        assert isinstance(da.data, dask.array.Array), name
        assert da.dims == ("y", "x") and da.y.values[0] > da.y.values[-1], name
        assert da.rio.crs.to_epsg() == 4326, name
        assert "units" in da.attrs and "long_name" in da.attrs, name
        g = grid_of(da, where=name)
        assert g.bbox.as_tuple() == (-180.0, -90.0, 180.0, 90.0), name
        if name in res:
            assert g.resolution == pytest.approx(res[name], rel=1e-9), name
    # the 933 MB land mask is never one block; categorical layers stay uint8
    assert max(src["land_mask"].chunks[0]) <= 5400
    assert src["land_mask"].dtype == bool and src["koppen"].dtype == np.uint8 and src["land_cover"].dtype == np.uint8
    assert src["mat"].attrs["units"] == "degC" and src["soc"].attrs["units"] == "t ha-1"


def test_land_mask_rows_match_the_npz(grids):
    lm = read_land_mask(grids / STATIC_FILES["land_mask"])
    band = lm.isel(y=slice(4800, 4810)).values  # rows just south of 50 N, in the first streamed band
    with np.load(grids / STATIC_FILES["land_mask"]) as z:
        lat = z["lat"]
    assert lm.y.values[4800] == pytest.approx(lat[4800] - 1 / 240)
    # Germany (10 E) is land and the open Atlantic (30 W) is sea at 50 N
    col_land = int((10.0 + 180) * 120)
    col_sea = int((-30.0 + 180) * 120)
    assert band[:, col_land].all() and not band[:, col_sea].any()


def test_etopo_wrap_and_soilresp_transpose_match_raw_files(grids):
    import xarray as xr

    src = open_static_sources(grids, names={"elevation": True, "mat": True})
    raw = xr.open_dataset(grids / STATIC_FILES["elevation"], engine="scipy")["ROSE"]
    # raw lon 100.1667 E, lat 30.1667 N -> same value after the wrap to -180..180
    v_raw = float(raw.sel(ETOPO20X1_1081=100.1667, ETOPO20Y=30.1667, method="nearest"))
    assert float(src["elevation"].sel(x=100.1667, y=30.1667, method="nearest")) == v_raw
    v_raw_w = float(raw.sel(ETOPO20X1_1081=-100.1667 + 360, ETOPO20Y=40.1667, method="nearest"))
    assert float(src["elevation"].sel(x=-100.1667, y=40.1667, method="nearest")) == v_raw_w
    ds = xr.open_dataset(grids / STATIC_FILES["soilresp"], engine="h5netcdf")
    i_lon = int(np.argmin(np.abs(ds.longitude.values - 100.25)))
    i_lat = int(np.argmin(np.abs(ds.latitude.values - 62.25)))
    assert float(src["mat"].sel(x=100.25, y=62.25)) == pytest.approx(float(ds["MAT"].values[i_lon, i_lat]))


def test_missing_grids_folder(tmp_path):
    with pytest.raises(InputFileError, match="static grids folder not found"):
        open_static_sources(tmp_path / "nope")
    (tmp_path / "g").mkdir()
    with pytest.raises(InputFileError) as e:
        open_static_sources(tmp_path / "g")
    assert "static source 'land_mask' not found" in str(e.value) and "cube.static_root" in str(e.value)


@pytest.fixture(scope="module")
def cube05(grids, tmp_path_factory, repo_root):
    out = tmp_path_factory.mktemp("static05") / "run"
    sites = out.parent / "sites.csv"
    pd.DataFrame({"site_id": ["amazon", "sahara", "greenland"], "lat": [-5.0, 23.0, 75.0],
                  "lon": [-60.0, 10.0, -40.0]}).to_csv(sites, index=False)
    code = main(["run", str(repo_root / "recipes" / "static_cube.yaml"), "--out", str(out),
                 "--set", f"cube.static_root={grids}", "--set", f"cube.sites={sites}"])
    assert code == 0
    return out


def test_static_cube_05deg_through_the_cli(cube05, grids):
    ds = open_dataset(cube05 / "maps" / "static_cube.zarr")
    assert dict(ds.sizes) == {"y": 360, "x": 720}
    np.testing.assert_array_equal(ds.x.values, GridSpec.global_latlon(0.5).x)
    np.testing.assert_array_equal(ds.y.values, GridSpec.global_latlon(0.5).y)
    assert ds.rio.crs.to_epsg() == 4326
    want = {"land_mask": bool, "land_fraction": np.float32, "land_cover": np.uint8, "koppen": np.uint8,
            "ndvi_max": np.float32, "ndvi_min": np.float32, "elevation": np.float32, "mat": np.float32,
            "map": np.float32, "soc": np.float32}
    for v, dt in want.items():
        assert ds[v].dtype == dt, v
        assert ds[v].attrs["units"] and ds[v].attrs["long_name"], v
    assert ds.koppen.attrs["resampling"] == "mode" and ds.elevation.attrs["resampling"] == "average"
    # provenance: version, recipe, checksums of every source file
    assert ds.attrs["Conventions"] == "CF-1.8" and "static_cube_05deg" in ds.attrs["recipe"]
    assert "MCD12C1.A2019001.006.2020220162300.tif sha256:" in ds.attrs["input_checksums"]
    assert ds.attrs["synthetic"] == "false"


@pytest.mark.parametrize("lon,lat,koppen,lc,land", [
    (-60.0, -5.0, 1, 2, True),     # Amazon: tropical, evergreen broadleaf
    (10.0, 23.0, 2, 16, True),     # Sahara: arid, barren
    (-40.0, 75.0, 5, 15, True),    # Greenland: polar, snow and ice
    (100.0, 62.0, 4, 8, True),     # Siberia: cold, woody savanna (MCD12C1 2019)
    (-150.0, 0.0, 0, 0, False),    # Pacific: no class, water
])
def test_static_cube_05deg_geography(cube05, lon, lat, koppen, lc, land):
    ds = open_dataset(cube05 / "maps" / "static_cube.zarr")
    p = ds.sel(x=lon, y=lat, method="nearest").compute()
    assert int(p.koppen) == koppen and int(p.land_cover) == lc and bool(p.land_mask) == land


def test_static_cube_05deg_values_against_sources(cube05, grids):
    ds = open_dataset(cube05 / "maps" / "static_cube.zarr").compute()
    assert float(ds.elevation.sel(x=88.25, y=32.25)) > 4000  # Tibetan plateau
    assert float(ds.elevation.sel(x=-150.25, y=0.25)) < -3000  # Pacific floor
    # MAT at 0.5 deg is the source value itself (same grid)
    assert float(ds.mat.sel(x=100.25, y=62.25)) == pytest.approx(-8.358333, abs=1e-4)
    # land_cover majority of the 10x10 MCD12C1 pixels, read independently with rasterio
    with rasterio.open(grids / STATIC_FILES["land_cover"]) as src:
        row = int((90 - 48.5) / 0.05)
        col = int((10.0 + 180) / 0.05)
        block = src.read(1, window=Window(col, row, 10, 10)).ravel()
    block = block[block != 255]
    vals, counts = np.unique(block, return_counts=True)
    assert int(ds.land_cover.sel(x=10.25, y=48.25)) == vals[np.argmax(counts)]
    # NDVI max over the same cell: the mean of the valid 0.05 deg values
    with rasterio.open(grids / STATIC_FILES["ndvi_max"]) as src:
        nd = src.read(1, window=Window(col, row, 10, 10)).astype("float64")
    nd[nd == -3000] = np.nan
    assert float(ds.ndvi_max.sel(x=10.25, y=48.25)) == pytest.approx(np.nanmean(nd), rel=1e-5)
    # GLOBE-derived land fraction agrees with the independent TBASE fraction
    tb = open_static_sources(grids, names={"land_fraction_tbase": True})["land_fraction_tbase"].values
    lf = ds.land_fraction.values
    ok = np.isfinite(tb)
    assert np.corrcoef(lf[ok], tb[ok])[0, 1] > 0.95
    assert abs(lf[ok].mean() - tb[ok].mean()) < 0.03
    # nodata never leaks: the NDVI envelope is land-only and MAT is in a physical range
    assert np.nanmin(ds.ndvi_min.values) >= -1 and np.nanmax(ds.ndvi_max.values) <= 1
    assert -60 < np.nanmin(ds.mat.values) and np.nanmax(ds.mat.values) < 40


def test_static_cube_05deg_outputs_and_resume(cube05, repo_root, grids):
    summary = pd.read_csv(cube05 / "metrics" / "cube_summary.csv")
    assert set(summary.variable) >= {"land_mask", "koppen", "mat", "soc"}
    samples = pd.read_csv(cube05 / "metrics" / "site_samples.csv")
    assert samples.set_index("site_id").loc["sahara", "koppen"] == 2
    report = (cube05 / "report.md").read_text()
    assert "Static predictor cube" in report and "figures/koppen.png" in report
    store = cube05 / "maps" / "static_cube.zarr"
    before = (store / "zarr.json").stat().st_mtime_ns
    t0 = time.perf_counter()
    code = main(["run", str(repo_root / "recipes" / "static_cube.yaml"), "--out", str(cube05), "--resume",
                 "--set", f"cube.static_root={grids}", "--set", f"cube.sites={cube05.parent / 'sites.csv'}"])
    assert code == 0 and (store / "zarr.json").stat().st_mtime_ns == before
    assert time.perf_counter() - t0 < 60  # not rebuilt


def test_static_cube_rejects_other_sources(tmp_path, repo_root, capsys):
    code = main(["run", str(repo_root / "recipes" / "static_cube.yaml"), "--out", str(tmp_path / "o"),
                 "--set", "cube.source=stac"])
    assert code == 2
    assert "cube.source: cube.source is 'stac'" in "".join(capsys.readouterr())
    with pytest.raises(RecipeError):
        from globalflux.pipeline import validate

        validate(repo_root / "recipes" / "static_cube.yaml", ["cube.grid=5"])


def test_static_cube_recipes_validate(repo_root):
    for name in ("static_cube.yaml", "static_cube_005.yaml"):
        assert main(["validate", str(repo_root / "recipes" / name)]) == 0


@pytest.mark.slow
def test_static_cube_005deg(grids, tmp_path):
    from globalflux.cube import choose_chunks, finalize_cube, static_cube
    from globalflux.io.store import write_cube

    g = GridSpec.global_latlon(0.05)
    ds = static_cube(open_static_sources(grids), g)
    ds = finalize_cube(ds, g)
    ch = choose_chunks(dict(ds.sizes), 4)
    assert 10 <= ch["y"] * ch["x"] * 4 / 2**20 <= 100
    with dask.config.set(scheduler="threads", num_workers=2):
        write_cube(ds, tmp_path / "s005.zarr")
    out = open_dataset(tmp_path / "s005.zarr")
    assert dict(out.sizes) == {"y": 3600, "x": 7200}
    # land cover at 0.05 deg is MCD12C1 itself
    with rasterio.open(grids / STATIC_FILES["land_cover"]) as src:
        lc = src.read(1, window=Window(3800, 800, 50, 40))
    np.testing.assert_array_equal(out.land_cover.isel(y=slice(800, 840), x=slice(3800, 3850)).values, lc)
    p = out.sel(x=-60.0, y=-5.0, method="nearest").compute()
    assert int(p.koppen) == 1 and bool(p.land_mask)
