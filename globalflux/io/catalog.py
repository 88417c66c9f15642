"""A STAC Collection + Items describing the map products (pystac), loadable by odc-stac.

Public API
----------
``write_catalog(cogs, folder, *, collection_id, title=None, description="", store=None,
license="other", keywords=(), synthetic=None) -> Path``
    ``cogs`` are COG paths (from :func:`globalflux.io.cog.write_cogs`, any variables). COGs are
    grouped into one Item per time step (their ``time`` tag; a COG without one is its own
    Item); each variable is an asset named after its ``variable`` tag, with the projection
    (``proj:code``, ``proj:shape``, ``proj:transform``, ``proj:bbox``) and raster
    (``nodata``, ``data_type``, ``unit``) extensions filled from the file, so
    ``odc.stac.load(items, bands=[...])`` needs no guessing. The Zarr store (if given) is a
    Collection asset. The catalog is written self-contained (relative hrefs) as
    ``folder/collection.json`` with Items under ``folder/<item id>/``. Returns the path of
    ``collection.json``.

``load_items(collection_json) -> list[pystac.Item]`` reads the Items back.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, GlobalfluxError, InputFileError

log = logging.getLogger("globalflux")

__all__ = ["write_catalog", "load_items"]

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
ZARR_MEDIA_TYPE = "application/vnd+zarr"


def _cog_info(path: Path) -> dict[str, Any]:
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as src:
        tags = src.tags()
        crs = src.crs
        if crs is None:
            raise DataError("COG has no CRS", where=str(path),
                            fix="Write it with globalflux.io.cog.write_cogs from a map with a CRS.")
        bounds = tuple(src.bounds)
        try:
            bbox = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
        except Exception:  # pragma: no cover - exotic CRS
            bbox = bounds
        epsg = crs.to_epsg()
        return {
            "tags": tags,
            "code": f"EPSG:{epsg}" if epsg else None,
            "wkt2": None if epsg else crs.to_wkt(),
            "shape": [src.height, src.width],
            "transform": list(src.transform)[:6],
            "proj_bbox": list(bounds),
            "bbox": [float(v) for v in bbox],
            "nodata": src.nodata,
            "dtype": src.dtypes[0],
            "count": src.count,
        }


def _datetime(label: str | None) -> _dt.datetime | None:
    if not label:
        return None
    try:
        ts = pd.Timestamp(label)
    except (TypeError, ValueError):
        return None
    if pd.isna(ts):
        return None
    return ts.to_pydatetime().replace(tzinfo=_dt.UTC)


def _nodata_json(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and np.isnan(v):
        return "nan"
    return v


def write_catalog(
    cogs: Iterable[str | Path],
    folder: str | Path,
    *,
    collection_id: str,
    title: str | None = None,
    description: str = "",
    store: str | Path | None = None,
    license: str = "other",
    keywords: Sequence[str] = (),
    synthetic: bool | None = None,
    license_text: str | None = None,
) -> Path:
    """Write a self-contained STAC Collection describing COG (and Zarr) products.

    Parameters
    ----------
    cogs
        COG files, e.g. every file written by :func:`globalflux.io.cog.write_cogs`.
    folder
        Catalog folder (created); COG hrefs are made relative to it.
    collection_id
        STAC id of the Collection (e.g. the recipe name).
    title, description, license, keywords
        Collection metadata (``license`` an SPDX id or ``"other"``). Every Collection gets a
        ``license`` link: the SPDX page of an SPDX id, else ``LICENSE.md`` written beside
        ``collection.json`` with ``license_text`` (default: how the products may be used).
    store
        Optional Zarr store of the same maps, added as a Collection asset.
    synthetic
        Mark the Collection (and each Item) ``globalflux:synthetic``; default from the COGs'
        ``synthetic`` tag.

    Returns
    -------
    Path of ``collection.json``.
    """
    import pystac
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterBand, RasterExtension

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [Path(p).resolve() for p in cogs]
    if not paths:
        raise DataError("no COGs to describe", where="write_catalog",
                        fix="Write the COGs first (mapping.cog: true).")
    for p in paths:
        if not p.is_file():
            raise InputFileError("COG not found", where=str(p), fix="Check the path.")
    infos = {p: _cog_info(p) for p in paths}

    groups: dict[str, list[Path]] = {}
    for p, info in infos.items():
        t = info["tags"].get("time")
        key = t if t else p.stem
        groups.setdefault(key, []).append(p)

    if synthetic is None:
        synthetic = any(i["tags"].get("synthetic") == "true" for i in infos.values())
    items = []
    for key, group in sorted(groups.items()):
        first = infos[group[0]]
        dt = _datetime(first["tags"].get("time"))
        props: dict[str, Any] = {"globalflux:synthetic": bool(synthetic)}
        if first["tags"].get("globalflux_version"):
            props["globalflux:version"] = first["tags"]["globalflux_version"]
        tag_start = _datetime(first["tags"].get("start_datetime"))
        tag_end = _datetime(first["tags"].get("end_datetime"))
        if tag_start is not None and tag_end is not None:  # the period the item stands for
            props["start_datetime"] = tag_start.isoformat()
            props["end_datetime"] = tag_end.isoformat()
            item_dt = dt or tag_start
        elif dt is None:  # a static map or a band stack: its time span, if tagged
            times = [t for t in first["tags"].get("times", "").split(",") if t]
            start = _datetime(times[0]) if times else None
            end = _datetime(times[-1]) if times else None
            dt_use = start or _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
            props["start_datetime"] = (start or dt_use).isoformat()
            props["end_datetime"] = (end or dt_use).isoformat()
            item_dt = None
        else:
            item_dt = dt
        if item_dt is not None and "start_datetime" in props and dt is None:
            item_dt = None
        bboxes = np.array([infos[p]["bbox"] for p in group])
        bbox = [float(bboxes[:, 0].min()), float(bboxes[:, 1].min()),
                float(bboxes[:, 2].max()), float(bboxes[:, 3].max())]
        geom = {
            "type": "Polygon",
            "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]],
                             [bbox[0], bbox[3]], [bbox[0], bbox[1]]]],
        }
        item_id = f"{collection_id}-{key}"
        item = pystac.Item(item_id, geom, bbox, item_dt, props, collection=collection_id)
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        RasterExtension.add_to(item)
        for p in group:
            info = infos[p]
            var = info["tags"].get("variable", p.stem)
            asset = pystac.Asset(
                href=str(p), media_type=COG_MEDIA_TYPE, roles=["data"],
                title=info["tags"].get("long_name", var),
            )
            item.add_asset(var, asset)
            pa = ProjectionExtension.ext(asset)
            pa.apply(code=info["code"], wkt2=info["wkt2"], shape=info["shape"],
                     transform=info["transform"], bbox=info["proj_bbox"])
            bands = [RasterBand.create(nodata=_nodata_json(info["nodata"]),
                                       data_type=info["dtype"], unit=info["tags"].get("units"))
                     for _ in range(info["count"])]
            RasterExtension.ext(asset).apply(bands)
        del proj
        items.append(item)

    all_bbox = np.array([it.bbox for it in items])
    spatial = pystac.SpatialExtent([[float(all_bbox[:, 0].min()), float(all_bbox[:, 1].min()),
                                     float(all_bbox[:, 2].max()), float(all_bbox[:, 3].max())]])
    times = []
    for it in items:
        if it.datetime is not None:
            times.append(it.datetime)
        else:
            times.extend([_datetime(it.properties["start_datetime"]),
                          _datetime(it.properties["end_datetime"])])
    times = [t for t in times if t is not None]
    temporal = pystac.TemporalExtent([[min(times), max(times)]] if times else [[None, None]])
    desc = description or f"globalflux map products of {collection_id}"
    if synthetic:
        from ..provenance import SYNTHETIC_NOTE

        desc = f"{desc}\n\n{SYNTHETIC_NOTE}"
    name = title or collection_id
    if synthetic and "SYNTHETIC" not in name:
        name = f"SYNTHETIC {name}"
    coll = pystac.Collection(
        id=collection_id,
        description=desc,
        extent=pystac.Extent(spatial, temporal),
        title=name,
        license=license,
        keywords=list(keywords),
        extra_fields={"globalflux:synthetic": bool(synthetic)},
    )
    _license_link(coll, folder, license, license_text)
    coll.item_assets = _item_assets(items)
    if store is not None:
        coll.add_asset("zarr", _zarr_asset(Path(store), folder))
    coll.add_items(items)
    target = folder / "collection.json"
    tmp_dir = folder
    if store is not None:
        from pystac.extensions.datacube import DatacubeExtension

        DatacubeExtension.add_to(coll)
    coll.normalize_hrefs(str(tmp_dir))
    coll.make_all_asset_hrefs_relative()
    coll.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, dest_href=str(folder))
    if not target.is_file():  # pragma: no cover - pystac naming changed
        raise DataError("pystac did not write collection.json", where=str(folder),
                        fix="Report this with the pystac version.")
    os.utime(target)
    return target


_DEFAULT_LICENSE_TEXT = """# Terms of these map products

