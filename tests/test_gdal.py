"""GDAL (the build bundled with rasterio) reads the products: a Zarr v2 map store
(``mapping.zarr_format: 2``) through its Zarr driver and a ``globalflux query --out x.nc``
NetCDF, each with the CRS found; COGs carry a band unit and averaged overviews."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from globalflux.cli import main
from globalflux.mapping import map_to_store
from test_cf import lstm_like_map, srdb_like_map


@pytest.fixture
def v2_store(tmp_path):
    ds = lstm_like_map()
    zone = srdb_like_map()["zone"]
    path = map_to_store(
        None,
        {"rs": ds["rs"].chunk({"time": 5, "y": 3, "x": 4}), "zone": zone.chunk({"y": 3, "x": 4})},
        tmp_path / "rs.zarr", progress=False, attrs=ds.attrs, zarr_format=2)
    return path, ds, zone


def test_gdal_zarr_driver_opens_a_v2_map_store_with_its_crs(v2_store):
    path, ds, zone = v2_store
    assert (path / ".zgroup").is_file()  # Zarr v2 layout
    with rasterio.open(f'ZARR:"{path}":/rs') as src:
        assert src.crs.to_epsg() == 4326
        assert src.count == ds.sizes["time"] and src.shape == (6, 8)
        np.testing.assert_allclose(src.read(2), ds["rs"].isel(time=1).values)
        x0, y0 = src.transform * (0.5, 0.5)  # centre of the first pixel
        assert x0 == pytest.approx(float(ds["x"][0])) and y0 == pytest.approx(float(ds["y"][0]))
    with rasterio.open(f'ZARR:"{path}":/zone') as src:
        assert src.dtypes[0] == "int16" and src.nodata == -1
        np.testing.assert_array_equal(src.read(1), zone.values)


def test_zarr_format_is_a_recipe_key():
    from globalflux.config.mapping import MappingConfig

    assert MappingConfig().zarr_format == 3
    assert MappingConfig(zarr_format=2).zarr_format == 2


def test_query_netcdf_opens_in_gdal_with_the_crs(v2_store, tmp_path):
    path, ds, _ = v2_store
    out = tmp_path / "q.nc"
    assert main(["query", str(path), "--var", "rs", "--time", "2020-01-02/2020-01-03",
                 "--out", str(out), "--quiet"]) == 0
    with rasterio.open(f"netcdf:{out}:rs") as src:
        assert src.crs is not None and src.crs.to_epsg() == 4326
        assert src.count == 2
        np.testing.assert_allclose(src.read(1), ds["rs"].isel(time=1).values)


def test_cog_band_unit_and_averaged_overviews(tmp_path):
    from globalflux.io.cog import write_cogs

    ds = srdb_like_map()
    big = ds["rh"].interp(y=np.linspace(50, 45, 64), x=np.linspace(5, 12, 64))
    big = big.rio.write_crs("EPSG:4326")
    (cont,) = write_cogs(big, tmp_path, prefix="rh")
    zone = (big / 300).fillna(-1).astype("int16").rename("zone")
    zone.attrs = {"long_name": "zone", "flag_values": [0, 1, 2], "units": "1"}
    (cat,) = write_cogs(zone, tmp_path, prefix="zone")
    with rasterio.open(cont) as src:
        assert src.units[0] == "g m-2 yr-1"
        ov = src.read(1, out_shape=(32, 32))
        # an averaged overview pixel is the mean of its 2x2 block, not one of its values
        block = src.read(1)[:2, :2]
        assert ov[0, 0] == pytest.approx(float(block.mean()), rel=1e-4)
    with rasterio.open(cat) as src:
        ov = src.read(1, out_shape=(32, 32))
        assert set(np.unique(ov)) <= set(np.unique(src.read(1)))  # nearest: no mixed classes
