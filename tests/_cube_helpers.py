"""Builders of small real-format inputs for the cube tests: GeoTIFF/COG files and STAC items.

Everything is written into a test's ``tmp_path`` with rasterio / rio-cogeo / pystac, so the
code under test reads real files through the same readers users run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from affine import Affine

from globalflux.grid import BBox, GridSpec

GRID = GridSpec("EPSG:4326", 0.25, BBox(10.0, 40.0, 12.0, 41.5))  # 6 x 8 pixels


def write_tif(path: Path, data: np.ndarray, grid: GridSpec = GRID, *, nodata=None, crs: str | None = "grid",
              cog: bool = False, tags: dict | None = None) -> Path:
    """Write ``data`` ((ny, nx) or (bands, ny, nx)) as a GeoTIFF (or a COG) on ``grid``."""
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    profile = {
        "driver": "GTiff", "height": arr.shape[1], "width": arr.shape[2], "count": arr.shape[0],
        "dtype": arr.dtype.name, "transform": grid.transform if crs is not None else Affine.identity(),
        "tiled": True, "blockxsize": 16, "blockysize": 16, "compress": "deflate",
    }
    if crs is not None:
        profile["crs"] = grid.crs if crs == "grid" else crs
    else:
        profile["transform"] = grid.transform
    if nodata is not None:
        profile["nodata"] = nodata
    path = Path(path)
    if not cog:
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
            if tags:
                dst.update_tags(**tags)
        return path
    from rasterio.io import MemoryFile
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(arr)
            if tags:
                tmp.update_tags(**tags)
        with mem.open() as src:
            cog_translate(src, str(path), cog_profiles.get("deflate"), quiet=True, in_memory=True,
                          overview_level=0)
    return path


def modis_lst_series(rng: np.random.Generator, dates, grid: GridSpec = GRID):
    """Raw MOD11A2-like LST DNs (scale 0.02 K; 0 = fill) and QC_Day bytes with bad pixels."""
    ny, nx = grid.shape
    dn = rng.integers(13000, 16000, size=(len(dates), ny, nx)).astype("uint16")
    dn[:, 0, 0] = 0  # fill
    qc = np.zeros_like(dn, dtype="uint8")
    qc[:, 1, 1] = 0b01  # "other quality": fails bits 0-1 == 00
    qc[:, 2, 3] = 0b11  # not produced (cloud)
    qc[:, 3, :2] = 0b0100_0000  # bits 6-7 set only: still good by the mandatory-QA rule
    return dn, qc


def stac_item(item_id: str, collection: str, date, assets: dict[str, Path], grid: GridSpec = GRID,
              epsg: int | None = 4326, dtype: str = "uint16", nodata=None):
    """A pystac Item with projection info for odc-stac (absolute asset hrefs)."""
    import pystac

    west, south, east, north = grid.bbox.as_tuple()
    if grid.is_geographic:
        lon_box = (west, south, east, north)
    else:
        from odc.geo.geom import BoundingBox

        b = BoundingBox(west, south, east, north, crs=grid.crs).to_crs("EPSG:4326")
        lon_box = (b.left, b.bottom, b.right, b.top)
    geom = {"type": "Polygon", "coordinates": [[[lon_box[0], lon_box[1]], [lon_box[2], lon_box[1]],
                                                [lon_box[2], lon_box[3]], [lon_box[0], lon_box[3]],
                                                [lon_box[0], lon_box[1]]]]}
    item = pystac.Item(item_id, geom, list(lon_box), pd.Timestamp(date).to_pydatetime(), properties={},
                       collection=collection)
    t = grid.transform
    for key, href in assets.items():
        extra = {"proj:shape": list(grid.shape), "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f]}
        if epsg is not None:
            extra["proj:epsg"] = epsg
        else:
            extra["proj:wkt2"] = grid.crs
        extra["raster:bands"] = [{"data_type": dtype, **({"nodata": nodata} if nodata is not None else {})}]
        item.add_asset(key, pystac.Asset(href=str(Path(href).resolve()), media_type=pystac.MediaType.COG,
                                         roles=["data"], extra_fields=extra))
    item.stac_extensions = [
        "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
        "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    ]
    return item


def static_catalog(root: Path, items, collection_id: str) -> Path:
    """A self-contained static STAC catalog on disk; returns the catalog.json path."""
    import pystac

    cat = pystac.Catalog("local", "test catalog")
    coll = pystac.Collection(collection_id, "test collection",
                             pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]),
                                           pystac.TemporalExtent([[None, None]])))
    for it in items:
        coll.add_item(it)
    cat.add_child(coll)
    cat.normalize_hrefs(str(root))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def item_collection_file(path: Path, items) -> Path:
    import pystac

    ic = pystac.ItemCollection(items)
    path.write_text(json.dumps(ic.to_dict(transform_hrefs=False)), encoding="utf-8")
    return path