These maps were produced by globalflux (MIT licence) from the inputs named in each file's
provenance attributes (`recipe`, `input_checksums`). Their terms follow from those inputs: maps
of the SYNTHETIC demo world are free to use; maps made from real data carry the attribution
duties of the data sets they were trained on (COSORE: CC BY 4.0; SRDB, gsbe: MIT; see the
globalflux README, "Real data").
"""


def _license_link(coll: Any, folder: Path, license: str, text: str | None) -> None:
    import pystac

    if license.lower() in ("other", "proprietary", "various"):
        target = folder / "LICENSE.md"
        target.write_text(text or _DEFAULT_LICENSE_TEXT, encoding="utf-8")
        coll.add_link(pystac.Link("license", "./LICENSE.md", media_type="text/markdown",
                                  title="terms of these products"))
    else:
        coll.add_link(pystac.Link("license", f"https://spdx.org/licenses/{license}.html",
                                  media_type="text/html", title=f"{license} licence"))


def _item_assets(items: list[Any]) -> dict[str, Any]:
    """One ``item_assets`` definition per asset key found in the Items (type, roles, bands)."""
    import pystac

    out: dict[str, Any] = {}
    for it in items:
        for key, asset in it.assets.items():
            if key in out:
                continue
            props: dict[str, Any] = {"type": asset.media_type, "roles": list(asset.roles or []),
                                     "title": asset.title or key}
            bands = asset.extra_fields.get("raster:bands")
            if bands:
                props["raster:bands"] = [{k: b[k] for k in ("data_type", "unit", "nodata")
                                          if k in b} for b in bands]
            out[key] = pystac.ItemAssetDefinition.create(
                title=props.pop("title"), description=None, media_type=props.pop("type"),
                roles=props.pop("roles"), extra_fields=props)
    return out


def _zarr_asset(store: Path, folder: Path) -> Any:
    """The Zarr store as a Collection asset: href relative to the catalog folder, and the
    datacube extension's ``cube:dimensions`` / ``cube:variables`` from its metadata."""
    import pystac

    from .store import open_dataset

    href = os.path.relpath(store.resolve(), folder)
    asset = pystac.Asset(href=href, media_type=ZARR_MEDIA_TYPE, roles=["data"],
                         title="Zarr store of the maps")
    try:
        ds = open_dataset(store, chunks={})
    except GlobalfluxError as exc:  # not (yet) a Zarr store: no datacube fields
        log.warning("STAC: no datacube fields for %s (%s)", store, exc)
        return asset
    import rioxarray  # noqa: F401

    crs = ds.rio.crs
    epsg = crs.to_epsg() if crs is not None else None
    dims: dict[str, Any] = {}
    for d in ds.dims:
        if d in ("x", "y"):
            vals = ds[d].values
            step = float(vals[1] - vals[0]) if len(vals) > 1 else None
            dims[d] = {"type": "spatial", "axis": d,
                       "extent": [float(vals.min()), float(vals.max())],
                       **({"step": step} if step is not None else {}),
                       **({"reference_system": epsg} if epsg else {})}
        elif d == "time" and ds["time"].dtype.kind == "M":
            t = pd.DatetimeIndex(ds["time"].values)
            dims[d] = {"type": "temporal", "extent": [t.min().strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                      t.max().strftime("%Y-%m-%dT%H:%M:%SZ")],
                       "values": [v.strftime("%Y-%m-%dT%H:%M:%SZ") for v in t]
                       if len(t) <= 400 else None}
            if dims[d]["values"] is None:
                del dims[d]["values"]
        elif d in ds.coords:
            dims[d] = {"type": str(d), "values": [str(v) for v in ds[d].values[:1000]]}
    variables = {
        str(n): {"dimensions": [str(d) for d in v.dims], "type": "data",
                 **({"unit": str(v.attrs["units"])} if "units" in v.attrs else {}),
                 **({"description": str(v.attrs["long_name"])} if "long_name" in v.attrs else {})}
        for n, v in ds.data_vars.items()
    }
    asset.extra_fields["cube:dimensions"] = dims
    asset.extra_fields["cube:variables"] = variables
    return asset


