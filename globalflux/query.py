"""Regional subsets of map stores: by bounding box, point, zone, time and variable.

Public API
----------
``open_map(store) -> xr.Dataset``
    The store, lazily. A store still being written (not marked complete) shows only its
    completed blocks (those recorded in the manifest); every other pixel reads as missing.

``query(store, *, bbox=None, point=None, zone=None, time=None, var=None)``
    A lazy subset: a Dataset, or a DataArray when ``var`` is given. ``store`` is a path or an
    already opened Dataset. ``bbox`` is ``(W, S, E, N)`` (or ``"W,S,E,N"``) in the map's CRS
    units (degrees for EPSG:4326), clipped to the map; ``point`` is ``(x, y)`` / ``"LON,LAT"``,
    the nearest pixel (a time series); ``zone`` keeps pixels whose ``zone`` variable equals
    it; ``time`` is ``"START"`` or ``"START/END"`` (inclusive, any date text pandas reads; a
    date without a time of day covers the whole day): every time step whose *period* overlaps
    it is kept (8-day periods from ``time_bnds``/``period_days``), so ``--time 2020-07-01``
    selects the 8-day period 2020-06-27..07-04 that holds that day.

``cli_main(args) -> int``
    ``globalflux query STORE [--bbox W,S,E,N] [--point LON,LAT] [--zone N] [--time START[/END]]
    [--var NAME] --out FILE`` writes ``.nc`` (NetCDF4), ``.csv`` (a point series, or a long
    table of a small region), ``.tif`` (a COG; one band per time step) or ``.png`` (a map of
    the first/only time step, the time mean when several, or a line plot for a point).

Bad inputs raise :class:`~globalflux.errors.GlobalfluxError` subclasses naming the input
(the CLI exits with code 2): a bbox or point outside the map (GridError), an unknown variable,
zone or time outside the map (DataError), a missing store (InputFileError).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .errors import DataError, GlobalfluxError, GridError, InputFileError
from .grid import BBox
from .io.paths import TMP_PREFIX, atomic_target, check_output_file, writing

__all__ = ["open_map", "query", "cli_main", "map_extent", "period_bounds"]

log = logging.getLogger("globalflux")
#: subsets up to this size are read before the output is opened (a damaged chunk leaves no trace)
MAX_EAGER_BYTES = 1 << 30

#: largest subset written as a long CSV table (cells); bigger ones should go to NetCDF
MAX_CSV_CELLS = 5_000_000


def _done_mask_block(block_info=None, *, done: np.ndarray, dtype=bool) -> np.ndarray:
    """Module-level: True over a block when its (store) block index is recorded complete."""
    info = block_info[None]
    loc = tuple(info["chunk-location"])
    shape = tuple(info["chunk-shape"])
    return np.full(shape, bool(done[loc]), dtype=bool)


def open_map(store: str | Path) -> xr.Dataset:
    """Open a map store lazily; an incomplete store shows only completed blocks.

    Parameters
    ----------
    store
        A Zarr store written by :func:`globalflux.mapping.map_to_store` (or any Zarr store of
        maps; stores without a manifest are shown as they are).
    """
    import dask.array as dsa

    from .io.store import StoreLayout, completed_blocks, is_complete, open_dataset, read_manifest

    ds = open_dataset(store, chunks={})
    header = read_manifest(store)
    if header is None or is_complete(store):
        return ds
    layout = StoreLayout.from_json(header["layout"])
    done = np.zeros(layout.numblocks, dtype=bool)
    for b in completed_blocks(store):
        if len(b) == len(layout.numblocks) and all(i < n for i, n in zip(b, layout.numblocks)):
            done[b] = True
    log.info("store %s is being written: %d of %d blocks complete; showing only those",
             store, int(done.sum()), layout.nblocks)
    chunks = tuple(
        tuple(min(c, n - i) for i in range(0, n, c)) for n, c in zip(layout.shape, layout.chunks)
    )
    full = xr.DataArray(
        dsa.map_blocks(_done_mask_block, done=done, chunks=chunks, dtype=bool,
                       meta=np.array((), dtype=bool)),
        dims=layout.dims,
    )
    out = ds.copy()
    for name, vdims in layout.variables:
        if name not in out:
            continue
        # a variable missing a block dim is complete where its index-0 blocks are
        m = full.isel({d: 0 for d in layout.dims if d not in vdims})
        out[name] = ds[name].where(m.transpose(*ds[name].dims).data)
    out.attrs["globalflux_partial"] = f"{int(done.sum())}/{layout.nblocks} blocks complete"
    return out


def map_extent(ds: xr.Dataset) -> BBox:
    """Outer pixel edges of a map (x/y pixel-centre coordinates, regular spacing)."""
    if "x" not in ds.coords or "y" not in ds.coords:
        raise GridError("map has no x/y coordinates", where="store",
                        fix="Query a map written by globalflux (dims time, y, x).")
    x = np.asarray(ds["x"].values, dtype=float)
    y = np.asarray(ds["y"].values, dtype=float)
    dx = abs(float(x[1] - x[0])) if x.size > 1 else 0.0
    dy = abs(float(y[1] - y[0])) if y.size > 1 else 0.0
    return BBox(float(x.min() - dx / 2), float(y.min() - dy / 2), float(x.max() + dx / 2),
                float(y.max() + dy / 2))


def _parse_pair(text: Any, what: str) -> tuple[float, float]:
    if isinstance(text, str):
        try:
            parts = [float(p) for p in text.split(",")]
        except ValueError:
            parts = []
    else:
        try:
            parts = [float(p) for p in text]
        except (TypeError, ValueError):
            parts = []
    if len(parts) != 2 or not all(np.isfinite(parts)):
        raise GridError(f"got {text!r}", where=what, fix="Write it as LON,LAT (x,y) numbers.")
    return parts[0], parts[1]


def period_bounds(ds: xr.Dataset) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    """Start and (exclusive) end of each time step of a map: from ``time_bnds``, else from
    ``period_days`` (8-day periods), else each step is the instant ``time`` (end = time + 1 ns)."""
    t = pd.DatetimeIndex(ds["time"].values)
    if "time_bnds" in ds.coords or "time_bnds" in ds.data_vars:
        b = np.asarray(ds["time_bnds"].values)
        if b.ndim == 2 and b.shape[1] == 2 and np.issubdtype(b.dtype, np.datetime64):
            return pd.DatetimeIndex(b[:, 0]), pd.DatetimeIndex(b[:, 1])
    if "period_days" in ds.coords:
        days = np.asarray(ds["period_days"].values, dtype="int64")
        return t, t + pd.to_timedelta(days, unit="D")
    return t, t + pd.Timedelta(1, "ns")


def _parse_time(text: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
    """START or START/END (inclusive) as timestamps; a date without a time of day covers the
    whole day (its END is the last instant of that day)."""
    if isinstance(text, str):
        parts = text.split("/")
    elif isinstance(text, Sequence):
        parts = list(text)
    else:
        parts = [text]
    if len(parts) not in (1, 2) or any(str(p).strip() == "" for p in parts):
        raise DataError(f"got {text!r}", where="--time", fix="Write START or START/END dates.")
    try:
        start = pd.Timestamp(parts[0])
        end = pd.Timestamp(parts[-1])
    except (TypeError, ValueError):
        raise DataError(f"cannot read {text!r} as dates", where="--time",
                        fix="Write dates like 2020-01-01 or 2020-01-01/2020-12-31.") from None
    if end < start:
        raise DataError(f"end {end.date()} is before start {start.date()}", where="--time",
                        fix="Write START/END with START <= END.")
    if end == end.normalize() and ("T" not in str(parts[-1]) and ":" not in str(parts[-1])):
        end = end + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")  # the whole END day
    return start, end


def query(
    store: str | Path | xr.Dataset,
    *,
    bbox: Any = None,
    point: Any = None,
    zone: int | None = None,
    time: Any = None,
    var: str | Sequence[str] | None = None,
    label: str | None = None,
) -> xr.Dataset | xr.DataArray:
    """A lazy regional subset of a map store (see the module docstring for each selector).

    ``label`` names the store in error messages when ``store`` is an opened Dataset.

    Returns
    -------
    xr.Dataset, or xr.DataArray when ``var`` is one name. Nothing is computed.
    """
    ds = store if isinstance(store, xr.Dataset) else open_map(store)
    where = label or ("store" if isinstance(store, xr.Dataset) else str(store))
    if bbox is not None and point is not None:
        raise DataError("both --bbox and --point given", where="query",
                        fix="Give one of them.")
    # ---- variables
    names = [var] if isinstance(var, str) else (list(var) if var is not None else None)
    if names is not None:
        unknown = [n for n in names if n not in ds.data_vars]
        if unknown:
            raise DataError(f"unknown variable(s) {unknown}", where=f"--var ({where})",
                            fix=f"Choose from: {', '.join(sorted(map(str, ds.data_vars)))}.")
    # ---- zone (before dropping variables: it may not be among the requested ones)
    if zone is not None:
        if "zone" not in ds.data_vars:
            raise DataError("the map has no 'zone' variable", where=f"--zone ({where})",
                            fix="Query a map written with zones, or leave out --zone.")
        nz = ds["zone"].attrs.get("n_zones")
        if nz is not None and not (0 <= int(zone) < int(nz)):
            raise DataError(f"zone {zone} is not among the map's zones 0..{int(nz) - 1}",
                            where="--zone", fix=f"Choose a zone from 0 to {int(nz) - 1}.")
        keep = ds["zone"] == int(zone)
        ds = ds.assign({k: v.where(keep) for k, v in ds.data_vars.items()})
    if names is not None:
        ds = ds[names]
    # ---- time
    if time is not None:
        if "time" not in ds.dims:
            raise DataError("the map has no time axis", where="--time",
                            fix="Leave out --time for a static map.")
        start, end = _parse_time(time)
        if not np.issubdtype(ds["time"].dtype, np.datetime64):
            raise DataError(f"the map's time axis holds {ds['time'].dtype} values, not dates",
                            where="--time", fix="Leave out --time for this map.")
        t0, t1 = period_bounds(ds)
        sel = np.nonzero((t0 <= end) & (t1 > start))[0]
        if sel.size == 0:
            raise DataError(f"{start.date()}..{end.date()} is outside the map's time axis "
                            f"{t0.min().date()}..{(t1.max() - pd.Timedelta(1, 'ns')).date()}",
                            where="--time", fix="Choose dates inside the map's time axis.")
        ds = ds.isel(time=sel)
    # ---- space
    ext = map_extent(ds)
    if bbox is not None:
        box = bbox if isinstance(bbox, BBox) else (
            BBox.parse(bbox, where="--bbox") if isinstance(bbox, str) else BBox(*bbox))
        inter = ext.intersection(box)
        if inter is None:
            raise GridError(f"bbox {box.as_tuple()} is outside the map extent {ext.as_tuple()}",
                            where="--bbox",
                            fix="Give W,S,E,N overlapping the map (in the map's CRS units).")
        x = np.asarray(ds["x"].values)
        y = np.asarray(ds["y"].values)
        ix = np.nonzero((x >= box.west) & (x <= box.east))[0]
        iy = np.nonzero((y >= box.south) & (y <= box.north))[0]
        if ix.size == 0 or iy.size == 0:
            raise GridError(f"bbox {box.as_tuple()} holds no pixel centre of the map",
                            where="--bbox", fix="Enlarge the bbox to at least one pixel.")
        ds = ds.isel(x=slice(ix.min(), ix.max() + 1), y=slice(iy.min(), iy.max() + 1))
    if point is not None:
        px, py = _parse_pair(point, "--point")
        if not (ext.west <= px <= ext.east and ext.south <= py <= ext.north):
            raise GridError(f"point ({px:g}, {py:g}) is outside the map extent {ext.as_tuple()}",
                            where="--point", fix="Give LON,LAT inside the map.")
        ds = ds.sel(x=px, y=py, method="nearest")
    if names is not None and len(names) == 1:
        return ds[names[0]]
    return ds


# ------------------------------------------------------------------------------------ writers


def _write_nc(obj, out: Path, attrs: dict) -> None:
    ds = obj.to_dataset() if isinstance(obj, xr.DataArray) else obj
    from .io.store import cf_encode

    ds = ds.copy()
    for v in ds.variables:
        ds[v].encoding = {}
    ds = cf_encode(ds)  # grid_mapping, integer fill values, time bounds: GDAL finds the CRS
    ds.attrs = {k: (v if isinstance(v, str | int | float) else str(v))
                for k, v in {**attrs, **ds.attrs}.items()}
    with atomic_target(out) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def _write_csv(obj, out: Path) -> None:
    ds = obj.to_dataset() if isinstance(obj, xr.DataArray) else obj
    cells = int(np.prod([ds.sizes[d] for d in ds.dims])) if ds.dims else 1
    if cells > MAX_CSV_CELLS:
        raise DataError(f"the subset has {cells} cells, too many for CSV", where=str(out),
                        fix="Use a smaller --bbox, a --point, or write .nc.")
    keep = [c for c in ds.coords if c in ds.dims or c in ("x", "y", "time")]
    ds = ds.reset_coords([c for c in ds.coords if c not in keep], drop=True)
    df = ds.to_dataframe()
    if ds.dims:
        df = df.reset_index()
    else:
        df = df.reset_index(drop=True)
    for c in ("x", "y"):
        if c not in df.columns and c in ds.coords:
            df[c] = float(ds[c].values)
    data_cols = list(ds.data_vars)
    if len(ds.dims) > 1:
        df = df.dropna(subset=data_cols, how="all")
    with atomic_target(out) as tmp:
        df.to_csv(tmp, index=False)


def _one_variable(obj, what: str) -> xr.DataArray:
    """The single variable of ``obj`` (a DataArray passes through); more than one is an error."""
    if isinstance(obj, xr.Dataset):
        if len(obj.data_vars) != 1:
            raise DataError(f"{what}; the subset has {list(obj.data_vars)}",
                            where="--var", fix="Choose one with --var NAME.")
        obj = obj[list(obj.data_vars)[0]]
    return obj


def _write_tif(obj, out: Path, attrs: dict) -> None:
    import rioxarray  # noqa: F401  (registers .rio)

    from .io.cog import write_cogs

    obj = _one_variable(obj, "GeoTIFF holds one variable")
    if "x" not in obj.dims or "y" not in obj.dims:
        raise DataError("a point series cannot be a GeoTIFF", where=str(out),
                        fix="Write the point series to .csv or .png.")
    tags = {k: v for k, v in attrs.items() if k in ("title", "source", "globalflux_version",
                                                     "synthetic", "comment", "history")}
    # written in a private folder beside --out, then renamed to exactly --out (x.tiff stays .tiff);
    # an existing file is only replaced by that rename, never deleted first
    import shutil
    import tempfile

    tmpdir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=out.parent))
    try:
        written = write_cogs(obj, tmpdir, prefix="subset", per="stack", tags=tags)
        os.replace(written[0], out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _write_png(obj, out: Path, attrs: dict) -> None:
    from .report import _plt, map_png, stamp

    obj = _one_variable(obj, "a PNG shows one variable")
    synthetic = str(attrs.get("synthetic", "false")) == "true"
    units = str(obj.attrs.get("units", ""))
    name = str(obj.name)
    if "x" in obj.dims and "y" in obj.dims:
        title = name
        if "time" in obj.dims:
            if obj.sizes["time"] > 1:
                t = pd.DatetimeIndex(obj["time"].values)
                title = f"{name}: mean {t.min().date()}..{t.max().date()}"
                obj = obj.mean("time")
            else:
                obj = obj.isel(time=0)
        map_png(obj.compute(), out, title=title, units=units, synthetic=synthetic,
                categorical=name == "zone")
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    s = obj.compute()
    if "time" in s.dims:
        ax.plot(pd.DatetimeIndex(s["time"].values), s.values, marker=".", lw=1)
        ax.set_xlabel("time")
    else:
        ax.bar([name], [float(s.values)])
    ax.set_ylabel(f"{name} ({units})" if units else name)
    ax.set_title(f"{name} at x={float(s['x']):.4g}, y={float(s['y']):.4g}")
    stamp(fig, synthetic)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def cli_main(args) -> int:
    """``globalflux query``: see the module docstring; returns 0 (errors raise)."""
    out = Path(args.out)
    ext = out.suffix.lower()
    if ext not in (".nc", ".csv", ".tif", ".tiff", ".png"):
        raise DataError(f"unknown output type {out.suffix!r}", where=f"--out {out}",
                        fix="Use .nc, .csv, .tif or .png.")
    check_output_file(out, what="--out", overwrite=bool(getattr(args, "overwrite", False)))
    store = Path(args.store)
    if not store.exists():
        raise InputFileError("store not found", where=str(store),
                             fix="Give the maps/*.zarr folder of a run.")
    if out.resolve() == store.resolve() or store.resolve() in out.resolve().parents:
        raise InputFileError("is inside the store it reads", where=f"--out {out}",
                             fix="Write the subset outside the Zarr store.")
    ds = open_map(store)
    attrs = dict(ds.attrs)
    sub = query(ds, bbox=args.bbox, point=args.point, zone=args.zone, time=args.time,
                var=args.var, label=str(store))
    if args.zone is not None:
        zmap = ds["zone"]
        if not bool((zmap == int(args.zone)).any().compute()):
            raise DataError(f"zone {args.zone} has no pixel in the map", where="--zone",
                            fix="Choose a zone present in the map's 'zone' variable.")
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    if attrs.get("globalflux_partial"):
        log.warning("%s is partial (%s): the subset holds only those blocks", store,
                    attrs["globalflux_partial"])
    try:
        if sub.nbytes <= MAX_EAGER_BYTES:  # read (and decode) before any output file is opened
            sub = sub.load()
        if ext == ".nc":
            _write_nc(sub, out, attrs)
        elif ext == ".csv":
            _write_csv(sub, out)
        elif ext in (".tif", ".tiff"):
            _write_tif(sub, out, attrs)
        else:
            with atomic_target(out) as tmp:
                _write_png(sub, tmp, attrs)
    except (GlobalfluxError, OSError):
        raise
    except Exception as exc:  # a codec error inside a chunk: name the store and the chunk
        from .io.store import decode_error

        err = decode_error(exc, store)
        if err is None:
            raise
        raise err from None
    print(f"globalflux: wrote {out}")
    return 0
