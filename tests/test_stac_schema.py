"""The demo's STAC catalog validates against the STAC core JSON schemas bundled with pystac,
offline; hrefs are relative; extension fields are checked with pystac's extension classes."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pystac
import pytest
from pystac.extensions.datacube import DatacubeExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension

pytest.importorskip("jsonschema")


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(self, address, *args, **kwargs):
        raise AssertionError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _stac_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.json"))


def _hrefs(obj: dict) -> list[str]:
    out = [link["href"] for link in obj.get("links", [])]
    out += [a["href"] for a in obj.get("assets", {}).values()]
    return out


def test_demo_catalog_validates_against_core_schemas_offline(demo_run, offline):
    from pystac.validation import validate_dict

    folder = demo_run / "maps" / "stac"
    files = _stac_files(folder)
    assert len(files) == 47  # the collection and one item per 8-day step
    for f in files:
        d = json.loads(f.read_text())
        # core schemas only (bundled with pystac): extension schemas would be fetched
        validate_dict({**d, "stac_extensions": []}, href=str(f))
        for href in _hrefs(d):
            assert not href.startswith("/") and "://" not in href, (f, href)  # movable
            if not href.endswith(".md") or (f.parent / href).exists():
                assert (f.parent / href).exists(), (f, href)


def test_demo_collection_fields(demo_run):
    folder = demo_run / "maps" / "stac"
    coll = pystac.Collection.from_file(str(folder / "collection.json"))
    assert coll.title.count("SYNTHETIC") == 1
    lic = [link for link in coll.links if link.rel == "license"]
    assert lic and Path(lic[0].get_absolute_href()).is_file()
    assert set(coll.item_assets) == {"rh"}
    assert coll.item_assets["rh"].media_type.startswith("image/tiff")
    assert coll.item_assets["rh"].to_dict()["raster:bands"][0]["unit"] == "g m-2 d-1"
    zarr = coll.assets["zarr"]
    assert zarr.href == "../rh.zarr" or not Path(zarr.href).is_absolute()
    assert Path(zarr.get_absolute_href()).resolve() == (demo_run / "maps" / "rh.zarr").resolve()
    cube = DatacubeExtension.ext(zarr)
    assert set(cube.dimensions) == {"time", "y", "x"}
    assert cube.dimensions["x"].dim_type == "spatial" and cube.dimensions["x"].reference_system == 4326
    assert cube.dimensions["time"].extent[0].startswith("2020-01-01")
    assert cube.variables["rh"].dimensions == ["time", "y", "x"]
    assert cube.variables["rh"].unit == "g m-2 d-1"
    assert DatacubeExtension.get_schema_uri() in coll.stac_extensions


def test_demo_items_carry_their_period(demo_run):
    import pandas as pd

    coll = pystac.Collection.from_file(str(demo_run / "maps" / "stac" / "collection.json"))
    items = sorted(coll.get_items(recursive=True), key=lambda i: i.id)
    first = items[0]
    start = pd.Timestamp(first.properties["start_datetime"])
    end = pd.Timestamp(first.properties["end_datetime"])
    assert start == pd.Timestamp("2020-01-01", tz="UTC")
    assert end == pd.Timestamp("2020-01-08T23:59:59", tz="UTC")  # 8-day period, inclusive end
    last_end = pd.Timestamp(items[-1].properties["end_datetime"])
    assert last_end == pd.Timestamp("2020-12-31T23:59:59", tz="UTC")  # short last period
    asset = first.assets["rh"]
    assert ProjectionExtension.ext(asset).code == "EPSG:4326"
    assert RasterExtension.ext(asset).bands[0].unit == "g m-2 d-1"
