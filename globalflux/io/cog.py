"""Cloud-Optimized GeoTIFFs of maps: one per time step (or one band stack), with overviews.

Public API
----------
``write_cogs(da, folder, *, prefix=None, nodata=None, overviews=True, tags=None,
per="step", blocksize=None, resume=False, crs=None) -> list[Path]``
    ``da`` is a (time, y, x) or (y, x) DataArray with a CRS (rioxarray ``spatial_ref``) or
    ``crs=``. Each file is written to a temporary GeoTIFF (Dask chunk by chunk), translated
    to a COG by GDAL's COG driver (DEFLATE, internal tiles and overviews), checked
    with ``rio_cogeo.cog_validate``, and only then moved into place (``os.replace``): a file
    with the final name is always a complete, valid COG. ``resume=True`` keeps files already
    present. Tags: CF-ish (``long_name``, ``units``, ``standard_name``, ``time``,
    ``_FillValue``) plus the provenance attributes of the map (version, recipe, synthetic).

``cog_tags(path) -> dict`` reads them back; ``validate_cog(path) -> (ok, errors, warnings)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import DataError, GridError, StoreError

__all__ = ["write_cogs", "cog_tags", "validate_cog", "time_label", "is_categorical"]

# provenance attributes copied into the GeoTIFF tags (long recipe text included)
_PROVENANCE_KEYS = ("title", "source", "globalflux_version", "synthetic", "comment", "history",
                    "recipe", "input_checksums", "Conventions", "institution")


def time_label(t: Any) -> str:
    """``YYYY-MM-DD`` for a datetime, else the value as text (safe in a file name)."""
    try:
        ts = pd.Timestamp(t)
        if not pd.isna(ts) and not isinstance(t, int | np.integer | float | np.floating):
            return ts.strftime("%Y-%m-%d")
    except (TypeError, ValueError):
        pass
    return str(t).replace("/", "-").replace(" ", "_")


def _iso(t: Any) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def _period_bounds(da: xr.DataArray) -> tuple[Any, Any] | None:
    """(starts, exclusive ends) of the time steps when the map says its periods (``time_bnds``
    or ``period_days``); the end written is the last second of the period."""
    if "time" not in da.dims or "time" not in da.coords or da["time"].dtype.kind != "M":
        return None
    if "time_bnds" not in da.coords and "period_days" not in da.coords:
        return None
    from ..query import period_bounds

    start, end = period_bounds(da.coords.to_dataset())
    return start, end - pd.Timedelta(seconds=1)


def _default_blocksize(ny: int, nx: int) -> int:
    """512 px tiles for large maps; smaller power-of-two tiles (>= 16) so small maps still get
    at least one overview level."""
    m = min(ny, nx)
    b = 512
    while b > 16 and b * 2 > m:
        b //= 2
    return b


def _nodata_for(dtype: np.dtype, nodata: Any) -> Any:
    if nodata is not None:
        return nodata
    if np.issubdtype(dtype, np.floating):
        return float("nan")
    if np.issubdtype(dtype, np.signedinteger):
        return -1
    return int(np.iinfo(dtype).max)


def is_categorical(da: xr.DataArray) -> bool:
    """Classes, not quantities: integer or boolean layers, or layers with CF flags (zones, land
    cover, masks). Their overviews use nearest resampling; continuous layers are averaged."""
    return (da.dtype.kind in "iub" or any(k in da.attrs for k in ("flag_values", "flag_meanings",
                                                                   "n_zones")))


def _tags_for(da: xr.DataArray, extra: Mapping[str, Any] | None, t: Any | None,
              nodata: Any) -> dict[str, str]:
    from .store import cf_units

    tags: dict[str, str] = {"variable": str(da.name or "data")}
    for k in ("long_name", "units", "standard_name", "description"):
        if k in da.attrs:
            tags[k] = str(da.attrs[k])
    if "units" in tags:  # UDUNITS-readable (carbon named in the long_name)
        tags["units"], long = cf_units(tags["units"], tags.get("long_name", ""))
        if long:
            tags["long_name"] = long
    if t is not None:
        tags["time"] = time_label(t)
    tags["_FillValue"] = str(nodata)
    for k, v in (extra or {}).items():
        tags[str(k)] = str(v)
    return tags


def _check_grid(da: xr.DataArray, crs: Any) -> xr.DataArray:
    if "x" not in da.dims or "y" not in da.dims:
        raise GridError(f"map dims {da.dims} lack x/y", where=str(da.name or "map"),
                        fix="Give a (time, y, x) or (y, x) DataArray with x/y coordinates.")
    extra = [d for d in da.dims if d not in ("time", "y", "x")]
    if extra:
        raise DataError(f"map has extra dims {extra}", where=str(da.name or "map"),
                        fix="Select one value of each extra dim before writing COGs.")
    import rioxarray  # noqa: F401  (registers .rio)

    if crs is not None:
        da = da.rio.write_crs(crs)
    if da.rio.crs is None:
        raise GridError("map has no CRS", where=str(da.name or "map"),
                        fix="Set it with da.rio.write_crs('EPSG:4326') or pass crs=.")
    return da.rio.set_spatial_dims(x_dim="x", y_dim="y")


def _write_one(da2: xr.DataArray, target: Path, *, nodata: Any, blocksize: int,
               overviews: bool, tags: Mapping[str, str], band_names: list[str],
               resampling: str = "nearest") -> Path:
    """Write one (band, y, x) or (y, x) array as a validated COG, atomically; each band gets the
    ``units`` tag as its unit and ``resampling`` builds the overviews."""
    from rio_cogeo.cogeo import cog_validate

    ny, nx = da2.sizes["y"], da2.sizes["x"]
    tmp = target.with_name(f".{target.name}.{os.getpid()}.raw.tif")
    out_tmp = target.with_name(f".{target.name}.{os.getpid()}.cog.tif")
    try:
        data = da2
        if np.issubdtype(da2.dtype, np.floating) and not (isinstance(nodata, float)
                                                         and math.isnan(nodata)):
            data = da2.fillna(nodata)
        data = data.copy()
        data.encoding = {}
        data.attrs = {k: v for k, v in data.attrs.items() if k not in ("_FillValue", "missing_value")}
        data = data.rio.write_nodata(nodata, encoded=False)
        data.rio.to_raster(tmp, tiled=True, blockxsize=blocksize, blockysize=blocksize,
                           compress="DEFLATE", lock=False if da2.chunks is None else True,
                           driver="GTiff")
        import rasterio

        from rasterio.shutil import copy as gdal_copy

        with rasterio.open(tmp, "r+") as raw:  # tags, band names and units travel to the COG
            raw.update_tags(**dict(tags))
            for i, bname in enumerate(band_names, start=1):
                raw.set_band_description(i, bname)
                if tags.get("units"):
                    raw.set_band_unit(i, tags["units"])
            level = max(1, math.ceil(math.log2(max(ny, nx) / blocksize))) if overviews else 0
            if level:
                from rasterio.enums import Resampling

                raw.build_overviews([2 ** i for i in range(1, level + 1)], Resampling[resampling])
        options = {"TILED": "YES", "BLOCKXSIZE": blocksize, "BLOCKYSIZE": blocksize,
                   "COMPRESS": "DEFLATE", "COPY_SRC_OVERVIEWS": "YES" if level else "NO",
                   "INTERLEAVE": "BAND"}
        if np.issubdtype(da2.dtype, np.floating):
            options["PREDICTOR"] = 3
        # the classic COG recipe: a tiled GeoTIFF with its overviews copied in front (GDAL's
        # CreateCopy keeps tags, band descriptions and units; rio-cogeo's translate drops units)
        gdal_copy(str(tmp), str(out_tmp), driver="GTiff", **options)
        ok, errors, _ = cog_validate(str(out_tmp), quiet=True)
        if not ok:  # pragma: no cover - would be a bug in the writer
            raise StoreError(f"COG validation failed: {errors}", where=str(target),
                             fix="Report this; the partial file was removed.")
        os.replace(out_tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)
        out_tmp.unlink(missing_ok=True)


def write_cogs(
    da: xr.DataArray,
    folder: str | Path,
    *,
    prefix: str | None = None,
    nodata: Any = None,
    overviews: bool = True,
    tags: Mapping[str, Any] | None = None,
    per: Literal["step", "stack"] = "step",
    blocksize: int | None = None,
    resume: bool = False,
    crs: Any = None,
) -> list[Path]:
    """Write a map as Cloud-Optimized GeoTIFF(s); return the paths written (in time order).

    Parameters
    ----------
    da
        (time, y, x) or (y, x) DataArray, lazy or not, with a CRS (``da.rio.crs``) or ``crs``.
        Its attrs ``long_name``/``units``/``standard_name`` become tags.
    folder
        Output folder (created).
    prefix
        File name prefix; default the DataArray's name. Files are ``{prefix}_{YYYY-MM-DD}.tif``
        per time step, ``{prefix}.tif`` for a 2-D map or a band stack.
    nodata
        Value marking no data (NaN for floats, -1 for signed ints by default); also written as
        the ``_FillValue`` tag.
    overviews
        Build internal overviews (at least one level): averaged for continuous layers, nearest
        for categorical ones (:func:`is_categorical`: integer/boolean or CF flags).
    tags
        Extra GeoTIFF tags, e.g. the map's provenance attributes (``ds.attrs``): the keys
        ``title, source, globalflux_version, synthetic, comment, history, recipe,
        input_checksums, Conventions, institution`` are kept, other keys too.
    per
        ``"step"``: one COG per time step; ``"stack"``: one COG with one band per time step
        (band descriptions are the time labels).
    blocksize
        Internal tile size in pixels (multiple of 16); default 512, smaller for small maps.
    resume
        Keep COGs that already exist (they are complete: files appear only when finished);
        False refuses to overwrite an existing file.
    crs
        CRS to set when ``da`` carries none.

    Raises
    ------
    GridError
        No CRS or no x/y dims. ``StoreError``: a file exists and ``resume`` is False.
    """
    da = _check_grid(da, crs)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = str(da.name or "map")
    prefix = prefix or name
    nodata = _nodata_for(da.dtype, nodata)
    bs = blocksize or _default_blocksize(da.sizes["y"], da.sizes["x"])
    if bs % 16:
        raise DataError(f"blocksize {bs} is not a multiple of 16", where="write_cogs(blocksize=)",
                        fix="Use 256 or 512.")
    extra = dict(tags or {})
    bounds = _period_bounds(da)
    if bounds is not None and per != "step":
        extra.setdefault("start_datetime", _iso(bounds[0][0]))
        extra.setdefault("end_datetime", _iso(bounds[1][-1]))
    jobs: list[tuple[Path, xr.DataArray, Any, list[str]]] = []
    step_tags: dict[Path, dict[str, str]] = {}
    if "time" in da.dims and per == "step":
        for i in range(da.sizes["time"]):
            t = da["time"].values[i] if "time" in da.coords else i
            target = folder / f"{prefix}_{time_label(t)}.tif"
            if bounds is not None:  # the period the step stands for (STAC start/end_datetime)
                step_tags[target] = {"start_datetime": _iso(bounds[0][i]),
                                     "end_datetime": _iso(bounds[1][i])}
            jobs.append((target, da.isel(time=i).transpose("y", "x"), t, [name]))
    elif "time" in da.dims:
        labels = [time_label(t) for t in (da["time"].values if "time" in da.coords
                                          else range(da.sizes["time"]))]
        extra.setdefault("times", ",".join(labels))
        stack = da.transpose("time", "y", "x").rename(time="band")
        stack = stack.assign_coords(band=np.arange(1, len(labels) + 1))
        jobs.append((folder / f"{prefix}.tif", stack, None, [f"{name} {lab}" for lab in labels]))
    else:
        jobs.append((folder / f"{prefix}.tif", da.transpose("y", "x"), None, [name]))
    written: list[Path] = []
    for target, arr, t, bands in jobs:
        if target.exists():
            if resume:
                written.append(target)
                continue
            raise StoreError("COG exists", where=str(target),
                             fix="Use --resume to keep it, --overwrite, or another --out.")
        arr = arr.drop_vars([c for c in arr.coords if c not in ("x", "y", "band", "spatial_ref")])
        _write_one(arr, target, nodata=nodata, blocksize=bs, overviews=overviews,
                   tags=_tags_for(da, {**extra, **step_tags.get(target, {})}, t, nodata),
                   band_names=bands,
                   resampling="nearest" if is_categorical(da) else "average")
        written.append(target)
    return written


def cog_tags(path: str | Path) -> dict[str, str]:
    """The dataset-level GeoTIFF tags of a COG."""
    import rasterio

    with rasterio.open(path) as src:
        return dict(src.tags())


def validate_cog(path: str | Path) -> tuple[bool, list[str], list[str]]:
    """``rio_cogeo.cog_validate`` of a file: (is_valid, errors, warnings)."""
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(str(path), quiet=True)
