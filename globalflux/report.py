"""Figures (matplotlib, Agg) and the markdown run report.

Functions take data (pandas/xarray) and a target path chosen by the workflow; a synthetic
product is stamped SYNTHETIC on every figure and at the top of the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .provenance import SYNTHETIC_NOTE

__all__ = ["axis_labels", "match_labels", "markdown_table", "scatter_obs_pred", "map_png",
           "map_panels_png", "write_report", "stamp", "save_figure", "png_metadata"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def stamp(fig, synthetic: bool) -> None:
    """Stamp a figure as SYNTHETIC (big, red, top-left) when it shows synthetic data."""
    if synthetic:
        fig.text(0.01, 0.99, "SYNTHETIC DATA", color="crimson", fontsize=11, fontweight="bold",
                 va="top", ha="left")


def save_figure(fig, path: str | Path, *, dpi: int, synthetic: bool, title: str = "") -> Path:
    """Save a PNG with text metadata: Software (globalflux version), Title, and for synthetic
    products ``Description`` = the SYNTHETIC note and ``Synthetic`` = "true"."""
    from . import __version__

    plt = _plt()
    meta = {"Software": f"globalflux {__version__}", "Title": title or Path(path).stem}
    if synthetic:
        meta.update({"Description": SYNTHETIC_NOTE, "Synthetic": "true"})
    path = Path(path)
    fig.savefig(path, dpi=dpi, metadata=meta)
    plt.close(fig)
    return path


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f", index: bool = False) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    if index:
        df = df.reset_index()
    cols = [str(c) for c in df.columns]

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "nan" if not np.isfinite(v) else format(float(v), floatfmt)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def scatter_obs_pred(
    obs,
    pred,
    path: str | Path,
    *,
    groups=None,
    title: str = "",
    units: str = "",
    synthetic: bool = False,
    dpi: int = 110,
    panels: Mapping[str, tuple[Iterable, Iterable]] | None = None,
) -> Path:
    """Observed-versus-predicted scatter with a 1:1 line; ``panels`` draws several side by side.

    ``groups`` colours points (e.g. zone). Each panel is annotated with n, R2 and RMSE.
    """
    from .metrics import r2, rmse

    plt = _plt()
    if panels is None:
        panels = {title or "LOSO": (obs, pred)}
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    for ax, (name, (o, p)) in zip(axes[0], panels.items()):
        o = np.asarray(o, dtype=float)
        p = np.asarray(p, dtype=float)
        if groups is not None and n == 1:
            g = np.asarray(groups)
            for lab in pd.unique(g):
                sel = g == lab
                ax.scatter(o[sel], p[sel], s=9, alpha=0.6, label=f"zone {lab}")
            ax.legend(fontsize=7, loc="lower right")
        else:
            ax.scatter(o, p, s=9, alpha=0.6)
        finite = np.isfinite(o) & np.isfinite(p)
        if finite.any():
            lo = float(min(o[finite].min(), p[finite].min()))
            hi = float(max(o[finite].max(), p[finite].max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"{name}\nn={int(finite.sum())} R2={r2(o, p):.2f} RMSE={rmse(o, p):.3g}", fontsize=9)
        ax.set_xlabel(f"observed {units}".strip())
        ax.set_ylabel(f"predicted {units}".strip())
    stamp(fig, synthetic)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, path, dpi=dpi, synthetic=synthetic,
                       title=title or "observed vs predicted")


def axis_labels(da) -> tuple[str, str]:
    """Axis labels of a map's last two dims: longitude/latitude in degrees for geographic grids,
    else the coordinate name with its units and the CRS (e.g. ``"x (m, EPSG:3035)"``)."""
    xname, yname = str(da.dims[-1]), str(da.dims[-2])
    xattrs = da[xname].attrs if xname in da.coords else {}
    yattrs = da[yname].attrs if yname in da.coords else {}
    crs = None
    try:
        import rioxarray  # noqa: F401

        crs = da.rio.crs
    except Exception:  # no rioxarray accessor on this object
        crs = None
    geographic = (xattrs.get("units") in ("degrees_east", "degree_east")
                  or xattrs.get("standard_name") == "longitude"
                  or xname in ("lon", "longitude")
                  or (crs is not None and crs.is_geographic))
    if geographic:
        return "longitude (°E)", "latitude (°N)"
    unit = xattrs.get("units") or (crs.linear_units if crs is not None else "") or ""
    unit = {"metre": "m", "meter": "m"}.get(unit, unit)
    where = crs.to_string() if crs is not None else ""
    inner = ", ".join(p for p in (unit, where) if p)
    ysuffix = ", ".join(p for p in (yattrs.get("units") or unit, where) if p)
    return (f"{xname} ({inner})" if inner else xname, f"{yname} ({ysuffix})" if ysuffix else yname)


def match_labels(true, recovered) -> dict[int, int]:
    """Map each recovered label to the true label it overlaps most, one to one (the Hungarian
    assignment on the contingency table, :func:`scipy.optimize.linear_sum_assignment`, which
    maximises the pixels whose labels agree). Recovered labels left without a partner (more
    recovered than true labels) get new numbers after the largest true label.

    Parameters
    ----------
    true, recovered
        Integer labels of the same pixels (1-D, equal length; no missing values).
    """
    from scipy.optimize import linear_sum_assignment

    t = np.asarray(true).astype(int).ravel()
    r = np.asarray(recovered).astype(int).ravel()
    tv, ti = np.unique(t, return_inverse=True)
    rv, ri = np.unique(r, return_inverse=True)
    cont = np.zeros((len(rv), len(tv)), dtype=np.int64)
    np.add.at(cont, (ri, ti), 1)
    rows, cols = linear_sum_assignment(cont, maximize=True)
    out = {int(rv[i]): int(tv[j]) for i, j in zip(rows, cols)}
    nxt = int(tv.max()) + 1 if tv.size else 0
    for v in rv:
        if int(v) not in out:
            out[int(v)] = nxt
            nxt += 1
    return out


def _categorical(plt, values: np.ndarray):
    """Discrete colours for the integer classes in ``values``: (cmap, norm, ticks)."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    classes = np.unique(values[np.isfinite(values)]).astype(int)
    if classes.size == 0:
        classes = np.array([0])
    lo, hi = int(classes.min()), int(classes.max())
    ticks = np.arange(lo, hi + 1)
    base = plt.get_cmap("tab10" if len(ticks) <= 10 else "tab20")
    cmap = ListedColormap([base(i % base.N) for i in range(len(ticks))])
    norm = BoundaryNorm(np.arange(lo - 0.5, hi + 1.5), cmap.N)
    return cmap, norm, ticks


