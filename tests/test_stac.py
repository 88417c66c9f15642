"""io/stac.py + the stac_cube workflow: local static catalogs, ItemCollection files and a STAC API
served on 127.0.0.1 (rustac, in-memory backend), all loaded through the users' code path
(pystac / pystac-client -> odc-stac.load onto the GridSpec -> product decoding and QC).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import yaml
from _cube_helpers import (
    GRID,
    item_collection_file,
    modis_lst_series,
    stac_item,
    static_catalog,
    write_tif,
)

from globalflux.cli import main
from globalflux.errors import GridError, InputFileError, RecipeError
from globalflux.grid import MODIS_500M, BBox, GridSpec
from globalflux.io.products import PRODUCTS, product
from globalflux.io.stac import load_products, search_items
from globalflux.io.store import open_dataset

DATES = pd.DatetimeIndex(["2019-01-01", "2019-01-09", "2019-01-17"])
COLL = "modis-11A2-061"


def _no_compute(dsk, keys, **kwargs):
    raise AssertionError("a Dask graph was computed")


def _expected(dn, qc):
    exp = dn.astype("float32") * np.float32(0.02) + np.float32(-273.15)
    exp[(dn == 0) | ((qc & 0b11) != 0)] = np.nan
    return exp


@pytest.fixture(scope="module")
def lst_items(tmp_path_factory):
    """Three MOD11A2-like dates as COGs (LST_Day_1km + QC_Day) and their STAC items."""
    root = tmp_path_factory.mktemp("stac")
    rng = np.random.default_rng(0)
    dn, qc = modis_lst_series(rng, DATES)
    items = []
    for i, d in enumerate(DATES):
        a = write_tif(root / f"lst_{i}.tif", dn[i], nodata=0, cog=True)
        q = write_tif(root / f"qc_{i}.tif", qc[i], cog=True)
        items.append(stac_item(f"MOD11A2.A{d.year}{d.day_of_year:03d}", COLL, d,
                               {"LST_Day_1km": a, "QC_Day": q}, nodata=0))
    catalog = static_catalog(root / "catalog", items, COLL)
    ic = item_collection_file(root / "items.json", items)
    return {"root": root, "dn": dn, "qc": qc, "items": items, "catalog": catalog, "ic": ic}


def _check_loaded(ds, dn, qc, n):
    assert ds.rio.crs.to_epsg() == 4326
    np.testing.assert_array_equal(ds.x.values, GRID.x)
    np.testing.assert_array_equal(ds.y.values, GRID.y)
    assert pd.DatetimeIndex(ds.time.values).equals(DATES[:n])
    np.testing.assert_array_equal(ds.lst_day.values, _expected(dn[:n], qc[:n]))


def test_static_catalog_search_and_load_exact(lst_items):
    items = search_items(lst_items["catalog"], collections=[COLL], bbox=GRID.bbox,
                         datetime="2019-01-01/2019-01-10")
    assert [it.id for it in items] == ["MOD11A2.A2019001", "MOD11A2.A2019009"]
    with dask.config.set(scheduler=_no_compute):
        ds = load_products(items, ["lst_day"], GRID)
    assert isinstance(ds.lst_day.data, dask.array.Array)
    _check_loaded(ds, lst_items["dn"], lst_items["qc"], 2)
    assert "MOD11A2.A2019001" in ds.attrs["stac_items"]


def test_item_collection_file(lst_items):
    items = search_items(lst_items["ic"], collections=[COLL], bbox=(10.5, 40.5, 11.0, 41.0))
    ds = load_products(items, [product("lst_day")], GRID)
    _check_loaded(ds, lst_items["dn"], lst_items["qc"], 3)


def test_load_onto_a_coarser_grid_then_average(lst_items):
    from globalflux.cube import regrid

    items = search_items(lst_items["ic"], collections=[COLL])
    ds = load_products(items, ["lst_day"], GRID)
    coarse = GridSpec("EPSG:4326", 0.5, GRID.bbox)
    out = regrid(ds.lst_day, coarse)
    exp = _expected(lst_items["dn"], lst_items["qc"]).astype("float64")
    blk = np.nanmean(exp.reshape(3, 3, 2, 4, 2), axis=(2, 4))  # every 2x2 block has a good pixel
    np.testing.assert_allclose(out.values, blk, rtol=1e-6)


def test_item_without_the_asset_is_named(lst_items):
    items = search_items(lst_items["ic"], collections=[COLL])
    with pytest.raises(InputFileError) as e:
        load_products(items, ["lst_night"], GRID)
    msg = str(e.value)
    assert msg.startswith("cube.stac: item 'MOD11A2.A2019001' has no asset 'LST_Night_1km'")
    assert "LST_Day_1km, QC_Day" in msg


def test_bbox_and_dates_outside_the_source(lst_items):
    with pytest.raises(GridError) as e:
        search_items(lst_items["catalog"], collections=[COLL], bbox=(100, 0, 101, 1))
    assert str(e.value).startswith(f"{lst_items['catalog']}: no item of ['{COLL}'] intersects bbox (100, 0, 101, 1)")
    with pytest.raises(GridError, match="outside the source"):
        search_items(lst_items["catalog"], collections=[COLL], datetime="2021-01-01/2021-12-31")
    with pytest.raises(InputFileError, match="STAC catalog not found"):
        search_items(lst_items["root"] / "nope.json", collections=[COLL])


def test_unknown_product_is_a_recipe_error():
    with pytest.raises(RecipeError, match="unknown product 'lst'"):
        product("lst")


def test_product_table_names_planetary_computer_collections():
    cols = {p.collection for p in PRODUCTS.values()}
    for c in ("modis-11A2-061", "modis-09A1-061", "modis-17A2HGF-061", "modis-15A2H-061", "modis-16A3GF-061",
              "modis-12Q1-061", "cop-dem-glo-90"):
        assert c in cols
    gpp = PRODUCTS["gpp"]
    assert gpp.scale == 1e-4 and 32761.0 in gpp.fill and gpp.qc is not None
    assert PRODUCTS["land_cover_500m"].categorical


def test_modis_sinusoidal_items_load_on_a_sinusoidal_grid(tmp_path):
    one = GridSpec.modis_sinusoidal(BBox(1.0, 4_400_001.0, 2.0, 4_400_002.0))
    w, n, r = one.bbox.west, one.bbox.north, MODIS_500M
    sin = GridSpec(one.crs, r, BBox(w, n - 4 * r, w + 6 * r, n))
    dn = np.arange(24, dtype="int16").reshape(4, 6) * 100 + 1000
    dn[0, 0] = -28672
    st_ = np.zeros((4, 6), "uint16")
    st_[1, 1] = 0b01  # cloudy
    a = write_tif(tmp_path / "b01.tif", dn, sin, nodata=-28672, cog=True)
    s = write_tif(tmp_path / "state.tif", st_, sin, cog=True)
    item = stac_item("MOD09A1.A2019001", "modis-09A1-061", "2019-01-01",
                     {"sur_refl_b01": a, "sur_refl_state_500m": s}, sin, epsg=None, dtype="int16",
                     nodata=-28672)
    ic = item_collection_file(tmp_path / "items.json", [item])
    items = search_items(ic, collections=["modis-09A1-061"])
    ds = load_products(items, ["sr_b01"], sin)
    exp = dn * np.float32(1e-4)
    exp = exp.astype("float32")
    exp[0, 0] = np.nan
    exp[1, 1] = np.nan
    np.testing.assert_allclose(ds.sr_b01.values[0], exp, rtol=1e-6)
    np.testing.assert_array_equal(ds.x.values, sin.x)
    assert ds.rio.crs.to_wkt() is not None and "Sinusoidal" in ds.rio.crs.to_wkt()


# --------------------------------------------------------------------- STAC API on 127.0.0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stac_api(lst_items):
    exe = shutil.which("rustac")
    if exe is None:
        if __import__("os").environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("rustac (test extra) is needed to serve a STAC API in CI")
        pytest.skip("rustac not installed (pip install -e '.[test]')")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([exe, "serve", str(lst_items["ic"]), "--create-collections", "--addr",
                             f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"rustac serve exited: {proc.stdout.read().decode()[-500:]}")
                time.sleep(0.1)
        else:
            pytest.fail("rustac serve did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_stac_api_search_and_load(stac_api, lst_items):
    items = search_items(stac_api, collections=[COLL], bbox=GRID.bbox, datetime="2019-01-05/2019-01-20")
    assert sorted(it.id for it in items) == ["MOD11A2.A2019009", "MOD11A2.A2019017"]
    ds = load_products(items, ["lst_day"], GRID)
    exp = _expected(lst_items["dn"][1:], lst_items["qc"][1:])
    np.testing.assert_array_equal(ds.lst_day.values, exp)
    assert ds.rio.crs.to_epsg() == 4326


def test_stac_api_bbox_outside(stac_api):
    with pytest.raises(GridError, match="intersects bbox"):
        search_items(stac_api, collections=[COLL], bbox=(100, 0, 101, 1))


# ------------------------------------------------------------------------------ workflow / CLI


def _recipe(tmp_path: Path, catalog: str, products=("lst_day",), **cube) -> Path:
    doc = {"name": "tiny_stac", "workflow": "stac_cube",
           "cube": {"source": "stac",
                    "grid": {"crs": "EPSG:4326", "resolution": GRID.resolution, "bbox": list(GRID.bbox.as_tuple())},
                    "stac": {"catalog": catalog, "products": list(products), "datetime": "2019-01-01/2019-01-31"},
                    **cube}}
    p = tmp_path / "recipe.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return p


def test_cli_stac_cube_8day_and_daily(lst_items, tmp_path, capsys):
    rec = _recipe(tmp_path, str(lst_items["catalog"]), temporal="8day", annual_stats=True)
    assert main(["run", str(rec), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr()
    cube = open_dataset(tmp_path / "out" / "maps" / "cube.zarr")
    exp = _expected(lst_items["dn"], lst_items["qc"])
    np.testing.assert_array_equal(cube.lst_day.values, exp)  # dates are already 8-day period starts
    assert "stac_items" in cube.attrs["input_checksums"]
    assert cube.lst_day.chunks[0] == (3,)  # the whole time axis in one chunk
    rec2 = _recipe(tmp_path, str(lst_items["ic"]), temporal="daily", store="daily.zarr")
    assert main(["run", str(rec2), "--out", str(tmp_path / "out2")]) == 0
    daily = open_dataset(tmp_path / "out2" / "maps" / "daily.zarr")
    assert pd.Timestamp(daily.time.values[0]) == pd.Timestamp("2019-01-01")
    # Jan 9 is halfway between the centres of the first two periods (Jan 5 and Jan 13)
    np.testing.assert_allclose(daily.lst_day.sel(time="2019-01-09").values, (exp[0] + exp[1]) / 2, rtol=1e-5)


def test_cli_item_without_asset_exit_2(lst_items, tmp_path, capsys):
    rec = _recipe(tmp_path, str(lst_items["catalog"]), products=("lst_night",))
    code = main(["run", str(rec), "--out", str(tmp_path / "out")])
    text = "".join(capsys.readouterr())
    assert code == 2
    assert "item 'MOD11A2.A2019001' has no asset 'LST_Night_1km'" in text


def test_cli_bbox_outside_stac_exit_2(lst_items, tmp_path, capsys):
    rec = _recipe(tmp_path, str(lst_items["catalog"]))
    code = main(["run", str(rec), "--out", str(tmp_path / "out"), "--set", "cube.grid.bbox=[100, 0, 101, 1]"])
    text = "".join(capsys.readouterr())
    assert code == 2
    assert f"{lst_items['catalog']}: no item of ['{COLL}'] intersects bbox" in text


def test_cli_indices_need_reflectance_exit_2(lst_items, tmp_path, capsys):
    rec = _recipe(tmp_path, str(lst_items["catalog"]), indices=["ndvi"])
    code = main(["run", str(rec), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "cube.indices: index ndvi needs reflectance variables ['sr_b02', 'sr_b01']" in "".join(capsys.readouterr())


def test_stac_recipes_validate(repo_root):
    for path in sorted((repo_root / "recipes").glob("stac_*.yaml")):
        assert main(["validate", str(path)]) == 0, path
    assert list((repo_root / "recipes").glob("stac_*.yaml"))
