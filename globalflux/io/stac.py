"""Find STAC items and load them onto a :class:`~globalflux.grid.GridSpec` with odc-stac.

Two verbs, the same path for real and local data:

* :func:`search_items` -- a STAC API URL (``http(s)://...``; searched with ``pystac-client``),
  a local static catalog (``catalog.json``/``collection.json``; walked with pystac) or an
  ItemCollection file (GeoJSON FeatureCollection), filtered by collection, bbox and time.
* :func:`load_products` -- load the assets of those items with :func:`odc.stac.load` onto the
  target grid (lazy, Dask chunks), then decode each product (fill values, valid range, scale,
  offset; :mod:`globalflux.io.products`) and mask pixels failing its QC bit rule.

Planetary Computer asset hrefs need a short-lived SAS token; pass ``patch_url`` (for example
``planetary_computer.sign``) when loading from it. Errors name the item/asset/source.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import xarray as xr

from ..errors import GridError, InputFileError
from ..grid import BBox, GridSpec
from .products import Product, product
from .rasters import decode_product

__all__ = ["search_items", "load_products", "item_ids"]


def _parse_time(value: str | None) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    if not value:
        return None, None
    parts = str(value).split("/")
    start = pd.Timestamp(parts[0]) if parts[0] not in ("", "..") else None
    end = pd.Timestamp(parts[-1]) if len(parts) > 1 and parts[-1] not in ("", "..") else None
    if len(parts) == 1:
        end = start
    if end is not None and len(parts[-1]) <= 10:
        end = end + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)  # whole end day
    return start, end


def _item_time(item) -> tuple[pd.Timestamp, pd.Timestamp]:
    props = item.properties
    if item.datetime is not None:
        t = pd.Timestamp(item.datetime).tz_localize(None) if pd.Timestamp(item.datetime).tzinfo else pd.Timestamp(item.datetime)
        return t, t
    s = pd.Timestamp(props["start_datetime"]).tz_localize(None)
    e = pd.Timestamp(props["end_datetime"]).tz_localize(None)
    return s, e


def _local_items(path: Path):
    import pystac

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputFileError(f"cannot read STAC JSON ({exc})", where=str(path),
                             fix="Give a STAC catalog.json, collection.json or an ItemCollection file.") from None
    kind = doc.get("type")
    if kind == "FeatureCollection":
        return list(pystac.ItemCollection.from_dict(doc, preserve_dict=False))
    if kind == "Feature":
        return [pystac.Item.from_file(str(path))]
    if kind in ("Catalog", "Collection"):
        cat = pystac.read_file(str(path))
        return list(cat.get_items(recursive=True))
    raise InputFileError(f"STAC type {kind!r} is not a catalog, collection or item collection",
                         where=str(path), fix="Give a STAC catalog.json, collection.json or ItemCollection.")


def search_items(
    source: str | Path,
    *,
    collections: Sequence[str],
    bbox: BBox | Sequence[float] | None = None,
    datetime: str | None = None,
    max_items: int | None = None,
    where: str = "cube.stac",
):
    """STAC items of ``collections`` intersecting ``bbox`` (lon/lat) and ``datetime``.

    Parameters
    ----------
    source
        STAC API URL, or a local static catalog / collection / ItemCollection JSON file.
    collections
        Collection ids (e.g. ``["modis-11A2-061"]``).
    bbox
        ``(W, S, E, N)`` in degrees.
    datetime
        ``"2019-01-01/2019-12-31"`` (RFC 3339 interval, open ends ``..``) or one date.

    Returns
    -------
    pystac.ItemCollection

    Raises
    ------
    InputFileError
        The catalog cannot be read or reached.
    GridError
        No item intersects the bbox/time (the bbox is outside the source).
    """
    import pystac

    box = bbox.as_tuple() if isinstance(bbox, BBox) else (tuple(bbox) if bbox is not None else None)
    src = str(source)
    if src.startswith(("http://", "https://")):
        from pystac_client import Client

        try:
            client = Client.open(src)
            search = client.search(collections=list(collections), bbox=box, datetime=datetime,
                                   max_items=max_items)
            items = list(search.items())
        except Exception as exc:
            raise InputFileError(f"STAC API search failed ({exc.__class__.__name__}: {exc})", where=src,
                                 fix="Check the URL, the network and the collection ids.") from None
    else:
        path = Path(src)
        if not path.exists():
            raise InputFileError("STAC catalog not found", where=src, fix="Check cube.stac.catalog.")
        items = _local_items(path)
        want = set(collections)
        t0, t1 = _parse_time(datetime)
        kept = []
        for it in items:
            if want and it.collection_id not in want:
                continue
            if box is not None and it.bbox is not None:
                ib = it.bbox
                if ib[0] >= box[2] or ib[2] <= box[0] or ib[1] >= box[3] or ib[3] <= box[1]:
                    continue
            s, e = _item_time(it)
            if t0 is not None and e < t0:
                continue
            if t1 is not None and s > t1:
                continue
            kept.append(it)
        items = kept[:max_items] if max_items else kept
    if not items:
        raise GridError(
            f"no item of {list(collections)} intersects bbox {box} and time {datetime!r}",
            where=src,
            fix="The bbox or dates are outside the source: check cube.grid.bbox, cube.stac.datetime "
            "and the collection ids.",
        )
    return pystac.ItemCollection(items)


def item_ids(items) -> list[str]:
    """``collection/id`` of each item (provenance)."""
    return [f"{it.collection_id}/{it.id}" for it in items]


def _check_assets(items, assets: Sequence[str], where: str) -> None:
    for it in items:
        for a in assets:
            if a not in it.assets:
                raise InputFileError(
                    f"item '{it.id}' has no asset '{a}' (it has: {', '.join(sorted(it.assets))})",
                    where=where,
                    fix="Check the product's asset name in globalflux.io.products or the collection.",
                )


def load_products(
    items,
    products: Sequence[str | Product],
    grid: GridSpec,
    *,
    chunks: Mapping[str, int] | None = None,
    groupby: str | None = "solar_day",
    resampling: str | Mapping[str, str] | None = None,
    patch_url: Callable[[str], str] | None = None,
    where: str = "cube.stac",
) -> xr.Dataset:
    """Load products from STAC items onto ``grid`` (lazy) and decode them.

    Parameters
    ----------
    items
        From :func:`search_items`.
    products
        Product names (see :data:`globalflux.io.products.PRODUCTS`) or :class:`Product` objects;
        each loads its asset and, when declared, its QC asset.
    grid
        Target grid; odc-stac reprojects onto exactly this geobox.
    chunks
        Dask chunks of the load (default ``{"time": 1, "y": 1024, "x": 1024}``).
    groupby
        How items are merged into time steps (``"solar_day"`` merges tiles of one date).
    resampling
        Default: ``"nearest"`` for every band (so raw DNs, fill values and QC bits are never
        blended); decoded values may be averaged later with :func:`globalflux.cube.regrid`.
    patch_url
        Signs asset hrefs (Planetary Computer).

    Returns
    -------
    Dataset
        Dims ``(time, y, x)`` with coords exactly ``grid.y``/``grid.x``; one decoded float32
        variable per product (QC-failing, fill and out-of-range pixels NaN); CRS written;
        ``stac_items`` attribute listing the items used.

    Raises
    ------
    InputFileError
        An item lacks an asked asset (named) or an asset cannot be read.
    """
    import odc.stac

    prods = [p if isinstance(p, Product) else product(p) for p in products]
    assets: list[str] = []
    for p in prods:
        for a in (p.asset, p.qc.asset if p.qc else None):
            if a and a not in assets:
                assets.append(a)
    items = list(items)
    _check_assets(items, assets, where)
    ch = dict(chunks) if chunks else {"time": 1, "y": 1024, "x": 1024}
    try:
        raw = odc.stac.load(
            items,
            bands=assets,
            geobox=grid.geobox(),
            chunks=ch,
            groupby=groupby,
            resampling=resampling or "nearest",
            patch_url=patch_url,
            fail_on_error=True,
        )
    except Exception as exc:
        raise InputFileError(f"odc-stac cannot load {assets} ({exc.__class__.__name__}: {exc})", where=where,
                             fix="Check the items' assets and their raster metadata.") from None
    ren = {d: n for d, n in (("latitude", "y"), ("longitude", "x")) if d in raw.dims}
    raw = raw.rename(ren)
    out = {}
    for p in prods:
        qc = raw[p.qc.asset] if p.qc else None
        da = decode_product(raw[p.asset], p, qc)
        da = da.drop_vars([c for c in da.coords if c not in ("time", "y", "x")], errors="ignore")
        out[p.name] = da
    ds = xr.Dataset(out).assign_coords(y=grid.y, x=grid.x)
    t = pd.DatetimeIndex(ds["time"].values)
    if t.tz is not None:
        ds["time"] = t.tz_localize(None)
    ds = ds.rio.write_crs(grid.crs)
    ds.attrs["stac_items"] = json.dumps(item_ids(items))
    return ds
