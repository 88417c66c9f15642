"""globalflux.io.cog: valid COGs with overviews, CRS, nodata, tags; atomic; resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
import rioxarray  # noqa: F401
import xarray as xr

from globalflux.errors import GridError, StoreError
from globalflux.io.cog import cog_tags, validate_cog, write_cogs


def rh_map(nt=3, ny=40, nx=70, chunked=True):
    rng = np.random.default_rng(0)
    da = xr.DataArray(
        rng.random((nt, ny, nx)).astype("float32"), dims=("time", "y", "x"),
        coords={"time": pd.date_range("2020-01-01", periods=nt, freq="8D"),
                "y": 80 - np.arange(ny) * 0.5 - 0.25, "x": -20 + np.arange(nx) * 0.5 + 0.25},
        name="rh", attrs={"units": "g C m-2 d-1", "long_name": "heterotrophic respiration"},
    )
    da[0, :3, :3] = np.nan
    da = da.rio.write_crs("EPSG:4326")
    return da.chunk({"time": 1, "y": 16, "x": 32}) if chunked else da


def test_one_valid_cog_per_step_with_overviews_crs_nodata_tags(tmp_path):
    da = rh_map()
    paths = write_cogs(da, tmp_path, tags={"synthetic": "true", "recipe": "name: x\n",
                                           "globalflux_version": "0.1.0"})
    assert [p.name for p in paths] == ["rh_2020-01-01.tif", "rh_2020-01-09.tif",
                                       "rh_2020-01-17.tif"]
    for i, p in enumerate(paths):
        ok, errors, warnings = validate_cog(p)
        assert ok and not errors, errors
        with rasterio.open(p) as src:
            assert src.crs.to_epsg() == 4326
            assert src.overviews(1), "no overviews"
            assert np.isnan(src.nodata)
            assert src.descriptions == ("rh",)
            assert src.transform.a == 0.5 and src.transform.c == -20.0 and src.transform.f == 80.0
            np.testing.assert_array_equal(src.read(1), da.isel(time=i).values)
    tags = cog_tags(paths[1])
    assert tags["units"] == "g m-2 d-1" and "carbon" in tags["long_name"]  # UDUNITS-readable
    assert tags["long_name"] == "heterotrophic respiration (as carbon)"
    assert tags["time"] == "2020-01-09"
    assert tags["synthetic"] == "true" and tags["recipe"] == "name: x\n"
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_band_stack_and_int_map(tmp_path):
    da = rh_map(chunked=False)
    (p,) = write_cogs(da, tmp_path, per="stack", prefix="stack")
    with rasterio.open(p) as src:
        assert src.count == 3
        assert src.descriptions[2] == "rh 2020-01-17"
        np.testing.assert_array_equal(src.read(), da.values)
    assert cog_tags(p)["times"] == "2020-01-01,2020-01-09,2020-01-17"
    zone = xr.DataArray(np.arange(40 * 70, dtype="int16").reshape(40, 70) % 4, dims=("y", "x"),
                        coords={"y": da.y, "x": da.x}, name="zone")
    (z,) = write_cogs(zone, tmp_path, crs="EPSG:4326")
    assert validate_cog(z)[0]
    with rasterio.open(z) as src:
        assert src.dtypes[0] == "int16" and src.nodata == -1


def test_existing_file_refused_unless_resume(tmp_path):
    da = rh_map(nt=1)
    (p,) = write_cogs(da, tmp_path)
    before = p.read_bytes()
    with pytest.raises(StoreError, match=r"rh_2020-01-01\.tif: COG exists\. Use --resume"):
        write_cogs(da, tmp_path)
    assert write_cogs(da, tmp_path, resume=True) == [p]
    assert p.read_bytes() == before


def test_missing_crs_is_named(tmp_path):
    da = rh_map(nt=1, chunked=False).drop_vars("spatial_ref")
    with pytest.raises(GridError, match=r"rh: map has no CRS\. Set it with da\.rio\.write_crs"):
        write_cogs(da, tmp_path)
