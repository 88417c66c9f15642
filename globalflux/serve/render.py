"""PNG tiles, legends and point series of a :class:`~globalflux.serve.index.RunIndex` layer.

Tiles are cut by rio-tiler in the Web Mercator tile matrix set: from the layer's COG when
``maps/cog/`` holds one with the same pixels (its internal overviews serve the low zooms), else
from the Zarr store through rio-tiler's ``XarrayReader``. Resampling is nearest, so a pixel of a
tile shows a value of the map. Continuous layers are stretched from ``vmin`` to ``vmax`` over
the ``viridis`` ramp, categorical ones take ``tab10``/``tab20`` colours; no-data is transparent.
The applicability overlay greys the pixels outside the area of applicability.

rio-tiler (the optional ``globalflux[serve]`` extra) and matplotlib's colour tables are imported
inside the functions that use them, so that importing this module stays cheap and a missing
extra is reported by :func:`globalflux.serve.require` with the pip command.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import xarray as xr

from ..errors import DataError, GridError
from .index import STATIC, Layer, RunIndex

__all__ = ["render_tile", "legend_colours", "point_series", "TileOutside"]

RAMP = "viridis"
TILE_SIZE = 256
MAX_ZOOM = 24
#: grey of the pixels outside the area of applicability (RGBA)
OUTSIDE_AOA = (60, 60, 60, 170)


class TileOutside(Exception):
    """The requested tile holds no pixel of the map."""


def _ramp() -> dict[int, tuple[int, int, int, int]]:
    from rio_tiler.colormap import cmap

    return cmap.get(RAMP)


def _category_colours(n: int) -> list[tuple[int, int, int, int]]:
    """Matplotlib's qualitative ``tab10`` (``tab20`` beyond 10 classes), as RGBA bytes."""
    from matplotlib import colormaps

    colours = colormaps["tab10" if n <= 10 else "tab20"].colors
    return [tuple(int(round(c * 255)) for c in colours[i % len(colours)]) + (255,)
            for i in range(n)]


def _hex(rgba) -> str:
    return "#{:02x}{:02x}{:02x}".format(*[int(v) for v in rgba[:3]])


def legend_colours(layer: Layer) -> dict[str, Any]:
    """Colour scale of a layer for the page's legend: ramp stops or category swatches."""
    if layer.kind == "categorical":
        cols = _category_colours(len(layer.categories))
        return {"categories": [{"value": v, "label": lab, "color": _hex(c)}
                               for (v, lab), c in zip(layer.categories, cols, strict=True)]}
    ramp = _ramp()
    stops = [_hex(ramp[int(round(i))]) for i in np.linspace(0, 255, 11)]
    return {"vmin": layer.vmin, "vmax": layer.vmax, "ramp": RAMP, "stops": stops}


def _category_cmap(layer: Layer) -> dict[int, tuple[int, int, int, int]]:
    cols = _category_colours(len(layer.categories))
    return {int(v): tuple(int(x) for x in c) for (v, _), c in zip(layer.categories, cols, strict=True)}


def _read_tile(index: RunIndex, layer: Layer, t: str, z: int, x: int, y: int):
    """rio-tiler ImageData of one tile (a masked (1, 256, 256) array)."""
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader, XarrayReader

    try:
        if t in layer.cogs:
            path, band = layer.cogs[t]
            with Reader(str(path)) as src:
                return src.tile(x, y, z, tilesize=TILE_SIZE, indexes=band,
                                resampling_method="nearest")
        da = index.data(layer)
        if not layer.static:
            da = da.isel(time=layer.time_index(t))
        if da.dtype == bool:
            da = da.astype("uint8")
        nodata = np.nan if np.issubdtype(da.dtype, np.floating) else None
        if da.encoding.get("_FillValue") is not None and nodata is None:
            # an integer layer keeps its fill value in the encoding (io.store.open_dataset), which
            # rioxarray would read as "masked to NaN": declare it as the layer's own nodata instead
            fill = da.encoding["_FillValue"]
            da = da.copy()
            da.encoding = {k: v for k, v in da.encoding.items() if k != "_FillValue"}
            da = da.rio.write_nodata(fill, encoded=False)
        with XarrayReader(da) as src:
            return src.tile(x, y, z, tilesize=TILE_SIZE, reproject_method="nearest",
                            nodata=nodata)
    except TileOutsideBounds:
        raise TileOutside(f"tile {z}/{x}/{y} holds no pixel of {layer.id}") from None


