"""What a run folder holds for the viewer: its map stores, their layers, time axes and COGs.

:class:`RunIndex` is built once when the server starts. It lists the Zarr stores under
``RUN/maps/`` (or the one store given), every map variable in them (any variable with ``y`` and
``x`` dims, with or without ``time``), their units and long names from the CF attributes, a
colour scale per layer, the uncertainty band that goes with a layer when the store holds one,
the applicability (AOA) layer when present, and the COGs of ``RUN/maps/cog/`` that hold the same
pixels as a layer (their tags name the variable and time step, and their grid must equal the
store's). Requests name layers and time steps by the ids this index gives; no path from a request
is ever opened, so nothing outside the run can be served.

Layers are generic over whatever a store holds:

* **uncertainty band** of a variable ``V``: a pair of quantile layers ``V_qLO``/``V_qHI`` (e.g.
  ``rh_q05``/``rh_q95``), else ``V_lo``/``V_hi`` (or ``_lower``/``_upper``), else a spread layer
  ``V_sd``/``V_std``/``V_se``/``V_uncertainty`` (the band is ``V`` +- 1 of it), else a layer named
  by ``V``'s CF ``ancillary_variables`` attribute;
* **applicability**: a layer named ``aoa`` or ``V_aoa``, or whose long name mentions the area of
  applicability; 1 (true) inside, 0 (false) outside.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import xarray as xr

from ..errors import DataError, InputFileError

__all__ = ["Band", "Layer", "RunIndex", "open_run"]

log = logging.getLogger("globalflux")

#: a name that may appear in a URL (store and variable names are matched against it)
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
#: the label of the one "time step" of a layer without a time axis
STATIC = "static"
#: values sampled per layer to choose its colour range
_SAMPLE = 1_000_000
#: most classes a layer may have to be drawn as categories
_MAX_CATEGORIES = 40

_SPREAD_SUFFIXES = ("_sd", "_std", "_se", "_uncertainty")
_PAIR_SUFFIXES = (("_lo", "_hi"), ("_lower", "_upper"), ("_low", "_high"))


@dataclass(frozen=True)
class Band:
    """The uncertainty band of a layer.

    Attributes
    ----------
    kind
        ``"interval"``: ``lo``/``hi`` are the band's edges; ``"spread"``: ``lo`` names a spread
        (SD-like) variable and the band is value - spread .. value + spread.
    lo, hi
        Variable names in the same store (``hi`` is ``lo`` for a spread).
    label
        Text shown beside the band, e.g. ``"5th-95th percentile of trees"``.
    """

    kind: str
    lo: str
    hi: str
    label: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "lo": self.lo, "hi": self.hi, "label": self.label}


@dataclass
class Layer:
    """One map variable of one store, as the viewer shows it.

    Attributes
    ----------
    id
        ``"STORE/VAR"``: the store's folder name without ``.zarr``, a slash, the variable.
    store, name
        The store id and the variable name.
    long_name, units
        From the variable's CF attributes (``units`` "" when it has none).
    times
        Time-step labels (``YYYY-MM-DD``) or ``("static",)`` for a map without a time axis.
    kind
        ``"continuous"`` (a colour ramp from ``vmin`` to ``vmax``) or ``"categorical"``.
    vmin, vmax
        Colour range: 2nd and 98th percentiles of a sample of the layer (all time steps).
    categories
        ``[(value, label)]`` of a categorical layer.
    band
        Its uncertainty band, when the store holds one.
    aoa
        Variable name of the store's applicability layer, when it holds one.
    cogs
        Time label -> (COG path, band index) of COGs holding exactly this layer's pixels.
    """

    id: str
    store: str
    name: str
    long_name: str
    units: str
    times: tuple[str, ...]
    kind: str
    vmin: float = math.nan
    vmax: float = math.nan
    categories: tuple[tuple[int, str], ...] = ()
    band: Band | None = None
    aoa: str | None = None
    is_aoa: bool = False
    cogs: dict[str, tuple[Path, int]] = field(default_factory=dict)

    @property
    def static(self) -> bool:
        return self.times == (STATIC,)

    def time_index(self, label: str) -> int | None:
        """Position of ``label`` on this layer's time axis (None when it is not on it)."""
        try:
            return self.times.index(label)
        except ValueError:
            return None


@dataclass
class _Store:
    id: str
    path: Path
    ds: xr.Dataset
    periods: list[dict[str, Any]]
    layers: dict[str, Layer]