def load_items(collection_json: str | Path) -> list[Any]:
    """The Items of a collection written by :func:`write_catalog` (hrefs made absolute)."""
    import pystac

    path = Path(collection_json)
    if not path.is_file():
        raise InputFileError("STAC collection not found", where=str(path), fix="Check the path.")
    coll = pystac.Collection.from_file(str(path))
    items = list(coll.get_items(recursive=True))
    for it in items:
        it.make_asset_hrefs_absolute()
    return items


def publish_store(
    store: str | Path,
    cog_folder: str | Path,
    stac_folder: str | Path | None = None,
    *,
    collection_id: str,
    variables: Sequence[str] | None = None,
    mapping: Any = None,
    resume: bool = False,
) -> dict[str, Any]:
    """COGs of every map variable of a finished store, and (optionally) the STAC catalog.

    Parameters
    ----------
    store
        A Zarr map store (e.g. from :func:`globalflux.mapping.map_to_store`); its attributes
        (provenance, ``synthetic``) become COG tags.
    cog_folder, stac_folder
        Where the COGs and the catalog go (``stac_folder`` None: no catalog).
    collection_id
        STAC id (e.g. the recipe name); COG prefixes are the variable names.
    variables
        Variables to export (default: every variable with x/y dims).
    mapping
        The recipe's :class:`~globalflux.config.MappingConfig`: ``cog_per``,
        ``cog_overviews`` and ``catalog`` are honoured (defaults when None).
    resume
        Keep COGs already written.

    Returns
    -------
    ``{"cogs": [paths], "catalog": path or None}``
    """
    from .cog import _PROVENANCE_KEYS, write_cogs
    from .store import open_dataset

    ds = open_dataset(store, chunks={})
    import rioxarray  # noqa: F401

    if ds.rio.crs is None and "spatial_ref" in ds.coords:
        ds = ds.rio.write_crs(ds["spatial_ref"].attrs.get("crs_wkt", ds["spatial_ref"].attrs.get(
            "spatial_ref")))
    names = list(variables) if variables is not None else [
        n for n, v in ds.data_vars.items() if "x" in v.dims and "y" in v.dims]
    unknown = [n for n in names if n not in ds.data_vars]
    if unknown:
        raise DataError(f"unknown variable(s) {unknown}", where=str(store),
                        fix=f"Choose from: {', '.join(map(str, ds.data_vars))}.")
    tags = {k: str(v) for k, v in ds.attrs.items() if k in _PROVENANCE_KEYS}
    per = getattr(mapping, "cog_per", "step")
    overviews = bool(getattr(mapping, "cog_overviews", True))
    cogs: list[Path] = []
    for n in names:
        da = ds[n]
        if da.dtype == bool:
            da = da.astype("uint8")
        cogs += write_cogs(da, cog_folder, prefix=n, per=per, overviews=overviews, tags=tags,
                           resume=resume)
    catalog = None
    if stac_folder is not None and bool(getattr(mapping, "catalog", True)) and cogs:
        catalog = write_catalog(cogs, stac_folder, collection_id=collection_id, store=store,
                                synthetic=tags.get("synthetic") == "true",
                                description=str(ds.attrs.get("title", "")))
    return {"cogs": cogs, "catalog": catalog}


__all__ += ["publish_store"]
