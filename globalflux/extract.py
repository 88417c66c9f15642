"""Site extraction: sample a predictor cube at site coordinates and join with site tables.

DESIGN.md places site extraction in ``sites.py``; it lives here (owned by the cube issue) so
the sites module stays free of grid logic. Pure functions on xarray/pandas objects.

Public API
----------
``sample_points(cube, points, *, method="nearest", window=3) -> DataFrame``
    One row per point (per time when the cube has time) with the cube's variables.
``join_sites(samples, long_table, *, on="8day") -> DataFrame``
    The training table: observed variables (wide) of each site and period/day, joined with the
    predictors sampled at that site and period/day.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from .errors import DataError, GridError, RecipeError
from .grid import grid_of, modis_8day_start

__all__ = ["sample_points", "join_sites", "pixel_index", "sample_nearest_valid"]


def _points_frame(points: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("site_id", "lat", "lon") if c not in points.columns]
    if missing:
        raise DataError(f"points table lacks columns {missing}", where="points",
                        fix="Give a table with site_id, lat, lon (degrees) and optionally time.")
    p = points.reset_index(drop=True)
    lat = pd.to_numeric(p["lat"], errors="coerce").to_numpy(dtype="float64")
    lon = pd.to_numeric(p["lon"], errors="coerce").to_numpy(dtype="float64")
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90) | (np.abs(lon) > 180)
    if bad.any():
        sites = p.loc[bad, "site_id"].astype(str).unique()[:5].tolist()
        raise DataError(f"invalid coordinates at sites {sites}", where="points",
                        fix="Give lat in -90..90 and lon in -180..180 degrees for every site.")
    return p


def pixel_index(cube: xr.Dataset | xr.DataArray, lon, lat, site_ids: Sequence[str] | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of the pixel holding each point (lon/lat degrees; transformed to the cube CRS).

    Raises
    ------
    GridError
        For points outside the cube, naming the sites.
    """
    grid = grid_of(cube, where="cube")
    x = np.asarray(lon, dtype="float64")
    y = np.asarray(lat, dtype="float64")
    if not grid.is_geographic:
        from pyproj import Transformer

        tr = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
        x, y = tr.transform(x, y)
    inside = grid.contains(x, y)
    if not inside.all():
        ids = np.asarray(site_ids if site_ids is not None else np.arange(x.size)).astype(str)
        out = ids[~inside][:5].tolist()
        raise GridError(
            f"{(~inside).sum()} site(s) outside the cube extent {grid.bbox.as_tuple()}: {out}",
            where=f"site {out[0]}",
            fix="Drop these sites or build the cube over a bbox that covers them.",
        )
    ny, nx = grid.shape
    col = np.clip(np.floor((x - grid.bbox.west) / grid.resolution).astype(int), 0, nx - 1)
    row = np.clip(np.floor((grid.bbox.north - y) / grid.resolution).astype(int), 0, ny - 1)
    y_desc = bool(cube["y"].values[0] > cube["y"].values[-1])
    if not y_desc:
        row = ny - 1 - row
    return row, col