def _is_store(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in ("zarr.json", ".zgroup", ".zmetadata"))


def _time_labels(ds: xr.Dataset) -> list[str]:
    """One URL-safe label per time step: ``YYYY-MM-DD`` (as the COG file names and tags), with
    the time of day when dates repeat, the step's index when the axis has no coordinate."""
    from ..io.cog import time_label

    if "time" not in ds.dims:
        return []
    if "time" not in ds.coords:
        return [str(i) for i in range(ds.sizes["time"])]
    values = ds["time"].values
    labels = [time_label(t) for t in values]
    if len(set(labels)) < len(labels) and np.issubdtype(values.dtype, np.datetime64):
        labels = [f"{t:%Y-%m-%dT%H%M%S}" for t in pd.DatetimeIndex(values)]
    if len(set(labels)) < len(labels) or not all(SAFE_NAME.match(x) for x in labels):
        labels = [str(i) for i in range(len(labels))]
    return labels


def _periods(ds: xr.Dataset) -> list[dict[str, Any]]:
    """One dict per time step: label, start and end (inclusive) dates where known."""
    if "time" not in ds.dims:
        return [{"label": STATIC, "start": None, "end": None}]
    labels = _time_labels(ds)
    out: list[dict[str, Any]] = [{"label": lab, "start": None, "end": None} for lab in labels]
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        return out
    starts = pd.DatetimeIndex(ds["time"].values)
    bounds_name = ds["time"].attrs.get("bounds")
    ends = None
    if bounds_name and bounds_name in ds.variables and ds[bounds_name].ndim == 2:
        b = ds[bounds_name].values
        if np.issubdtype(b.dtype, np.datetime64):
            starts = pd.DatetimeIndex(b[:, 0])
            # CF bounds are half open [start, end): the last day is end - 1 day
            ends = pd.DatetimeIndex(b[:, 1]) - pd.Timedelta(days=1)
    if ends is None and "period_days" in ds.coords and ds["period_days"].dims == ("time",):
        days = np.asarray(ds["period_days"].values, dtype="int64")
        if days.size == len(starts) and (days > 0).all():  # 0 = not written: end unknown
            ends = starts + pd.to_timedelta(days - 1, unit="D")
    for i, (p, s) in enumerate(zip(out, starts, strict=True)):
        p["start"] = f"{s:%Y-%m-%d}"
        if ends is not None:
            p["end"] = f"{ends[i]:%Y-%m-%d}"
    return out


def _value_dtype(da: xr.DataArray) -> np.dtype:
    """The stored dtype (CF decoding turns an int16 with a fill value into float)."""
    return np.dtype(da.encoding.get("dtype", da.dtype))


def _flag_values(flags: Any) -> list[int] | None:
    """CF ``flag_values`` as integers (a list, or numbers in a string); None if not readable."""
    if flags is None:
        return None
    parts = flags.split() if isinstance(flags, str) else list(np.atleast_1d(flags))
    try:
        values = [float(v) for v in parts]
    except (TypeError, ValueError):
        return None
    if not values or any(not math.isfinite(v) or v != int(v) for v in values):
        return None
    return [int(v) for v in values]


def _categories(da: xr.DataArray, sample: np.ndarray) -> tuple[tuple[int, str], ...] | None:
    """Classes of a categorical layer, or None when the layer is continuous."""
    dt = _value_dtype(da)
    values = _flag_values(da.attrs.get("flag_values"))
    if values is not None:
        meanings = str(da.attrs.get("flag_meanings", "")).split()
        if len(meanings) != len(values):
            meanings = [str(v) for v in values]
        return tuple((v, m.replace("_", " ")) for v, m in zip(values, meanings, strict=True))
    if dt.kind == "b":
        return ((0, "false"), (1, "true"))
    if dt.kind not in "iu":
        return None
    finite = sample[np.isfinite(sample)]
    values = np.unique(finite.astype("int64"))
    if values.size > _MAX_CATEGORIES or (values.size and (values.min() < 0 or values.max() > 255)):
        return None
    nz = da.attrs.get("n_zones")
    if nz is not None:
        values = np.arange(int(nz))
    return tuple((int(v), str(int(v))) for v in values)