class _TileCache:
    """A small thread-safe LRU of rendered tiles (bytes)."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._d: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: tuple, value: bytes) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


_CACHE = _TileCache()


def check_tile(z: int, x: int, y: int) -> None:
    """A tile address of the Web Mercator matrix: 0 <= z <= 24, 0 <= x, y < 2**z."""
    if not (0 <= z <= MAX_ZOOM):
        raise GridError(f"zoom {z} is outside 0..{MAX_ZOOM}", where="tile",
                        fix=f"Ask for a zoom from 0 to {MAX_ZOOM}.")
    n = 2**z
    if not (0 <= x < n and 0 <= y < n):
        raise GridError(f"tile {z}/{x}/{y} is outside the zoom {z} grid (0..{n - 1})",
                        where="tile", fix="Ask for x and y from 0 to 2**z - 1.")


def render_tile(index: RunIndex, layer: Layer, t: str, z: int, x: int, y: int, *,
                style: str = "colour") -> bytes:
    """A 256 x 256 PNG of ``layer`` at time label ``t`` (``"static"`` for a static layer).

    ``style="colour"`` colours the values; ``style="outside"`` (applicability layers only) greys
    the pixels outside the area of applicability and leaves the rest transparent.
    """
    check_tile(z, x, y)
    if layer.time_index(t) is None:
        raise DataError(f"time {t!r} is not on the time axis of {layer.id} "
                        f"({layer.times[0]}..{layer.times[-1]})", where="time",
                        fix="Choose one of the layer's time steps (see /api/run).")
    if style not in ("colour", "outside"):
        raise DataError(f"unknown style {style!r}", where="style", fix="Use colour or outside.")
    if style == "outside" and not layer.is_aoa:
        raise DataError(f"{layer.id} is not an applicability layer", where="style",
                        fix="Use style=outside only with the store's aoa layer.")
    key = (layer.id, t, z, x, y, style)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    img = _read_tile(index, layer, t, z, x, y)
    if style == "outside":
        arr = np.ma.masked_invalid(img.array.astype("float64"))
        inside = np.ma.filled(arr != 0, True)
        rgba = np.zeros((4, *arr.shape[1:]), dtype="uint8")
        out = ~inside[0] & ~np.ma.getmaskarray(arr)[0]
        for i, v in enumerate(OUTSIDE_AOA):
            rgba[i][out] = v
        png = _png(rgba)
    elif layer.kind == "categorical":
        arr = np.ma.masked_invalid(img.array.astype("float64"))
        mask = np.ma.getmaskarray(arr)
        cmap = _category_cmap(layer)
        vals = np.ma.filled(arr, -1).astype("int64")[0]
        rgba = np.zeros((4, *vals.shape), dtype="uint8")
        for v, col in cmap.items():
            hit = (vals == v) & ~mask[0]
            for i in range(4):
                rgba[i][hit] = col[i]
        png = _png(rgba)
    else:
        data = np.ma.getdata(img.array).astype("float64")
        mask = np.ma.getmaskarray(img.array) | ~np.isfinite(data)
        # fill value 0 (not the NaN nodata) so rio-tiler's cast to uint8 stays quiet
        img.array = np.ma.MaskedArray(np.where(mask, 0.0, data), mask=mask, fill_value=0)
        stretched = img.rescale(in_range=((layer.vmin, layer.vmax),))
        png = stretched.render(img_format="PNG", colormap=_ramp())
    _CACHE.put(key, png)
    return png


def _png(rgba: np.ndarray) -> bytes:
    """Encode a (4, h, w) uint8 RGBA array as PNG (rio-tiler's encoder)."""
    from rio_tiler.utils import render

    return render(rgba[:3], mask=rgba[3], img_format="PNG")


# ---------------------------------------------------------------------------------- series


def _number(v: Any) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


def _pixel(index: RunIndex, layer: Layer, lon: float, lat: float) -> tuple[int, int, float, float]:
    """Row, column and centre of the store pixel holding (lon, lat); off the map raises."""
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise GridError(f"lon/lat ({lon}, {lat}) are not finite numbers", where="lon,lat",
                        fix="Give decimal degrees.")
    ds = index.stores[layer.store].ds
    px, py = lon, lat
    crs = ds.rio.crs
    if crs is not None and crs.to_epsg() != 4326:
        from rasterio.warp import transform

        xs, ys = transform("EPSG:4326", crs, [lon], [lat])
        px, py = xs[0], ys[0]
    x = np.asarray(ds["x"].values, dtype="float64")
    y = np.asarray(ds["y"].values, dtype="float64")
    dx = abs(float(x[1] - x[0])) if x.size > 1 else 0.0
    dy = abs(float(y[1] - y[0])) if y.size > 1 else 0.0
    if not (x.min() - dx / 2 <= px <= x.max() + dx / 2
            and y.min() - dy / 2 <= py <= y.max() + dy / 2):
        raise GridError(
            f"point ({lon:g}, {lat:g}) is off the map of {layer.store} "
            f"({x.min() - dx / 2:g}..{x.max() + dx / 2:g} E, {y.min() - dy / 2:g}.."
            f"{y.max() + dy / 2:g} N)", where="lon,lat", fix="Click or give a point on the map.")
    ix = int(np.abs(x - px).argmin())
    iy = int(np.abs(y - py).argmin())
    return iy, ix, float(x[ix]), float(y[iy])


def _values(da: xr.DataArray, iy: int, ix: int) -> list[float | None]:
    v = np.asarray(da.isel(y=iy, x=ix).values, dtype="float64")
    return [_number(a) for a in np.atleast_1d(v)]


def _along(vals: list[float | None], n: int) -> list[float | None] | None:
    """``vals`` on a time axis of ``n`` steps: as is, a static value repeated, else None."""
    if len(vals) == n:
        return vals
    return vals * n if len(vals) == 1 else None


def point_series(index: RunIndex, layer: Layer, lon: float, lat: float) -> dict[str, Any]:
    """The layer's values at the pixel holding (lon, lat), one per time step, with its band.

    Returns
    -------
    dict with ``layer, units, long_name, lon, lat`` (asked), ``x, y`` (pixel centre), ``row, col``, ``periods``
    (label, start, end), ``values`` (None for no data), ``band`` (``label``, ``lo``, ``hi`` or
    None), ``aoa`` (1/0 per step or one value, or None), ``context`` (value, units and long
    name of the store's static layers at the pixel) and ``category`` labels of categorical layers.
    """
    iy, ix, cx, cy = _pixel(index, layer, lon, lat)
    store = index.stores[layer.store]
    ds = store.ds
    values = _values(ds[layer.name], iy, ix)
    periods = [store.periods[i] for i in range(len(values))] if not layer.static else [
        {"label": STATIC, "start": None, "end": None}]
    band = None
    if layer.band is not None:
        b, n = layer.band, len(values)
        if b.kind == "interval":
            lo, hi = _along(_values(ds[b.lo], iy, ix), n), _along(_values(ds[b.hi], iy, ix), n)
        else:
            sd = _along(_values(ds[b.lo], iy, ix), n)
            lo = hi = None
            if sd is not None:
                lo = [None if v is None or e is None else v - e
                      for v, e in zip(values, sd, strict=True)]
                hi = [None if v is None or e is None else v + e
                      for v, e in zip(values, sd, strict=True)]
        if lo is not None and hi is not None:
            band = {"label": b.label, "kind": b.kind, "lo": lo, "hi": hi}
    aoa = None
    if layer.aoa is not None:
        a = _values(ds[layer.aoa], iy, ix)
        aoa = a if "time" in ds[layer.aoa].dims else a[0]
    context = {}
    for other in store.layers.values():
        if other.name == layer.name or not other.static:
            continue
        v = _values(ds[other.name], iy, ix)[0]
        entry: dict[str, Any] = {"value": v, "units": other.units, "long_name": other.long_name}
        if other.kind == "categorical" and v is not None:
            entry["label"] = dict(other.categories).get(int(v), str(v))
        context[other.name] = entry
    out: dict[str, Any] = {
        "layer": layer.id, "long_name": layer.long_name, "units": layer.units,
        "lon": lon, "lat": lat, "x": cx, "y": cy, "row": iy, "col": ix, "periods": periods, "values": values,
        "band": band, "aoa": aoa, "context": context,
    }
    if layer.kind == "categorical":
        cats = dict(layer.categories)
        out["category"] = [None if v is None else cats.get(int(v), str(v)) for v in values]
    return out