def _window_mean(block: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN windows -> NaN
            return np.nanmean(block, axis=axes)


def sample_points(
    cube: xr.Dataset,
    points: pd.DataFrame,
    *,
    method: Literal["nearest", "window"] = "nearest",
    window: int = 3,
    variables: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Sample a cube at site coordinates.

    Parameters
    ----------
    cube
        Dataset with dims ``(y, x)`` or ``(time, y, x)`` and a CRS (rioxarray).
    points
        Columns ``site_id``, ``lat``, ``lon`` (degrees, WGS84) and optionally ``time``.
    method
        ``"nearest"``: the pixel holding the site. ``"window"``: the NaN-ignoring mean of the
        ``window`` x ``window`` pixels centred on it (pixels beyond the cube edge are left out).
        Categorical variables (integer or bool dtype) always take the centre pixel.
    window
        Odd window size in pixels.
    variables
        Variables to sample (default: all data variables).

    Returns
    -------
    DataFrame
        ``site_id, lat, lon`` (as given), ``[time]``, ``pixel_x, pixel_y`` (centre of the site's
        pixel, cube CRS) and one column per variable. Without ``time`` in ``points``: one row per
        point and cube time. With ``time`` in ``points`` and in the cube: one row per point, with
        the cube step holding that time (the last cube time <= it; NaN before the first).

    Raises
    ------
    GridError
        A point outside the cube (the site is named).
    RecipeError
        ``method``/``window`` invalid.
    """
    if method not in ("nearest", "window"):
        raise RecipeError(f"unknown extraction method {method!r}", where="cube.extraction",
                          fix="Use 'nearest' or 'window'.")
    if method == "window" and (window < 1 or window % 2 == 0):
        raise RecipeError(f"window {window} must be a positive odd number", where="cube.window",
                          fix="Use 1, 3, 5, ...")
    p = _points_frame(points)
    names = list(variables) if variables is not None else list(cube.data_vars)
    missing = [v for v in names if v not in cube.data_vars]
    if missing:
        raise DataError(f"variables {missing} not in the cube", where="cube",
                        fix=f"Choose among {sorted(cube.data_vars)}.")
    ds = cube[names]
    ds = ds.drop_vars([c for c in ds.coords if c not in ds.dims and c != "spatial_ref"], errors="ignore")
    row, col = pixel_index(ds, p["lon"], p["lat"], p["site_id"].astype(str).tolist())
    has_time = "time" in ds.dims
    rows = xr.DataArray(row, dims="point")
    cols = xr.DataArray(col, dims="point")
    sel: dict[str, xr.DataArray] = {"y": rows, "x": cols}
    tidx = None
    if has_time and "time" in p.columns:
        times = pd.DatetimeIndex(pd.to_datetime(p["time"]))
        cube_t = pd.DatetimeIndex(ds["time"].values)
        pos = cube_t.searchsorted(times, side="right") - 1
        tidx = pos
        sel["time"] = xr.DataArray(np.clip(pos, 0, len(cube_t) - 1), dims="point")
    centre = ds.isel(sel).compute()
    # every sampled variable as (point,) or (point, time)
    values: dict[str, np.ndarray] = {}
    for v in names:
        values[v] = centre[v].transpose("point", ...).values
    if method == "window" and window > 1:
        h = window // 2
        ny, nx = ds.sizes["y"], ds.sizes["x"]
        off = np.arange(-h, h + 1)
        r2 = row[:, None] + off[None, :]
        c2 = col[:, None] + off[None, :]
        valid = (xr.DataArray((r2 >= 0) & (r2 < ny), dims=("point", "wy"))
                 & xr.DataArray((c2 >= 0) & (c2 < nx), dims=("point", "wx")))
        wsel = {"y": xr.DataArray(np.clip(r2, 0, ny - 1), dims=("point", "wy")),
                "x": xr.DataArray(np.clip(c2, 0, nx - 1), dims=("point", "wx"))}
        if "time" in sel:
            wsel["time"] = sel["time"]
        floats = [v for v in names if ds[v].dtype.kind == "f"]
        if floats:
            win = ds[floats].isel(wsel).compute()
            for v in floats:
                a = win[v].where(valid).transpose("point", ..., "wy", "wx").values.astype("float64")
                values[v] = _window_mean(a, (-2, -1)).astype(ds[v].dtype)
    grid = grid_of(ds, where="cube")
    py_rows = row if bool(ds["y"].values[0] > ds["y"].values[-1]) else (grid.shape[0] - 1 - row)
    base = p[["site_id", "lat", "lon"]].copy()
    base["pixel_x"] = grid.bbox.west + (col + 0.5) * grid.resolution
    base["pixel_y"] = grid.bbox.north - (py_rows + 0.5) * grid.resolution
    if has_time and tidx is None:  # every point at every cube time
        cube_t = pd.DatetimeIndex(ds["time"].values)
        out = base.loc[base.index.repeat(len(cube_t))].reset_index(drop=True)
        out.insert(3, "time", np.tile(cube_t.to_numpy(), len(base)))
        for v in names:
            a = values[v]
            if a.ndim == 1:  # a static variable in a time cube
                a = np.broadcast_to(a[:, None], (a.shape[0], len(cube_t)))
            out[v] = a.reshape(-1)
        return out
    out = base
    if has_time:
        cube_t = pd.DatetimeIndex(ds["time"].values)
        before = tidx < 0
        out.insert(3, "time", pd.DatetimeIndex(pd.to_datetime(p["time"])).to_numpy())
        out.insert(4, "cube_time", cube_t[np.clip(tidx, 0, None)].to_numpy())
        out.loc[before, "cube_time"] = pd.NaT
        for v in names:
            vals = values[v]
            if before.any():
                vals = vals.astype("float64") if vals.dtype.kind != "f" else vals.copy()
                vals[before] = np.nan
            out[v] = vals
        return out
    for v in names:
        out[v] = values[v]
    return out


def join_sites(samples: pd.DataFrame, long_table: pd.DataFrame, *,
               on: Literal["8day", "day"] = "8day") -> pd.DataFrame:
    """Join site observations with predictors sampled at the sites: the training table.

    Parameters
    ----------
    samples
        From :func:`sample_points`: ``site_id``, optional ``time`` (cube step) and predictor
        columns. Without ``time`` (a static cube) predictors join on ``site_id`` only.
    long_table
        Canonical long site table (``site_id, lat, lon, igbp, time, variable, value, units, n``;
        see :mod:`globalflux.sites`). Observed variables become columns (their values); ``n`` of
        each becomes ``n_<variable>``.
    on
        ``"8day"``: observations and samples are keyed by the MODIS 8-day period holding their
        date (a daily table then gets the predictors of its period); ``"day"``: by calendar day.

    Returns
    -------
    DataFrame
        One row per site and observation step: ``site_id, lat, lon, igbp, time`` (the
        observation's own time), ``period`` (the join key), observed variables, ``n_*``, then the
        predictors. Observation rows without predictors for their step keep NaN predictors.

    Raises
    ------
    DataError
        Missing columns, or no site in common between the two tables.
    """
    if on not in ("8day", "day"):
        raise RecipeError(f"unknown join step {on!r}", where="on", fix="Use '8day' or 'day'.")
    need = ["site_id", "time", "variable", "value"]
    miss = [c for c in need if c not in long_table.columns]
    if miss:
        raise DataError(f"site table lacks columns {miss}", where="long_table",
                        fix="Give the canonical long table of globalflux.sites.")
    if "site_id" not in samples.columns:
        raise DataError("samples lack site_id", where="samples", fix="Use sample_points() output.")
    lt = long_table.copy()
    lt["site_id"] = lt["site_id"].astype(str)
    sm = samples.copy()
    sm["site_id"] = sm["site_id"].astype(str)
    common = set(lt["site_id"]) & set(sm["site_id"])
    if not common:
        raise DataError("no site_id in common between the site table and the samples",
                        where="join_sites", fix="Sample the cube at the sites of the table.")
    key = _key(lt["time"], on)
    lt["period"] = key
    obs = lt.pivot_table(index=["site_id", "time", "period"], columns="variable", values="value",
                         aggfunc="mean", observed=True)
    obs.columns = [str(c) for c in obs.columns]
    if "n" in lt.columns:
        n = lt.pivot_table(index=["site_id", "time", "period"], columns="variable", values="n",
                           aggfunc="sum", observed=True)
        n.columns = [f"n_{c}" for c in n.columns]
        obs = obs.join(n)
    obs = obs.reset_index()
    attrs = [c for c in ("lat", "lon", "igbp") if c in lt.columns]
    if attrs:
        site_attrs = lt.groupby("site_id", observed=True)[attrs].first().reset_index()
        obs = obs.merge(site_attrs, on="site_id", how="left")
    front = ["site_id"] + attrs + ["time", "period"]
    obs = obs[front + [c for c in obs.columns if c not in front]]
    drop = [c for c in ("lat", "lon", "pixel_x", "pixel_y", "cube_time") if c in sm.columns]
    pred = sm.drop(columns=drop)
    pred = pred.rename(columns={c: f"{c}_pred" for c in pred.columns if c in obs.columns and c not in ("site_id", "time")})
    if "time" in pred.columns:
        pred["period"] = _key(pred.pop("time"), on)
        pred = pred.drop_duplicates(["site_id", "period"])
        out = obs.merge(pred, on=["site_id", "period"], how="left")
    else:
        pred = pred.drop_duplicates(["site_id"])
        out = obs.merge(pred, on="site_id", how="left")
    return out.sort_values(["site_id", "time"], kind="stable").reset_index(drop=True)


def _key(time, on: str) -> pd.DatetimeIndex:
    t = pd.DatetimeIndex(pd.to_datetime(np.asarray(time)))
    if on == "8day":
        return modis_8day_start(t)
    return t.normalize()


def sample_nearest_valid(grid: xr.DataArray, lat: np.ndarray, lon: np.ndarray,
                          radius: int = 2) -> np.ndarray:
    """Value of a (y, x) grid at each site: the nearest cell; a NaN cell (coast) falls back to
    the mean of the finite cells within ``radius`` cells (lat/lon in the grid's degrees)."""
    ys = grid["y"].values
    xs = grid["x"].values
    out = np.full(lat.shape, np.nan)
    for k, (la, lo) in enumerate(zip(lat, lon, strict=True)):
        if not (np.isfinite(la) and np.isfinite(lo)):
            continue
        i = int(np.abs(ys - la).argmin())
        j = int(np.abs(xs - lo).argmin())
        v = float(grid.isel(y=i, x=j).values)
        if np.isfinite(v):
            out[k] = v
            continue
        block = np.asarray(grid.isel(y=slice(max(i - radius, 0), i + radius + 1),
                                     x=slice(max(j - radius, 0), j + radius + 1)).values, float)
        if np.isfinite(block).any():
            out[k] = float(np.nanmean(block))
    return out