def map_png(
    da,
    path: str | Path,
    *,
    title: str = "",
    cmap: str = "viridis",
    units: str = "",
    synthetic: bool = False,
    dpi: int = 110,
    categorical: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    points: tuple[Iterable, Iterable] | None = None,
) -> Path:
    """A 2-D map (DataArray with x/y or lon/lat coordinates) as PNG; optional site points."""
    plt = _plt()
    arr = np.asarray(da.values, dtype=float)
    xs = np.asarray(da[da.dims[-1]].values)
    ys = np.asarray(da[da.dims[-2]].values)
    extent = (float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max()))
    aspect = max(0.3, min(3.0, arr.shape[0] / max(arr.shape[1], 1)))
    fig, ax = plt.subplots(figsize=(7.0, 7.0 * aspect * 0.85 + 0.8))
    ticks = None
    if categorical:
        cm, norm, ticks = _categorical(plt, arr)
        im = ax.imshow(arr, extent=extent, origin="upper" if ys[0] > ys[-1] else "lower",
                       cmap=cm, norm=norm, interpolation="nearest")
    else:
        im = ax.imshow(arr, extent=extent, origin="upper" if ys[0] > ys[-1] else "lower", cmap=cmap,
                       vmin=vmin, vmax=vmax, interpolation="nearest")
    if points is not None:
        px, py = points
        ax.scatter(list(px), list(py), s=8, c="k", marker="^", label="sites")
        ax.legend(fontsize=7, loc="lower left")
    cb = fig.colorbar(im, ax=ax, shrink=0.8, ticks=ticks)
    cb.set_label(units)
    ax.set_title(title, fontsize=10)
    xl, yl = axis_labels(da)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    stamp(fig, synthetic)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return save_figure(fig, path, dpi=dpi, synthetic=synthetic, title=title)


def map_panels_png(
    panels: Mapping[str, Any],
    path: str | Path,
    *,
    cmap: str = "viridis",
    units: str = "",
    synthetic: bool = False,
    dpi: int = 110,
    categorical: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """Several 2-D maps of one grid side by side, on one colour scale (e.g. truth vs estimate).

    ``panels`` maps a title to a DataArray with y/x (or lat/lon) as its last two dims. With
    ``categorical=True`` every panel uses the same discrete colours for the same value and the
    colour bar has one box per class; to compare labellings, renumber one first with
    :func:`match_labels` (done by the demo for its recovered zones).
    """
    plt = _plt()
    arrays = {k: np.asarray(v.values, dtype=float) for k, v in panels.items()}
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays.values()] or [np.zeros(0)])
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    n = len(panels)
    first = next(iter(panels.values()))
    ny, nx = first.shape[-2:]
    aspect = max(0.3, min(3.0, ny / max(nx, 1)))
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n + 1.0, 4.6 * aspect + 0.9), squeeze=False,
                             layout="constrained")
    ticks = norm = None
    if categorical:
        cm, norm, ticks = _categorical(plt, finite)
    else:
        cm = plt.get_cmap(cmap)
    im = None
    for ax, (title, da) in zip(axes[0], panels.items()):
        xs = np.asarray(da[da.dims[-1]].values)
        ys = np.asarray(da[da.dims[-2]].values)
        extent = (float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max()))
        scale = {"norm": norm} if norm is not None else {"vmin": lo, "vmax": hi}
        im = ax.imshow(arrays[title], extent=extent, origin="upper" if ys[0] > ys[-1] else "lower",
                       cmap=cm, interpolation="nearest", **scale)
        ax.set_title(title, fontsize=9)
        xl, yl = axis_labels(da)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
    if im is not None:
        cb = fig.colorbar(im, ax=list(axes[0]), shrink=0.8, ticks=ticks)
        cb.set_label(units)
    stamp(fig, synthetic)
    return save_figure(fig, path, dpi=dpi, synthetic=synthetic, title=" | ".join(panels))


def png_metadata(path: str | Path) -> dict[str, str]:
    """The text metadata of a PNG written by :func:`save_figure`."""
    from PIL import Image

    with Image.open(path) as im:
        return {str(k): str(v) for k, v in im.text.items()}


def write_report(
    path: str | Path,
    title: str,
    sections: Iterable[tuple[str, str]],
    *,
    synthetic: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.md``: a title, a SYNTHETIC banner where due, sections, provenance."""
    from . import __version__

    parts = [f"# {title}", ""]
    if synthetic:
        parts += [f"> **{SYNTHETIC_NOTE}**", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    parts += ["## Provenance", "", f"- globalflux {__version__}"]
    for k, v in (provenance or {}).items():
        parts.append(f"- {k}: {v}")
    parts.append("")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
