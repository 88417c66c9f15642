"""io/rasters.py: GeoTIFF/COG, NetCDF and Zarr sources, decoding, QC, and bad inputs (exit 2).

Bad inputs are also run through the real CLI (``globalflux run`` with a tiny stac_cube recipe
of ``source: rasters``) to check the exit code and that the message names the source.
"""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import xarray as xr
import yaml
from _cube_helpers import GRID, modis_lst_series, write_tif

from globalflux.cli import main
from globalflux.errors import GridError, InputFileError
from globalflux.io.products import PRODUCTS, QCRule
from globalflux.io.rasters import (
    date_from_name,
    decode,
    file_checksum,
    mask_qc,
    open_raster,
    open_raster_series,
)
from globalflux.io.store import open_dataset

DATES = pd.DatetimeIndex(["2019-01-01", "2019-01-09", "2019-01-17"])


def _no_compute(dsk, keys, **kwargs):
    raise AssertionError("a Dask graph was computed")


def _expected_lst(dn, qc):
    exp = dn.astype("float32") * np.float32(0.02) + np.float32(-273.15)
    exp[(dn == 0) | ((qc & 0b11) != 0)] = np.nan
    return exp


def _lst_files(tmp_path: Path, *, cog=True):
    rng = np.random.default_rng(0)
    dn, qc = modis_lst_series(rng, DATES)
    for i, d in enumerate(DATES):
        tag = f"A{d.year}{d.day_of_year:03d}"
        write_tif(tmp_path / f"MOD11A2.{tag}.LST_Day_1km.tif", dn[i], nodata=0, cog=cog)
        write_tif(tmp_path / f"MOD11A2.{tag}.QC_Day.tif", qc[i], cog=cog)
    return dn, qc


# ------------------------------------------------------------------------------------- openers


def test_open_cog_decodes_fill_and_keeps_crs_lazily(tmp_path):
    dn, _ = _lst_files(tmp_path)
    p = PRODUCTS["lst_day"]
    with dask.config.set(scheduler=_no_compute):
        da = open_raster(tmp_path / "MOD11A2.A2019001.LST_Day_1km.tif", name="lst", scale=p.scale,
                         offset=p.offset, valid_range=p.valid_range, units="degC")
    assert isinstance(da.data, dask.array.Array)
    assert da.rio.crs.to_epsg() == 4326
    np.testing.assert_array_equal(da.x.values, GRID.x)
    np.testing.assert_array_equal(da.y.values, GRID.y)
    exp = dn[0].astype("float32") * np.float32(0.02) + np.float32(-273.15)
    exp[0, 0] = np.nan  # nodata 0 from the file
    np.testing.assert_array_equal(da.values, exp)
    assert da.attrs["units"] == "degC" and da.name == "lst"


def test_geotiff_scale_offset_from_file_tags(tmp_path):
    import rasterio

    arr = np.arange(48, dtype="int16").reshape(6, 8)
    path = write_tif(tmp_path / "scaled.tif", arr, nodata=-1)
    with rasterio.open(path, "r+") as dst:
        dst.scales = (0.5,)
        dst.offsets = (10.0,)
    da = open_raster(path)
    np.testing.assert_allclose(da.values, arr * 0.5 + 10.0)


def test_netcdf_source_with_cf_lat_lon(tmp_path):
    vals = np.arange(48, dtype="float32").reshape(6, 8)
    ds = xr.Dataset({"soc": (("lat", "lon"), vals)},
                    coords={"lat": ("lat", GRID.y[::-1], {"units": "degrees_north"}),
                            "lon": ("lon", GRID.x, {"units": "degrees_east"})})
    ds["soc"] = ds.soc.copy(data=vals[::-1])
    ds["soc"].attrs["units"] = "t ha-1"
    ds.soc.encoding.update(_FillValue=-9999.0, dtype="int16", scale_factor=0.1)
    ds["soc"][0, 0] = np.nan
    ds.to_netcdf(tmp_path / "soc.nc", engine="h5netcdf")
    da = open_raster(tmp_path / "soc.nc", variable="soc")
    assert da.rio.crs.to_epsg() == 4326
    assert da.y.values[0] > da.y.values[-1]  # flipped to north first
    exp = vals.copy()
    exp[-1, 0] = np.nan
    np.testing.assert_allclose(da.values, exp, rtol=1e-6, atol=0.051)
    assert da.attrs["units"] == "t ha-1"