def _sample(da: xr.DataArray) -> np.ndarray:
    """A strided sample of a layer (a few time steps, every k-th pixel), as float64."""
    if "time" in da.dims and da.sizes["time"] > 8:
        da = da.isel(time=np.unique(np.linspace(0, da.sizes["time"] - 1, 8).round().astype(int)))
    cells = int(np.prod([da.sizes[d] for d in da.dims]))
    step = max(1, math.ceil(math.sqrt(cells / _SAMPLE)))
    sub = da.isel(y=slice(None, None, step), x=slice(None, None, step))
    return np.asarray(sub.values, dtype="float64").ravel()


def _find_band(name: str, names: set[str], ds: xr.Dataset) -> Band | None:
    qs = []
    for n in names:
        m = re.fullmatch(re.escape(name) + r"_q(\d{1,2})", n)
        if m:
            qs.append((int(m.group(1)), n))
    lows = sorted(q for q in qs if q[0] < 50)
    highs = sorted(q for q in qs if q[0] > 50)
    if lows and highs:
        (lo, nlo), (hi, nhi) = lows[0], highs[-1]
        return Band("interval", nlo, nhi, f"{lo}th-{hi}th percentile")
    for a, b in _PAIR_SUFFIXES:
        if name + a in names and name + b in names:
            return Band("interval", name + a, name + b, f"{name}{a} .. {name}{b}")
    for suf in _SPREAD_SUFFIXES:
        if name + suf in names:
            n = name + suf
            return Band("spread", n, n, f"±1 {ds[n].attrs.get('long_name', n)}")
    for n in str(ds[name].attrs.get("ancillary_variables", "")).split():
        if n in names:
            return Band("spread", n, n, f"±1 {ds[n].attrs.get('long_name', n)}")
    return None


def _is_aoa(name: str, da: xr.DataArray) -> bool:
    text = f"{da.attrs.get('long_name', '')} {da.attrs.get('standard_name', '')}".lower()
    return name == "aoa" or name.endswith("_aoa") or "area of applicability" in text


def _grid_key(shape: tuple[int, int], transform: tuple[float, ...]) -> tuple:
    return (int(shape[0]), int(shape[1])) + tuple(float(v) for v in transform)


def _same_grid(a: tuple | None, b: tuple | None) -> bool:
    """Same shape, and affine transforms equal to 1/1000 of a pixel."""
    if a is None or b is None or a[:2] != b[:2]:
        return False
    ta, tb = np.array(a[2:]), np.array(b[2:])
    tol = 1e-3 * max(abs(ta[0]), abs(ta[4]))
    return bool(np.allclose(ta, tb, rtol=0.0, atol=tol))


def _store_grid(ds: xr.Dataset) -> tuple | None:
    x = np.asarray(ds["x"].values, dtype="float64")
    y = np.asarray(ds["y"].values, dtype="float64")
    if x.size < 2 or y.size < 2:
        return None
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    return _grid_key((y.size, x.size), (dx, 0.0, float(x[0] - dx / 2), 0.0, dy, float(y[0] - dy / 2)))


def _scan_cogs(folder: Path) -> list[dict[str, Any]]:
    """Variable, time labels and grid of every COG directly in ``folder``."""
    out = []
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob("*.tif")):
        if p.name.startswith(".") or not p.is_file():
            continue
        try:
            with rasterio.open(p) as src:
                tags = src.tags()
                grid = _grid_key((src.height, src.width), tuple(src.transform)[:6])
                count = src.count
        except Exception as exc:  # a file that is no GeoTIFF: skip it, say so
            log.warning("serve: skipping %s (%s)", p, exc.__class__.__name__)
            continue
        if "variable" not in tags:
            continue
        if tags.get("time"):
            labels = [tags["time"]]
        elif tags.get("times") and len(tags["times"].split(",")) == count:
            labels = tags["times"].split(",")
        else:
            labels = [STATIC] if count == 1 else []
        out.append({"path": p.resolve(), "variable": tags["variable"], "labels": labels,
                    "grid": grid})
    return out


