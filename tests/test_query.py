"""globalflux.query and `globalflux query`: lazy subsets, outputs, partial stores, bad inputs."""

from __future__ import annotations

import shutil

import _mapjob
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from globalflux.cli import main
from globalflux.errors import DataError, GridError
from globalflux.io.store import MANIFEST_DIR, open_dataset
from globalflux.query import open_map, query


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "maps.zarr"
    _mapjob.run(path)
    return path


def test_query_is_lazy_and_selects(store):
    ds = open_dataset(store)
    sub = query(store, bbox=(-5, 50, 0, 55), time="2020-01-09/2020-01-17", var="rh")
    assert isinstance(sub, xr.DataArray) and sub.chunks is not None
    assert sub.sizes["time"] == 2
    assert float(sub.x.min()) >= -5 and float(sub.x.max()) <= 0
    assert float(sub.y.min()) >= 50 and float(sub.y.max()) <= 55
    ref = ds["rh"].sel(x=sub.x, y=sub.y, time=sub.time)
    np.testing.assert_array_equal(sub.values, ref.values)
    pt = query(store, point="3.1,55.2", var="rh")
    assert pt.dims == ("time",)
    assert float(pt.x) == pytest.approx(3.25) and float(pt.y) == pytest.approx(55.25)
    z = query(store, zone=1, var="rh")
    zone = ds["zone"].values
    assert np.isnan(z.values[:, zone != 1]).all()
    np.testing.assert_array_equal(z.values[:, zone == 1], ds["rh"].values[:, zone == 1])


def test_partial_store_shows_only_completed_blocks(store, tmp_path):
    part = tmp_path / "part.zarr"
    shutil.copytree(store, part)
    # pretend the run stopped: drop two blocks from the manifest and unmark completion
    blocks = part / MANIFEST_DIR / "blocks"
    (blocks / "1.1.1").unlink()
    (blocks / "0.2.3").unlink()
    import zarr

    zarr.open_group(str(part), mode="r+").attrs["globalflux_complete"] = "false"
    ds = open_map(part)
    full = open_dataset(store)
    rh = ds["rh"].values
    assert np.isnan(rh[1, 12:24, 16:32]).all()
    assert np.isnan(ds["zone"].values[24:36, 48:64]).all()  # a (y, x) var: time-0 block
    np.testing.assert_array_equal(rh[2, 12:24, 16:32], full["rh"].values[2, 12:24, 16:32])
    np.testing.assert_array_equal(ds["zone"].values[:12, 16:32], full["zone"].values[:12, 16:32])
    assert ds.attrs["globalflux_partial"] == "62/64 blocks complete"


@pytest.mark.parametrize("ext", [".nc", ".csv", ".tif", ".png"])
def test_cli_outputs(store, tmp_path, ext):
    out = tmp_path / f"q{ext}"
    args = ["--quiet", "query", str(store), "--out", str(out)]
    if ext == ".csv":
        args += ["--point", "3.1,55.2"]
    else:
        args += ["--bbox=-5,50,0,55", "--var", "rh"]
    assert main(args) == 0
    assert out.is_file() and out.stat().st_size > 0
    if ext == ".nc":
        back = xr.open_dataset(out, engine="h5netcdf")
        assert back["rh"].sizes["time"] == 4 and back.attrs["synthetic"] == "true"
    elif ext == ".csv":
        df = pd.read_csv(out)
        assert list(df.columns[:3]) == ["time", "rh", "zone"] and len(df) == 4
        ref = open_dataset(store)["rh"].sel(x=3.25, y=55.25).values
        np.testing.assert_allclose(df["rh"].to_numpy(), ref, rtol=1e-6)
    elif ext == ".tif":
        with rasterio.open(out) as src:
            assert src.count == 4 and src.crs.to_epsg() == 4326


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--bbox", "100,10,120,20"], "--bbox: bbox (100.0, 10.0, 120.0, 20.0) is outside the map "
                                      "extent (-10.0, 36.0, 22.0, 60.0)"),
        (["--var", "gpp"], "unknown variable(s) ['gpp']. Choose from: rh, zone"),
        (["--point", "50,50"], "--point: point (50, 50) is outside the map extent"),
        (["--time", "2021-01-01"], "--time: 2021-01-01..2021-01-01 is outside the map's time axis"),
        (["--zone", "7"], "--zone: zone 7 has no pixel in the map"),
        (["--bbox", "1,2,3"], "--bbox: got '1,2,3'. Write the bbox as W,S,E,N numbers"),
    ],
)
def test_bad_queries_exit_2_and_name_the_input(store, tmp_path, capsys, extra, message):
    code = main(["query", str(store), "--out", str(tmp_path / "x.nc"), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert not (tmp_path / "x.nc").exists()


def test_missing_store_and_bad_extension(tmp_path, capsys, store):
    assert main(["query", str(tmp_path / "nope.zarr"), "--out", str(tmp_path / "x.nc")]) == 2
    assert "nope.zarr: store not found" in capsys.readouterr().err
    assert main(["query", str(store), "--out", str(tmp_path / "x.xlsx")]) == 2
    assert "unknown output type '.xlsx'" in capsys.readouterr().err


def test_api_errors(store):
    with pytest.raises(GridError, match="outside the map extent"):
        query(store, bbox="100,10,120,20")
    with pytest.raises(DataError, match=r"unknown variable\(s\) \['nope'\]"):
        query(store, var="nope")
