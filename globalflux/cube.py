"""Predictor cube assembly: pure, lazy functions on xarray objects.

Everything here takes and returns xarray objects and stays lazy on Dask data: nothing reads a
pixel until the caller writes or computes the result (``tests/test_cube.py`` proves it with a
scheduler that refuses to run).

Contents
--------
* :func:`regrid` -- put a source on a :class:`~globalflux.grid.GridSpec` (exact block
  reductions for aligned integer factors; odc-geo/rasterio warping otherwise).
* :func:`static_cube` -- the real static predictor cube (land, land cover, Köppen, NDVI envelope,
  relief, MAT/MAP/SOC) on one global grid.
* Time: :func:`composite_8day` (MODIS 8-day calendar), :func:`daily_interpolate`,
  :func:`sin_doy` (the one day-of-year encoding: :func:`day_of_year_angle`),
  :func:`annual_stats`.
* Indices: :func:`ndvi`, :func:`evi`, :func:`lswi` from surface reflectance.
* :func:`zone_factors` -- multi-year means of the six zone factors of Zhu et al. (2024).
* :func:`choose_chunks`, :func:`finalize_cube` -- chunking for time-series access (10-100 MB
  chunks) and CF attributes/CRS/provenance before writing.

References
----------
Zhu, X. et al. (2024). Global heterotrophic respiration maps from zoned random forests.
Huete, A. et al. (2002). Overview of the radiometric and biophysical performance of the MODIS
vegetation indices. Remote Sens. Environ. 83, 195-213. doi:10.1016/S0034-4257(02)00096-2
Xiao, X. et al. (2004). Modeling gross primary production of temperate deciduous broadleaf forest
using satellite images and climate data. Remote Sens. Environ. 91, 256-270.
doi:10.1016/j.rse.2004.03.010
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import dask.array as dsa
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from .errors import DataError, GridError
from .grid import BBox, GridSpec, grid_of, modis_8day_start, period_lengths

__all__ = [
    "Resampling",
    "fill_nearest",
    "fill_short_gaps",
    "fill_short_gaps_dataset",
    "regrid",
    "static_cube",
    "STATIC_VARIABLES",
    "composite_8day",
    "daily_interpolate",
    "sin_doy",
    "day_of_year_angle",
    "annual_stats",
    "ndvi",
    "evi",
    "lswi",
    "zone_factors",
    "choose_chunks",
    "finalize_cube",
    "check_time_axes",
]

Resampling = Literal["average", "mode", "nearest", "bilinear"]

#: Static cube variables: (resampling, CF units, long_name).
STATIC_VARIABLES: dict[str, tuple[str, str, str]] = {
    "land_mask": ("derived", "1", "land (True): GLOBE 30\" land fraction >= 0.5"),
    "land_fraction": ("average", "1", "fraction of GLOBE 30\" land cells in the pixel"),
    "land_cover": ("mode", "1", "IGBP land cover class, MCD12C1 2019 (255 = no data)"),
    "koppen": ("mode", "1", "Koppen-Geiger main group 1-5 (0 = ocean / no class)"),
    "ndvi_max": ("average", "1", "static NDVI maximum (BESS-JPL)"),
    "ndvi_min": ("average", "1", "static NDVI minimum (BESS-JPL)"),
    "elevation": ("average", "m", "surface relief above mean sea level (ETOPO20)"),
    "mat": ("average", "degC", "mean annual air temperature (WorldClim 1.4 via Jian et al.)"),
    "map": ("average", "mm yr-1", "mean annual precipitation (WorldClim 1.4 via Jian et al.)"),
    "soc": ("average", "t ha-1", "soil organic carbon stock (via Jian et al.)"),
}


# ---------------------------------------------------------------------------------- resampling
# Block reductions for dask.array.coarsen: called on a block reshaped to (ny, k, nx, k) with
# axis=(1, 3). Module-level so graphs pickle for distributed schedulers.


def _block_mean(block: np.ndarray, axis, nodata=None) -> np.ndarray:
    """Mean over the fine cells, ignoring NaN (and ``nodata``); bool -> fraction True."""
    if block.dtype == bool:
        n = block.shape[axis[0]] * block.shape[axis[1]]
        return (block.sum(axis=axis, dtype=np.int32) / np.float32(n)).astype("float32")
    b = block.astype("float32", copy=False)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        b = np.where(block == nodata, np.float32(np.nan), b)
    valid = np.isfinite(b)
    total = np.where(valid, b, 0).sum(axis=axis, dtype=np.float64)
    count = valid.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / count
    return np.where(count > 0, out, np.nan).astype("float32")


def _block_mode(block: np.ndarray, axis, nodata=None) -> np.ndarray:
    """Most frequent class over the fine cells, ignoring ``nodata``; ties go to the lower class.

    Cells whose fine pixels are all ``nodata`` get ``nodata``.
    """
    if block.dtype.kind in "ub" and block.size:
        # small integer classes: scan the value range (np.unique/bincount are slower here)
        lo, hi = int(block.min()), int(block.max())
        if nodata is not None and hi == nodata:
            hi = int(np.where(block == nodata, lo, block).max())
        present = range(lo, hi + 1) if hi - lo < 64 else np.unique(block)
    else:
        present = np.unique(block)
    shape = [s for i, s in enumerate(block.shape) if i not in axis]
    fill = nodata if nodata is not None else 0
    best = np.full(shape, fill, dtype=block.dtype)
    best_n = np.zeros(shape, dtype=np.int32)
    for c in present:
        if nodata is not None and c == nodata:
            continue
        n = (block == c).sum(axis=axis, dtype=np.int32)
        better = n > best_n
        best[better] = c
        best_n[better] = n[better]
    return best


def _block_nearest(block: np.ndarray, axis) -> np.ndarray:
    """The fine pixel holding the coarse pixel centre (index k//2 along each axis)."""
    ky, kx = block.shape[axis[0]], block.shape[axis[1]]
    return block[:, ky // 2, :, kx // 2]


def _same_crs(a: str, b: str) -> bool:
    from pyproj import CRS

    try:
        return CRS.from_user_input(a) == CRS.from_user_input(b)
    except Exception:
        return a == b


def _integer(v: float, tol: float = 1e-6) -> int | None:
    r = round(v)
    return int(r) if r >= 1 and abs(v - r) < tol * max(1.0, v) else None


def regrid(
    da: xr.DataArray,
    grid: GridSpec,
    *,
    method: Resampling = "average",
    nodata: Any = None,
    name: str | None = None,
) -> xr.DataArray:
    """Resample a georeferenced DataArray onto ``grid``, lazily.

    Parameters
    ----------
    da
        DataArray with spatial dims ``(..., y, x)``, regular pixel-centre coordinates and a CRS
        (rioxarray). Leading dims (e.g. ``time``) are carried through.
    grid
        Target grid.
    method
        ``"average"`` (area mean; NaN/``nodata`` ignored; bool -> fraction True) for continuous
        variables, ``"mode"`` (majority class, ``nodata`` ignored) for categorical ones,
        ``"nearest"`` or ``"bilinear"``.
    nodata
        Value to ignore (and to fill empty pixels with for ``mode``); NaN is always ignored for
        floats.
    name
        Source name for error messages (default ``da.name``).

    Returns
    -------
    DataArray
        On ``grid``: coords ``y`` (north to south) and ``x`` exactly ``grid.y``/``grid.x``, CRS
        written, attrs kept plus ``resampling``.

    Notes
    -----
    Three paths, chosen from the grids:

    1. Same CRS, target pixel an integer multiple ``k`` of the source pixel with aligned edges:
       exact block reduction with :func:`dask.array.coarsen` (``k = 1`` is a cut).
    2. Same CRS, source pixel an integer multiple of the target pixel with aligned edges: every
       target pixel lies inside one source pixel, so average, mode and nearest all equal the
       source value: lazy index selection.
    3. Otherwise: :func:`odc.geo.xr.xr_reproject` (rasterio warp per output chunk, lazy).

    Raises
    ------
    GridError
        The source has no CRS, or the target grid does not overlap the source.
    """
    where = name or str(da.name or "source")
    src = grid_of(da, where=where)
    if not _same_crs(src.crs, grid.crs):
        return _warp(da, src, grid, method, nodata, where)
    if not src.bbox.intersects(grid.bbox):
        raise GridError(
            f"target bbox {grid.bbox.as_tuple()} is outside the source extent {src.bbox.as_tuple()}",
            where=where,
            fix="Choose a cube bbox inside the source, or add a source that covers it.",
        )
    y_desc = bool(da["y"].values[0] > da["y"].values[-1])
    if not y_desc:
        da = da.isel(y=slice(None, None, -1))
    k = _integer(grid.resolution / src.resolution)
    inside = (grid.bbox.west >= src.bbox.west - 1e-6 and grid.bbox.east <= src.bbox.east + 1e-6
              and grid.bbox.south >= src.bbox.south - 1e-6 and grid.bbox.north <= src.bbox.north + 1e-6)
    if k is not None and inside:
        col0 = (grid.bbox.west - src.bbox.west) / src.resolution
        row0 = (src.bbox.north - grid.bbox.north) / src.resolution
        if _integer(col0 + 1) is not None and _integer(row0 + 1) is not None:
            c0, r0 = int(round(col0)), int(round(row0))
            ny, nx = grid.shape
            cut = da.isel(y=slice(r0, r0 + ny * k), x=slice(c0, c0 + nx * k))
            out = cut if k == 1 else _coarsen(cut, k, method, nodata)
            return _on_grid(out, da, grid, method)
    m = _integer(src.resolution / grid.resolution)
    if m is not None and inside and method != "bilinear":
        xi = np.floor((grid.x - src.bbox.west) / src.resolution).astype(int)
        yi = np.floor((src.bbox.north - grid.y) / src.resolution).astype(int)
        xi = np.clip(xi, 0, da.sizes["x"] - 1)
        yi = np.clip(yi, 0, da.sizes["y"] - 1)
        out = da.isel(y=xr.DataArray(yi, dims="y"), x=xr.DataArray(xi, dims="x"))
        return _on_grid(out, da, grid, "nearest (target pixel inside one source pixel)")
    return _warp(da, src, grid, method, nodata, where)


def _coarsen(da: xr.DataArray, k: int, method: str, nodata) -> xr.DataArray:
    data = da.data
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(data, chunks=-1)
    lead = data.ndim - 2
    cy = max(k, (data.chunksize[-2] // k) * k)
    cx = max(k, (data.chunksize[-1] // k) * k)
    data = data.rechunk(data.chunksize[:lead] + (cy, cx))
    axes = {lead: k, lead + 1: k}
    if method == "average":
        out = _coarsen_blocks(data, axes, _block_mean, nodata)
    elif method == "mode":
        out = _coarsen_blocks(data, axes, _block_mode, nodata)
    elif method in ("nearest", "bilinear"):
        out = _coarsen_blocks(data, axes, _block_nearest, None)
    else:
        raise GridError(f"unknown resampling {method!r}", where="method",
                        fix="Use average, mode, nearest or bilinear.")
    dims = da.dims
    return xr.DataArray(out, dims=dims, coords={d: da[d] for d in dims[:lead] if d in da.coords},
                        attrs=da.attrs, name=da.name)


def _coarsen_blocks(data: dsa.Array, axes: dict[int, int], func, nodata) -> dsa.Array:
    lead = data.ndim - 2
    chunks = data.chunks[:lead] + tuple(tuple(c // axes[i + lead] for c in data.chunks[i + lead]) for i in range(2))
    dtype = np.float32 if func is _block_mean else data.dtype
    return data.map_blocks(_coarsen_one, k=axes[lead], reducer=func, nodata=nodata, lead=lead,
                           chunks=chunks, dtype=dtype)


def _coarsen_one(block: np.ndarray, *, k: int, reducer, nodata, lead: int) -> np.ndarray:
    ny, nx = block.shape[-2] // k, block.shape[-1] // k
    lead_shape = block.shape[:lead]
    flat = block.reshape((-1, ny, k, nx, k)) if lead else block.reshape((1, ny, k, nx, k))
    outs = []
    for i in range(flat.shape[0]):
        b = flat[i]
        outs.append(reducer(b, (1, 3)) if reducer is _block_nearest else reducer(b, (1, 3), nodata))
    return np.stack(outs).reshape(lead_shape + (ny, nx))


def _warp(da: xr.DataArray, src: GridSpec, grid: GridSpec, method: str, nodata, where: str,
          ) -> xr.DataArray:
    """Reproject ``da`` (on grid ``src``) onto ``grid`` with odc-geo."""
    from odc.geo.xr import xr_reproject

    dst_bbox = grid.bbox
    # overlap test in the target CRS
    from odc.geo.geom import BoundingBox

    src_box = BoundingBox(*src.bbox.as_tuple(), crs=src.crs).to_crs(grid.crs)
    try:
        sb = BBox(*src_box)
    except GridError:
        sb = None
    if sb is None or not sb.intersects(dst_bbox):
        raise GridError(
            f"target bbox {dst_bbox.as_tuple()} is outside the source extent {src.bbox.as_tuple()} ({src.crs})",
            where=where,
            fix="Choose a cube bbox inside the source, or add a source that covers it.",
        )
    work = da
    if work.dtype == bool:  # average -> fraction True (float); other methods keep classes
        work = work.astype("float32" if method in ("average", "bilinear") else "uint8")
    if work.dtype.kind == "f":
        dst_nodata = np.nan
        if nodata is not None:
            work = work.where(work != nodata)
    else:
        dst_nodata = nodata if nodata is not None else 0
        work = work.rio.write_nodata(dst_nodata)
    work = work.rio.write_crs(src.crs)
    out = xr_reproject(work, grid.geobox(), resampling=method, dst_nodata=dst_nodata, always_yx=True)
    if da.dtype == bool and method not in ("average", "bilinear"):
        out = out.astype(bool)
    return _on_grid(out, da, grid, method)


def _on_grid(out: xr.DataArray, src: xr.DataArray, grid: GridSpec, method: str) -> xr.DataArray:
    out = out.drop_vars([c for c in out.coords if c not in out.dims], errors="ignore")
    out = out.assign_coords(y=grid.y, x=grid.x)
    out.attrs = {**src.attrs, "resampling": method}
    out.name = src.name
    out.x.attrs.update(units="degrees_east" if grid.is_geographic else "m",
                       standard_name="longitude" if grid.is_geographic else "projection_x_coordinate")
    out.y.attrs.update(units="degrees_north" if grid.is_geographic else "m",
                       standard_name="latitude" if grid.is_geographic else "projection_y_coordinate")
    return out.rio.write_crs(grid.crs)


# ------------------------------------------------------------------------------- static cube


def static_cube(sources: Mapping[str, xr.DataArray], grid: GridSpec, *, land_threshold: float = 0.5) -> xr.Dataset:
    """The static predictor cube on one grid (lazy).

    Parameters
    ----------
    sources
        From :func:`globalflux.io.static_grids.open_static_sources`: ``land_mask`` (bool, 30"),
        ``land_cover`` (uint8, 255 nodata), ``koppen`` (uint8, 0 none), ``ndvi_max``,
        ``ndvi_min``, ``elevation`` (m), ``mat`` (°C), ``map`` (mm/yr), ``soc`` (t/ha). Any
        subset; ``land_mask`` gives both ``land_fraction`` and ``land_mask``.
    grid
        Target grid, usually ``GridSpec.global_latlon(0.05)`` or ``(0.5)``.
    land_threshold
        ``land_mask`` is ``land_fraction >= land_threshold``.

    Returns
    -------
    Dataset
        Dims ``(y, x)``, y north to south; CRS written; variables as in
        :data:`STATIC_VARIABLES` with CF ``units``/``long_name`` and ``resampling`` attrs.
        Categorical layers (``land_cover``, ``koppen``) are resampled by majority (mode), keep
        ``uint8`` and their fill values (255 and 0); continuous ones by area average (or by the
        containing source pixel when the target is finer).
    """
    if not sources:
        raise DataError("no static sources given", where="sources", fix="Open them with open_static_sources(root).")
    out: dict[str, xr.DataArray] = {}
    if "land_mask" in sources:
        frac = regrid(sources["land_mask"], grid, method="average", name="land_mask")
        frac = frac.astype("float32").rename("land_fraction")
        frac.attrs = {"units": "1", "long_name": STATIC_VARIABLES["land_fraction"][2],
                      "resampling": "average (fraction of land cells)"}
        out["land_fraction"] = frac
        mask = (frac >= land_threshold).rename("land_mask")
        mask.attrs = {"units": "1", "long_name": STATIC_VARIABLES["land_mask"][2],
                      "resampling": f"land_fraction >= {land_threshold}"}
        out["land_mask"] = mask
    fills = {"land_cover": 255, "koppen": 0}
    for name, (method, units, long_name) in STATIC_VARIABLES.items():
        if name in ("land_mask", "land_fraction") or name not in sources:
            continue
        da = regrid(sources[name], grid, method=method, nodata=fills.get(name), name=name)
        attrs = {"units": units, "long_name": long_name, "resampling": da.attrs.get("resampling", method)}
        if name in fills:
            attrs.update(flag_fill=fills[name], comment=f"categorical, uint8; {fills[name]} = no data / no class")
            for key in ("flag_values", "flag_meanings"):
                if key in sources[name].attrs:
                    attrs[key] = sources[name].attrs[key]
        else:
            da = da.astype("float32")
        da.attrs = attrs
        out[name] = da.rename(name)
    ds = xr.Dataset(out)
    ds = ds.drop_vars("spatial_ref", errors="ignore").rio.write_crs(grid.crs)
    ds.x.attrs.update(units="degrees_east", standard_name="longitude", axis="X")
    ds.y.attrs.update(units="degrees_north", standard_name="latitude", axis="Y")
    return ds


# ------------------------------------------------------------------------------------- time


def check_time_axes(arrays: Mapping[str, xr.DataArray]) -> pd.DatetimeIndex:
    """The common time axis of several variables; mismatched axes raise :class:`DataError`.

    Raises
    ------
    DataError
        When two variables have different time coordinates (length or values), naming both.
    """
    ref_name, ref = None, None
    for name, da in arrays.items():
        if "time" not in da.dims:
            continue
        t = pd.DatetimeIndex(da["time"].values)
        if ref is None:
            ref_name, ref = name, t
            continue
        if len(t) != len(ref) or not (t == ref).all():
            diff = sorted(set(t).symmetric_difference(set(ref)))[:3]
            raise DataError(
                f"time axis ({len(t)} steps, {t.min().date()}..{t.max().date()}) differs from "
                f"'{ref_name}' ({len(ref)} steps, {ref.min().date()}..{ref.max().date()}); "
                f"first differing dates {[str(d.date()) for d in diff]}",
                where=name,
                fix="Composite all sources onto the same MODIS 8-day periods (cube.temporal = '8day') "
                "or select a common date range.",
            )
    if ref is None:
        raise DataError("no variable has a time axis", where="cube", fix="Give time-varying sources.")
    return ref


def composite_8day(da: xr.DataArray, *, how: Literal["mean", "max", "min", "sum"] = "mean") -> xr.DataArray:
    """Composite a time series onto MODIS 8-day periods (start on DOY 1, 9, ..., 361), lazily.

    Each time step goes to the period holding its date; NaN is skipped. ``time`` of the result is
    the period start; ``period_days`` (5-8) is kept as a coordinate.
    """
    starts = modis_8day_start(da["time"].values)
    key = xr.DataArray(starts.to_numpy(), dims="time", name="period")
    grouped = da.groupby(key)
    out = getattr(grouped, how)(skipna=True)
    out = out.rename(period="time")
    out = out.assign_coords(period_days=("time", period_lengths(pd.DatetimeIndex(out["time"].values))))
    out.attrs = {**da.attrs, "cell_methods": f"time: {how} (MODIS 8-day period)"}
    return out


def daily_interpolate(da: xr.DataArray, start=None, end=None) -> xr.DataArray:
    """Daily values by linear interpolation in time (for the LSTM path), lazily.

    An 8-day composite is taken to represent the middle of its period (start + length/2,
    ``period_days`` when present, else 8 days); days are placed at their start (00:00). Days
    before the first or after the last period centre are NaN (no extrapolation).
    """
    t = pd.DatetimeIndex(da["time"].values)
    if "period_days" in da.coords:
        lengths = np.asarray(da["period_days"].values, dtype=float)
    else:
        lengths = np.full(len(t), 8.0)
    centres = t + pd.to_timedelta(lengths / 2.0, unit="D")
    start = pd.Timestamp(start) if start is not None else t[0]
    end = pd.Timestamp(end) if end is not None else (t[-1] + pd.Timedelta(days=float(lengths[-1]) - 1))
    days = pd.date_range(start.normalize(), end.normalize(), freq="D")
    src = da.drop_vars([c for c in ("period_days",) if c in da.coords]).assign_coords(time=centres)
    if src.chunks is not None:
        src = src.chunk({"time": -1})
    out = src.interp(time=days, method="linear")
    out.attrs = {**da.attrs, "comment": "daily values linearly interpolated between period centres"}
    return out


#: period of the day-of-year encoding (days): the mean calendar year
DOY_PERIOD = 365.25


def day_of_year_angle(time) -> np.ndarray:
    """The day of year on the unit circle: ``2 pi (DOY - 1) / 365.25`` (radians, float64).

    The project's one day-of-year encoding: :func:`sin_doy` (cube variable ``sin_doy``) and the
    LSTM's ``doy_sin``/``doy_cos`` (:func:`globalflux.models.lstm.add_doy_features`) are its
    sine and cosine. 1 January is angle 0 in every year; a fixed period (not 365 or 366 by year)
    keeps consecutive days equally spaced across year ends. (This is the formula the LSTM was
    trained with in the committed real runs; ``sin_doy`` used ``2 pi DOY / days-in-year``
    before, at most 0.02 away.)
    """
    t = pd.DatetimeIndex(pd.to_datetime(np.asarray(time)))
    return 2.0 * np.pi * (t.day_of_year.to_numpy().astype("float64") - 1.0) / DOY_PERIOD


def sin_doy(time) -> xr.DataArray:
    """sin of :func:`day_of_year_angle`: the seasonal phase feature, over ``time`` (float32)."""
    t = pd.DatetimeIndex(pd.to_datetime(np.asarray(time)))
    vals = np.sin(day_of_year_angle(t)).astype("float32")
    return xr.DataArray(vals, dims="time", coords={"time": t.to_numpy()}, name="sin_doy",
                        attrs={"units": "1", "long_name": "sine of day of year, "
                               "sin(2 pi (DOY - 1) / 365.25)"})


def annual_stats(da: xr.DataArray, years=None) -> xr.Dataset:
    """Annual maximum, minimum and mean of a variable per observation year (lazy).

    Parameters
    ----------
    da
        DataArray with a ``time`` dim (e.g. 8-day composites).
    years
        Observation years to keep (e.g. the years with site data); default: all years present.

    Returns
    -------
    Dataset
        ``<name>_max``, ``<name>_min``, ``<name>_mean`` with dims ``(year, ...)``; NaN (fill or
        QC-masked values) is skipped, a pixel with no valid value in a year is NaN.
    """
    name = da.name or "var"
    if years is not None:
        keep = np.isin(pd.DatetimeIndex(da["time"].values).year, np.asarray(list(years)))
        da = da.isel(time=np.flatnonzero(keep))
    g = da.groupby("time.year")
    out = xr.Dataset({
        f"{name}_max": g.max(skipna=True),
        f"{name}_min": g.min(skipna=True),
        f"{name}_mean": g.mean(skipna=True),
    })
    for stat in ("max", "min", "mean"):
        out[f"{name}_{stat}"].attrs = {**da.attrs, "cell_methods": f"time: {stat} within year"}
    return out


# ------------------------------------------------------------------------------------ indices


def ndvi(nir: xr.DataArray, red: xr.DataArray) -> xr.DataArray:
    """Normalised difference vegetation index, NDVI = (NIR - red) / (NIR + red).

    Inputs are surface reflectance (0-1; MOD09A1 sur_refl_b02 and b01 after scale 1e-4).
    Tucker (1979), Remote Sens. Environ. 8, 127-150.
    """
    out = (nir - red) / (nir + red)
    return _index_attrs(out, "ndvi", "normalised difference vegetation index (NIR-red)/(NIR+red)")


def evi(nir: xr.DataArray, red: xr.DataArray, blue: xr.DataArray) -> xr.DataArray:
    """Enhanced vegetation index (Huete et al. 2002):

    EVI = G (NIR - red) / (NIR + C1 red - C2 blue + L), G = 2.5, C1 = 6, C2 = 7.5, L = 1.

    MOD09A1 bands: NIR b02, red b01, blue b03 (reflectance 0-1).
    """
    out = 2.5 * (nir - red) / (nir + 6.0 * red - 7.5 * blue + 1.0)
    return _index_attrs(out, "evi", "enhanced vegetation index 2.5(NIR-red)/(NIR+6red-7.5blue+1)")


def lswi(nir: xr.DataArray, swir: xr.DataArray) -> xr.DataArray:
    """Land surface water index, LSWI = (NIR - SWIR) / (NIR + SWIR) (Xiao et al. 2004).

    MOD09A1 bands: NIR b02 (841-876 nm), SWIR b06 (1628-1652 nm), reflectance 0-1.
    """
    out = (nir - swir) / (nir + swir)
    return _index_attrs(out, "lswi", "land surface water index (NIR-SWIR)/(NIR+SWIR)")


def _index_attrs(da: xr.DataArray, name: str, long_name: str) -> xr.DataArray:
    """``da`` with non-finite values (zero denominators) masked, named and given CF attrs."""
    da = da.where(np.isfinite(da)).rename(name)
    da.attrs = {"units": "1", "long_name": long_name}
    return da


# ---------------------------------------------------------------------------- zone factors


def zone_factors(
    tem: xr.DataArray,
    pre: xr.DataArray,
    ndvi_: xr.DataArray,
    lswi_: xr.DataArray,
    dem: xr.DataArray,
    soc: xr.DataArray,
    *,
    growing_season: xr.DataArray | None = None,
    tem_threshold: float = 0.0,
) -> xr.Dataset:
    """Multi-year means of the six zone factors of Zhu et al. (2024): TEM, PRE, NDVI,
    growing-season LSWI, DEM and SOC (lazy).

    Parameters
    ----------
    tem
        Air temperature (°C), dims ``(time, y, x)``.
    pre
        Precipitation per time step (mm), dims ``(time, y, x)``; PRE is the mean annual total
        (sum within each year, then the mean over years).
    ndvi_, lswi_
        NDVI and LSWI, dims ``(time, y, x)``.
    dem, soc
        Static elevation (m) and soil organic carbon; passed through.
    growing_season
        Boolean ``(time, y, x)``: time steps in the growing season. Default: ``tem >
        tem_threshold`` (°C), a thermal growing season.

    Returns
    -------
    Dataset with ``TEM`` (°C), ``PRE`` (mm yr-1), ``NDVI``, ``LSWI_GS``, ``DEM`` (m), ``SOC``.
    """
    check_time_axes({"tem": tem, "pre": pre, "ndvi": ndvi_, "lswi": lswi_})
    gs = growing_season if growing_season is not None else tem > tem_threshold
    annual_pre = pre.groupby("time.year").sum(skipna=True, min_count=1)
    out = xr.Dataset({
        "TEM": tem.mean("time", skipna=True).astype("float32"),
        "PRE": annual_pre.mean("year", skipna=True).astype("float32"),
        "NDVI": ndvi_.mean("time", skipna=True).astype("float32"),
        "LSWI_GS": lswi_.where(gs).mean("time", skipna=True).astype("float32"),
        "DEM": dem.astype("float32"),
        "SOC": soc.astype("float32"),
    })
    meta = {
        "TEM": ("degC", "multi-year mean air temperature"),
        "PRE": ("mm yr-1", "multi-year mean annual precipitation"),
        "NDVI": ("1", "multi-year mean NDVI"),
        "LSWI_GS": ("1", f"multi-year mean growing-season LSWI (growing season: "
                         f"{'given mask' if growing_season is not None else f'TEM > {tem_threshold} degC'})"),
        "DEM": ("m", "elevation"),
        "SOC": ("t ha-1", "soil organic carbon"),
    }
    for k, (u, ln) in meta.items():
        out[k].attrs = {"units": u, "long_name": ln}
    return out


# ---------------------------------------------------------------------------------- chunking


def choose_chunks(
    sizes: Mapping[str, int],
    itemsize: int,
    *,
    target_mb: float = 32.0,
    min_mb: float = 10.0,
    max_mb: float = 100.0,
) -> dict[str, int]:
    """Chunk sizes for time-series access: the whole ``time`` axis in one chunk and square-ish
    spatial tiles sized to about ``target_mb`` (kept within ``[min_mb, max_mb]`` when the
    array is that big; an array smaller than ``min_mb`` is one chunk).

    Parameters
    ----------
    sizes
        Dimension sizes, e.g. ``{"time": 460, "y": 3600, "x": 7200}``.
    itemsize
        Bytes per value (4 for float32).
    """
    nt = int(sizes.get("time", 1))
    ny, nx = int(sizes["y"]), int(sizes["x"])
    other = int(np.prod([v for k, v in sizes.items() if k not in ("time", "y", "x")] or [1]))
    column = nt * other * itemsize  # bytes of one pixel's full series
    total = column * ny * nx
    chunks: dict[str, int] = {k: int(v) for k, v in sizes.items()}
    if total <= min_mb * 2**20:
        return chunks
    pixels = max(1, int(target_mb * 2**20 // column))
    side = max(1, int(np.sqrt(pixels)))
    cy = min(ny, side)
    cx = min(nx, max(1, pixels // cy))
    while cy * cx * column > max_mb * 2**20 and cy > 1:
        cy = max(1, cy // 2)
    chunks["y"], chunks["x"] = cy, cx
    if "time" in sizes:
        chunks["time"] = nt
    return chunks


def _snap_chunk(target: int, current: tuple[int, ...], size: int) -> int:
    """A chunk length near ``target`` aligned with the existing Dask chunks along a dim.

    Merging whole source chunks (a multiple of them) or splitting one evenly (a divisor) lets
    each source chunk feed as few output chunks as possible, so the write never holds several
    partly consumed source chunks: peak memory stays bounded (see benchmarks/bench_cube.py).
    """
    c = int(current[0]) if current else target
    if c <= 0 or c >= size:
        return target
    if c <= target:
        return min(size, c * max(1, int(round(target / c))))
    return max(1, -(-c // max(1, int(round(c / target)))))


def finalize_cube(
    ds: xr.Dataset,
    grid: GridSpec,
    *,
    attrs: Mapping[str, Any] | None = None,
    chunks: Mapping[str, int] | None = None,
    target_mb: float = 32.0,
) -> xr.Dataset:
    """Chunk a cube for writing and set CF attributes, the CRS and global (provenance) attrs.

    Parameters
    ----------
    ds
        The cube (dims ``(time, y, x)`` or ``(y, x)``).
    grid
        Its grid (the CRS written with rioxarray).
    attrs
        Global attributes, e.g. from :func:`globalflux.provenance.provenance_attrs`.
    chunks
        Explicit chunks; default: :func:`choose_chunks` per variable size (the largest itemsize
        decides), recorded in the ``chunking`` attr.
    """
    itemsize = max((v.dtype.itemsize for v in ds.data_vars.values()), default=4)
    if chunks:
        chunks = dict(chunks)
    else:
        chunks = choose_chunks(dict(ds.sizes), itemsize, target_mb=target_mb)
        lazy = [v for v in ds.data_vars.values() if v.chunks is not None]
        if lazy:  # align with the chunks of the biggest variable (its reads dominate)
            big = max(lazy, key=lambda v: v.nbytes)
            for dim in ("y", "x"):
                if dim in chunks and dim in big.chunksizes:
                    chunks[dim] = _snap_chunk(chunks[dim], big.chunksizes[dim], ds.sizes[dim])
    chunks = {k: v for k, v in chunks.items() if k in ds.dims}
    out = ds.chunk(chunks)
    out = out.rio.write_crs(grid.crs)
    for v in out.data_vars:
        out[v].attrs.setdefault("grid_mapping", "spatial_ref")
        out[v].encoding.pop("grid_mapping", None)
    out.attrs = {**ds.attrs, **(attrs or {}), "chunking": ",".join(f"{k}={v}" for k, v in chunks.items()),
                 "grid_resolution": grid.resolution, "grid_bbox": ",".join(str(b) for b in grid.bbox.as_tuple())}
    return out


#: Kilometres per degree of latitude on the mean Earth sphere (R = 6371.0088 km).
KM_PER_DEGREE = 6371.0088 * np.pi / 180.0


def fill_nearest(cube: xr.Dataset, variables: Sequence[str], *, max_km: float,
                 where: xr.DataArray | None = None) -> tuple[xr.Dataset, xr.DataArray]:
    """Fill missing pixels of static layers with the nearest valid pixel within ``max_km``.

    For each variable separately, a pixel that is NaN (and inside ``where``, e.g. the land mask)
    takes the value of the nearest finite pixel of the same variable when that pixel is at most
    ``max_km`` away; farther gaps stay NaN. Distances are Euclidean on the regular lat/lon grid
    with both axes scaled at the equator (1 degree = 111.2 km), so east-west distances away
    from the equator are over-estimated by 1/cos(lat): the fill never reaches farther than
    ``max_km`` (it reaches less far at high latitudes). Implemented with
    :func:`scipy.ndimage.distance_transform_edt` (nearest-feature indices).

    Parameters
    ----------
    cube
        Dataset with 2-D ``(y, x)`` layers on a regular latitude/longitude grid (degrees).
    variables
        Layers to fill (others are returned unchanged).
    max_km
        Largest distance (km) a value is carried; 0 fills nothing.
    where
        Boolean (y, x) mask of the pixels that may be filled (default: every pixel).

    Returns
    -------
    filled
        A copy of ``cube`` with the gaps filled (computed, not lazy).
    flag
        ``gap_filled`` (y, x) uint8: 1 where any of ``variables`` was filled, else 0; its
        ``filled_variables`` attribute lists the variables, ``max_km`` the distance.
    """
    from scipy import ndimage

    if not (np.isfinite(max_km) and max_km >= 0):
        raise DataError(f"max_km={max_km!r}", where="validation.gap_fill_km",
                        fix="Give a distance in km >= 0 (0: no fill).")
    ys, xs = cube["y"].values, cube["x"].values
    dy = abs(float(ys[1] - ys[0])) if len(ys) > 1 else 1.0
    dx = abs(float(xs[1] - xs[0])) if len(xs) > 1 else 1.0
    sampling = (dy * KM_PER_DEGREE, dx * KM_PER_DEGREE)
    allowed = (np.ones((len(ys), len(xs)), dtype=bool) if where is None
               else np.asarray(where.transpose("y", "x").values, dtype=bool))
    out = cube.copy()
    flag = np.zeros((len(ys), len(xs)), dtype="uint8")
    done = []
    for v in variables:
        da = cube[v].transpose("y", "x")
        vals = np.asarray(da.values, dtype="float64")
        valid = np.isfinite(vals)
        gaps = ~valid & allowed
        if not gaps.any() or not valid.any() or max_km == 0:
            continue
        dist, (iy, ix) = ndimage.distance_transform_edt(~valid, sampling=sampling,
                                                        return_indices=True)
        fill = gaps & (dist <= max_km)
        if not fill.any():
            continue
        new = vals.copy()
        new[fill] = vals[iy[fill], ix[fill]]
        out[v] = da.copy(data=new.astype(da.dtype if da.dtype.kind == "f" else "float64"))
        out[v].attrs = dict(da.attrs, gap_fill=f"nearest valid pixel within {max_km:g} km")
        flag[fill] = 1
        done.append(v)
    flag_da = xr.DataArray(flag, dims=("y", "x"), coords={"y": cube["y"], "x": cube["x"]},
                           name="gap_filled",
                           attrs={"units": "1", "long_name": "1 where a predictor was filled "
                                  "from the nearest valid pixel", "filled_variables": ",".join(done),
                                  "max_km": float(max_km)})
    return out, flag_da


def fill_short_gaps(x: np.ndarray, days: int) -> np.ndarray:
    """Linear interpolation across interior gaps of at most ``days`` missing days (1-D)."""
    x = np.asarray(x, dtype="float64")
    ok = np.isfinite(x)
    if days <= 0 or ok.sum() < 2:
        return x
    idx = np.arange(x.size)
    good = idx[ok]
    filled = np.interp(idx, good, x[ok])
    # length of the gap each missing day sits in: distance between the finite neighbours - 1
    nxt = np.searchsorted(good, idx)  # first finite index >= idx
    inside = (~ok) & (nxt > 0) & (nxt < good.size)
    gap = np.zeros(x.size, dtype=int)
    gap[inside] = good[nxt[inside]] - good[nxt[inside] - 1] - 1
    out = x.copy()
    use = inside & (gap <= days)
    out[use] = filled[use]
    return out


def fill_short_gaps_dataset(ds: xr.Dataset, variables: list[str], days: int,
                            dim: str = "time") -> xr.Dataset:
    """:func:`fill_short_gaps` along ``dim`` for each of ``variables`` (every other dimension
    kept, e.g. sites); the other variables are untouched."""
    if days <= 0:
        return ds
    out = ds.copy()
    for d in variables:
        da = ds[d]
        other = [x for x in da.dims if x != dim]
        arr = da.transpose(*other, dim).values
        flat = arr.reshape(-1, arr.shape[-1])
        filled = np.stack([fill_short_gaps(a, days) for a in flat]).reshape(arr.shape)
        out[d] = xr.DataArray(filled, dims=(*other, dim), coords=da.transpose(*other, dim).coords,
                              attrs=da.attrs).transpose(*da.dims)
    return out