def _open_store(path: Path) -> xr.Dataset:
    import rioxarray  # noqa: F401  (registers .rio)

    from ..query import open_map

    ds = open_map(path)  # a store still being written shows only its completed blocks
    if ds.rio.crs is None:
        wkt = ds["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in ds.coords else None
        if not wkt:
            raise DataError("the store has no CRS", where=str(path),
                            fix="Write maps with globalflux (it records the CRS), or set one with "
                            "rioxarray's ds.rio.write_crs().")
        ds = ds.rio.write_crs(wkt)
    return ds


class RunIndex:
    """The stores, layers and COGs of one run folder (or of one store). See the module docstring."""

    def __init__(self, root: Path, stores: dict[str, _Store], title: str, synthetic: bool,
                 note: str, version: str):
        self.root = root
        self.stores = stores
        self.title = title
        self.synthetic = synthetic
        self.note = note
        self.version = version
        self.layers: dict[str, Layer] = {
            lay.id: lay for s in stores.values() for lay in s.layers.values()}

    # ---------------------------------------------------------------------------- look-ups
    def layer(self, layer_id: str) -> Layer:
        """The layer ``STORE/VAR``; an unknown id raises :class:`DataError`."""
        lay = self.layers.get(layer_id)
        if lay is None:
            raise DataError(f"unknown layer {layer_id!r}", where="layer",
                            fix=f"Choose one of: {', '.join(sorted(self.layers))}.")
        return lay

    def data(self, layer: Layer) -> xr.DataArray:
        """The layer's lazy DataArray (with its CRS), dims in (time,) y, x order."""
        da = self.stores[layer.store].ds[layer.name]
        return da.transpose(*[d for d in ("time", "y", "x") if d in da.dims])

    def bbox(self) -> tuple[float, float, float, float]:
        """Outer edges (W, S, E, N) of every store, in degrees (EPSG:4326)."""
        from rasterio.warp import transform_bounds

        boxes = []
        for s in self.stores.values():
            ds = s.ds
            x = np.asarray(ds["x"].values, dtype="float64")
            y = np.asarray(ds["y"].values, dtype="float64")
            dx = abs(float(x[1] - x[0])) if x.size > 1 else 0.0
            dy = abs(float(y[1] - y[0])) if y.size > 1 else 0.0
            b = (x.min() - dx / 2, y.min() - dy / 2, x.max() + dx / 2, y.max() + dy / 2)
            crs = ds.rio.crs
            if crs is not None and crs.to_epsg() != 4326:
                b = transform_bounds(crs, "EPSG:4326", *b, densify_pts=21)
            boxes.append(b)
        arr = np.array(boxes, dtype="float64")
        return (float(arr[:, 0].min()), float(arr[:, 1].min()), float(arr[:, 2].max()),
                float(arr[:, 3].max()))

    def default_layer(self) -> str:
        """The first layer with an uncertainty band, else one named like its store, else any."""
        for lay in self.layers.values():
            if lay.band is not None:
                return lay.id
        for lay in self.layers.values():
            if lay.name == lay.store.split("_")[0]:
                return lay.id
        return next(iter(self.layers))

    def metadata(self) -> dict[str, Any]:
        """The JSON the page starts from (see :func:`globalflux.serve.app` for the API)."""
        from .render import legend_colours  # render imports this module

        layers = []
        for lay in self.layers.values():
            entry: dict[str, Any] = {
                "id": lay.id, "store": lay.store, "name": lay.name, "long_name": lay.long_name,
                "units": lay.units, "kind": lay.kind, "static": lay.static,
                "times": list(lay.times), "band": lay.band.to_json() if lay.band else None,
                "aoa": f"{lay.store}/{lay.aoa}" if lay.aoa else None, "is_aoa": lay.is_aoa,
                "source": "cog" if lay.cogs else "zarr",
            }
            entry.update(legend_colours(lay))
            layers.append(entry)
        stores = [{"id": s.id, "title": str(s.ds.attrs.get("title", s.id)), "periods": s.periods,
                   "complete": str(s.ds.attrs.get("globalflux_complete", "")) == "true",
                   "partial": s.ds.attrs.get("globalflux_partial")}
                  for s in self.stores.values()]
        return {
            "title": self.title, "synthetic": self.synthetic, "note": self.note,
            "globalflux_version": self.version, "run": self.root.name,
            "bbox": list(self.bbox()), "default_layer": self.default_layer(),
            "layers": layers, "stores": stores,
        }


def _layers_of(store_id: str, ds: xr.Dataset, cogs: list[dict[str, Any]]) -> dict[str, Layer]:
    grid = _store_grid(ds)
    labels = _time_labels(ds)
    names = {str(n) for n, v in ds.data_vars.items()
             if "x" in v.dims and "y" in v.dims and set(v.dims) <= {"time", "y", "x"}}
    aoa = next((n for n in sorted(names) if _is_aoa(n, ds[n])), None)
    out: dict[str, Layer] = {}
    for name in sorted(names, key=lambda n: (n != store_id.split("_")[0], n)):
        if not SAFE_NAME.match(name):
            log.warning("serve: skipping variable %r of %s (name not usable in a URL)", name,
                        store_id)
            continue
        da = ds[name]
        times = tuple(labels) if "time" in da.dims else (STATIC,)
        sample = _sample(da)
        cats = _categories(da, sample)
        lay = Layer(
            id=f"{store_id}/{name}", store=store_id, name=name,
            long_name=str(da.attrs.get("long_name", name)), units=str(da.attrs.get("units", "")),
            times=times, kind="categorical" if cats is not None else "continuous",
            categories=cats or (), band=_find_band(name, names, ds),
            aoa=aoa if aoa != name else None, is_aoa=name == aoa,
        )
        if cats is None:
            finite = sample[np.isfinite(sample)]
            if finite.size:
                lo, hi = np.percentile(finite, [2, 98])
                if not hi > lo:
                    lo, hi = float(finite.min()), float(finite.max())
                if not hi > lo:
                    lo, hi = lo - 0.5, hi + 0.5
                lay.vmin, lay.vmax = float(lo), float(hi)
            else:
                lay.vmin, lay.vmax = 0.0, 1.0
        for c in cogs:
            if c["variable"] != name or not _same_grid(c["grid"], grid):
                continue
            for band_i, lab in enumerate(c["labels"], start=1):
                if lab in times:
                    lay.cogs.setdefault(lab, (c["path"], band_i))
        out[name] = lay
    return out


def open_run(path: str | Path) -> RunIndex:
    """Index a run folder (``RUN/maps/*.zarr``), its ``maps/`` folder, or one Zarr store.

    Raises
    ------
    InputFileError
        The path does not exist or holds no Zarr store.
    """
    from .. import __version__
    from ..provenance import SYNTHETIC_NOTE

    root = Path(path).expanduser()
    if not root.exists():
        raise InputFileError("not found", where=str(path),
                             fix="Give a run folder written by `globalflux run`, or a .zarr store.")
    root = root.resolve()
    if _is_store(root):
        store_paths = [root]
        cog_dir = root.parent / "cog"
        run_root = root.parent.parent if root.parent.name == "maps" else root.parent
    else:
        maps = root / "maps" if (root / "maps").is_dir() else root
        store_paths = sorted(p for p in maps.glob("*.zarr") if _is_store(p))
        cog_dir = maps / "cog"
        run_root = root
    if not store_paths:
        raise InputFileError("holds no Zarr map store (maps/*.zarr)", where=str(path),
                             fix="Give a run folder written by `globalflux run`, its maps/ folder, "
                             "or a .zarr store.")
    # COGs of the run (maps/cog) and those `globalflux map --cog` writes into STORE/cog
    cogs = _scan_cogs(cog_dir) + [c for sp in store_paths for c in _scan_cogs(sp / "cog")]
    stores: dict[str, _Store] = {}
    for sp in store_paths:
        sid = sp.name[: -len(".zarr")] if sp.name.endswith(".zarr") else sp.name
        if not SAFE_NAME.match(sid):
            log.warning("serve: skipping store %s (name not usable in a URL)", sp)
            continue
        ds = _open_store(sp)
        if "x" not in ds.dims or "y" not in ds.dims:
            log.warning("serve: skipping store %s (no x/y dims)", sp)
            continue
        stores[sid] = _Store(sid, sp, ds, _periods(ds), _layers_of(sid, ds, cogs))
    stores = {k: v for k, v in stores.items() if v.layers}
    if not stores:
        raise InputFileError("holds no map variable (a variable with y and x dims)",
                             where=str(path), fix="Give a run folder with maps/*.zarr map stores.")
    # stores of maps first (one named like a variable it holds, e.g. rh.zarr), predictor cubes last
    order = sorted(stores, key=lambda s: ("predictor" in s, s))
    stores = {k: stores[k] for k in order}
    attrs: Mapping[str, Any] = next(iter(stores.values())).ds.attrs
    synthetic = any(str(s.ds.attrs.get("synthetic", "")).lower() == "true" for s in stores.values())
    title = str(attrs.get("title", run_root.name))
    if synthetic and "SYNTHETIC" not in title:
        title = "SYNTHETIC " + title
    return RunIndex(run_root, stores, title, synthetic,
                    str(attrs.get("comment", SYNTHETIC_NOTE if synthetic else "")),
                    str(attrs.get("globalflux_version", __version__)))
