"""globalflux.io.catalog: a STAC Collection of the COGs that odc-stac loads back exactly."""

from __future__ import annotations

import json

import numpy as np
import pystac
import pytest

from globalflux.errors import DataError, InputFileError
from globalflux.io.catalog import load_items, write_catalog
from globalflux.io.cog import write_cogs
from test_cog import rh_map


def test_odc_stac_loads_the_cogs_back(tmp_path):
    import odc.stac

    da = rh_map(chunked=False)
    zone = (da.isel(time=0) * 4).astype("int16").rename("zone")
    zone.attrs = {"long_name": "zone"}
    cogs = write_cogs(da, tmp_path / "cog", tags={"synthetic": "true"})
    cogs += write_cogs(zone, tmp_path / "cog", tags={"synthetic": "true"})
    store = tmp_path / "m.zarr"
    store.mkdir()
    coll_path = write_catalog(cogs[:3], tmp_path / "stac", collection_id="demo", store=store)
    coll = pystac.Collection.from_file(str(coll_path))
    assert coll.title.startswith("SYNTHETIC")
    assert coll.extra_fields["globalflux:synthetic"] is True
    assert coll.assets["zarr"].media_type == "application/vnd+zarr"
    raw = json.loads(coll_path.read_text())
    assert raw["extent"]["spatial"]["bbox"][0] == pytest.approx([-20.0, 60.0, 15.0, 80.0])
    items = load_items(coll_path)
    assert len(items) == 3
    asset = items[0].assets["rh"]
    assert asset.extra_fields["proj:code"] == "EPSG:4326"
    assert asset.extra_fields["proj:shape"] == [40, 70]
    assert asset.extra_fields["raster:bands"][0]["unit"] == "g m-2 d-1"
    # hrefs are relative in the files (a self-contained catalog can be moved)
    item_json = next((tmp_path / "stac").rglob("demo-2020-01-01.json"))
    assert not json.loads(item_json.read_text())["assets"]["rh"]["href"].startswith("/")

    loaded = odc.stac.load(items, bands=["rh"], chunks={})
    assert loaded.sizes["time"] == 3
    np.testing.assert_array_equal(loaded["rh"].values, da.values)
    np.testing.assert_allclose(loaded["latitude"].values, da["y"].values)
    np.testing.assert_allclose(loaded["longitude"].values, da["x"].values)


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(DataError, match="write_catalog: no COGs to describe"):
        write_catalog([], tmp_path, collection_id="x")
    with pytest.raises(InputFileError, match=r"nope\.tif: COG not found"):
        write_catalog([tmp_path / "nope.tif"], tmp_path, collection_id="x")


def test_publish_store_writes_cogs_and_catalog(tmp_path):
    import _mapjob
    import odc.stac

    from globalflux.config import MappingConfig
    from globalflux.io.catalog import publish_store
    from globalflux.io.store import open_dataset

    store = tmp_path / "maps.zarr"
    _mapjob.run(store)
    out = publish_store(store, tmp_path / "cog", tmp_path / "stac", collection_id="mapjob",
                        mapping=MappingConfig(cog_per="step"))
    names = sorted(p.name for p in out["cogs"])
    assert names[:4] == ["rh_2020-01-01.tif", "rh_2020-01-09.tif", "rh_2020-01-17.tif",
                         "rh_2020-01-25.tif"] and names[4] == "zone.tif"
    items = load_items(out["catalog"])
    dated = [it for it in items if it.datetime is not None]
    back = odc.stac.load(dated, bands=["rh"], chunks={})
    ref = open_dataset(store)["rh"]
    np.testing.assert_array_equal(back["rh"].values, ref.values)
    assert pystac.Collection.from_file(str(out["catalog"])).title == "SYNTHETIC mapjob"