def test_zarr_source_round_trip(tmp_path):
    vals = np.arange(48, dtype="float32").reshape(6, 8)
    da = xr.DataArray(vals, dims=("y", "x"), coords={"y": GRID.y, "x": GRID.x}, name="dem")
    ds = da.to_dataset().rio.write_crs("EPSG:4326")
    ds.chunk({"y": 3, "x": 4}).to_zarr(tmp_path / "dem.zarr", zarr_format=3, consolidated=False)
    out = open_raster(tmp_path / "dem.zarr", variable="dem")
    assert out.chunks == ((3, 3), (4, 4))
    np.testing.assert_array_equal(out.values, vals)
    assert out.rio.crs.to_epsg() == 4326


def test_series_from_dated_names_and_qc_mask(tmp_path):
    dn, qc = _lst_files(tmp_path)
    files = sorted(tmp_path.glob("*LST_Day_1km.tif"))
    qfiles = sorted(tmp_path.glob("*QC_Day.tif"))
    p = PRODUCTS["lst_day"]
    lst = open_raster_series(files, name="lst", scale=p.scale, offset=p.offset, valid_range=p.valid_range)
    q = open_raster_series(qfiles, name="qc", decode_values=False, categorical=True)
    masked = mask_qc(lst, q, p.qc)
    assert pd.DatetimeIndex(masked.time.values).equals(DATES)
    np.testing.assert_array_equal(masked.values, _expected_lst(dn, qc))
    assert "QC_Day" in masked.attrs["qc_rule"]


def test_date_from_name():
    assert date_from_name("MOD11A2.A2019009.h18v04.tif") == pd.Timestamp("2019-01-09")
    assert date_from_name("lst_20200131.tif") == pd.Timestamp("2020-01-31")
    with pytest.raises(InputFileError, match="no date in the file name"):
        date_from_name("lst.tif")


def test_decode_categorical_keeps_integers():
    da = xr.DataArray(np.array([[1, 255]], "uint8"), dims=("y", "x"))
    out = decode(da, fill=(255.0,), categorical=True)
    assert out.dtype == np.uint8 and out.attrs["flag_fill"] == 255.0


def test_mask_qc_bit_rule():
    q = xr.DataArray(np.array([0b00, 0b01, 0b100, 0b111], "uint8"))
    d = xr.DataArray(np.ones(4, "float32"))
    out = mask_qc(d, q, QCRule("qc", 0b11, 0))
    np.testing.assert_array_equal(np.isnan(out.values), [False, True, False, True])


def test_file_checksum_is_stable(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc")
    assert file_checksum(p) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ----------------------------------------------------------------------------------- bad inputs


def test_raster_without_crs_is_a_grid_error(tmp_path):
    path = write_tif(tmp_path / "nocrs.tif", np.ones((6, 8), "float32"), crs=None)
    with pytest.raises(GridError) as e:
        open_raster(path)
    assert str(e.value).startswith(f"{path}: raster has no CRS")
    assert "gdal_edit.py" in str(e.value)
    assert open_raster(path, crs="EPSG:4326").rio.crs.to_epsg() == 4326


def test_missing_file_and_bad_band(tmp_path):
    with pytest.raises(InputFileError, match="source not found"):
        open_raster(tmp_path / "nope.tif")
    path = write_tif(tmp_path / "one.tif", np.ones((6, 8), "float32"))
    with pytest.raises(InputFileError, match="band 2 requested, the file has 1"):
        open_raster(path, band=2)


def test_corrupt_zarr_chunk_names_store_and_chunk(tmp_path):
    vals = np.arange(48, dtype="float32").reshape(6, 8)
    ds = xr.DataArray(vals, dims=("y", "x"), coords={"y": GRID.y, "x": GRID.x}, name="dem").to_dataset()
    store = tmp_path / "dem.zarr"
    ds.rio.write_crs("EPSG:4326").chunk({"y": 3, "x": 4}).to_zarr(store, zarr_format=3, consolidated=False)
    chunk = store / "dem" / "c" / "1" / "0"
    assert chunk.is_file()
    chunk.write_bytes(b"\x00garbage, not a zstd frame")
    da = open_raster(store, variable="dem")
    np.testing.assert_array_equal(da[:3].values, vals[:3])  # intact chunks still read
    with pytest.raises(InputFileError) as e:
        da.compute()
    assert str(e.value).startswith(f"{store}: corrupt or unreadable chunk")
    assert "'dem'" in str(e.value)


# ------------------------------------------------------------------------------ through the CLI


def _recipe(tmp_path: Path, rasters: dict, **cube) -> Path:
    doc = {
        "name": "tiny_rasters",
        "workflow": "stac_cube",
        "cube": {
            "source": "rasters",
            "grid": {"crs": "EPSG:4326", "resolution": GRID.resolution, "bbox": list(GRID.bbox.as_tuple())},
            "temporal": "native",
            "rasters": rasters,
            **cube,
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _run(recipe: Path, out: Path, capsys) -> tuple[int, str]:
    code = main(["run", str(recipe), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_cli_rasters_cube_end_to_end(tmp_path, capsys):
    dn, qc = _lst_files(tmp_path)
    p = PRODUCTS["lst_day"]
    rasters = {"lst_day": {"path": str(tmp_path / "*LST_Day_1km.tif"), "scale": p.scale, "offset": p.offset,
                           "valid_range": list(p.valid_range), "units": "degC",
                           "qc_path": str(tmp_path / "*QC_Day.tif"), "qc_mask": 3, "qc_good": 0}}
    code, text = _run(_recipe(tmp_path, rasters, annual_stats=True, add_sin_doy=True), tmp_path / "out", capsys)
    assert code == 0, text
    cube = open_dataset(tmp_path / "out" / "maps" / "cube.zarr")
    np.testing.assert_array_equal(cube.lst_day.values, _expected_lst(dn, qc))
    assert cube.rio.crs.to_epsg() == 4326
    np.testing.assert_array_equal(cube.x.values, GRID.x)
    exp = _expected_lst(dn, qc)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(cube.lst_day_max.sel(year=2019).values, np.nanmax(exp, axis=0), rtol=1e-6)
    assert "input_checksums" in cube.attrs and "MOD11A2.A2019001.LST_Day_1km.tif" in cube.attrs["input_checksums"]
    assert "sin_doy" in cube and cube.lst_day.attrs["units"] == "degC"


def test_cli_raster_without_crs_exit_2(tmp_path, capsys):
    path = write_tif(tmp_path / "nocrs.tif", np.ones((6, 8), "float32"), crs=None)
    code, text = _run(_recipe(tmp_path, {"v": {"path": str(path)}}), tmp_path / "out", capsys)
    assert code == 2
    assert f"{path}: raster has no CRS" in text


def test_cli_all_nodata_band_exit_2_and_nothing_written(tmp_path, capsys):
    path = write_tif(tmp_path / "empty.tif", np.full((6, 8), -9999.0, "float32"), nodata=-9999.0)
    good = write_tif(tmp_path / "good.tif", np.ones((6, 8), "float32"))
    code, text = _run(_recipe(tmp_path, {"good": {"path": str(good)}, "empty": {"path": str(path)}}),
                      tmp_path / "out", capsys)
    assert code == 2
    assert str(path) in text and "have no valid value" in text
    assert not (tmp_path / "out" / "maps" / "cube.zarr").exists()
    assert not (tmp_path / "out" / "maps" / "cube.zarr.partial").exists()


def test_cli_mismatched_time_axes_exit_2(tmp_path, capsys):
    _lst_files(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    for d in ("20190101", "20190109"):
        write_tif(other / f"gpp_{d}.tif", np.ones((6, 8), "float32"))
    rasters = {"lst": {"path": str(tmp_path / "*LST_Day_1km.tif")}, "gpp": {"path": str(other / "gpp_*.tif")}}
    code, text = _run(_recipe(tmp_path, rasters), tmp_path / "out", capsys)
    assert code == 2
    assert "gpp: time axis (2 steps" in text and "differs from 'lst' (3 steps" in text


def test_cli_bbox_outside_the_source_exit_2(tmp_path, capsys):
    good = write_tif(tmp_path / "good.tif", np.ones((6, 8), "float32"))
    rec = _recipe(tmp_path, {"v": {"path": str(good)}})
    code = main(["run", str(rec), "--out", str(tmp_path / "out"), "--set", "cube.grid.bbox=[100, 0, 101, 1]"])
    text = "".join(capsys.readouterr())
    assert code == 2
    assert f"{good}: target bbox" in text and "outside the source extent" in text


def test_cli_corrupt_zarr_chunk_exit_2(tmp_path, capsys):
    vals = np.ones((6, 8), dtype="float32")
    ds = xr.DataArray(vals, dims=("y", "x"), coords={"y": GRID.y, "x": GRID.x}, name="dem").to_dataset()
    store = tmp_path / "dem.zarr"
    ds.rio.write_crs("EPSG:4326").chunk({"y": 3, "x": 4}).to_zarr(store, zarr_format=3, consolidated=False)
    (store / "dem" / "c" / "0" / "1").write_bytes(b"broken")
    code, text = _run(_recipe(tmp_path, {"dem": {"path": str(store), "variable": "dem"}}), tmp_path / "out", capsys)
    assert code == 2
    assert f"{store}: corrupt or unreadable chunk" in text
    assert not (tmp_path / "out" / "maps" / "cube.zarr").exists()
