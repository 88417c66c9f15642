"""Workflow ``static_cube``: the real static predictor cube from ``../shared/data/grids``.

Stages (library calls only):

1. :func:`globalflux.io.static_grids.open_static_sources` opens every layer lazily on its native
   grid (30" land mask and Köppen, 0.05° MCD12C1 and NDVI envelope, 20' ETOPO, 0.5° MAT/MAP/SOC).
2. :func:`globalflux.cube.static_cube` puts them on one global grid (``cube.grid``; 0.05° or
   0.5°): categorical layers by majority, continuous ones by area average.
3. :func:`globalflux.cube.finalize_cube` chunks it (10-100 MB chunks), sets CF attributes, the
   CRS and provenance (input checksums, recipe, version);
   :func:`globalflux.io.store.write_cube` writes ``OUT/maps/<cube.store>`` atomically in one pass
   that also proves no layer is all nodata.
4. Per-variable summary (``OUT/metrics/cube_summary.csv``), optional site samples
   (``cube.sites`` -> ``OUT/metrics/site_samples.csv``), a map figure and ``OUT/report.md``.

The cube feeds the zones issue (Köppen, land cover, MAT/MAP/SOC, relief, NDVI envelope).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputFileError, RecipeError

__all__ = ["SECTIONS", "run", "summarise", "read_points", "global_static_cube"]

SECTIONS = ("cube",)

log = logging.getLogger("globalflux")


def summarise(ds) -> pd.DataFrame:
    """Per-variable summary of a (written, reopened) cube: dtype, units, valid count, min/mean/max."""
    rows = []
    for v in ds.data_vars:
        da = ds[v]
        if da.dtype == bool:
            n_true = int(da.sum().compute())
            rows.append({"variable": v, "dtype": str(da.dtype), "units": da.attrs.get("units", ""),
                         "valid": int(da.size), "min": 0.0, "mean": n_true / da.size, "max": 1.0,
                         "resampling": da.attrs.get("resampling", "")})
            continue
        x = da.astype("float64")
        fill = da.attrs.get("flag_fill")
        if fill is not None:
            x = x.where(da != fill)
        import dask

        n, lo, mu, hi = dask.compute(x.notnull().sum(), x.min(), x.mean(), x.max())
        rows.append({"variable": v, "dtype": str(da.dtype), "units": da.attrs.get("units", ""),
                     "valid": int(n), "min": float(lo), "mean": float(mu), "max": float(hi),
                     "resampling": da.attrs.get("resampling", "")})
    return pd.DataFrame(rows)


def read_points(path: str | Path) -> pd.DataFrame:
    """A site table (CSV or Parquet) with ``site_id, lat, lon`` (I/O helper for workflows)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError("site table not found", where=str(p), fix="Check cube.sites.")
    try:
        df = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p)
    except Exception as exc:
        raise InputFileError(f"cannot read the site table ({exc})", where=str(p),
                             fix="Give a CSV or Parquet file with site_id, lat, lon.") from None
    return df


def run(recipe, ctx) -> None:
    from ..cube import finalize_cube, static_cube
    from ..extract import sample_points
    from ..grid import make_grid
    from ..io.rasters import file_checksum
    from ..io.static_grids import STATIC_FILES, open_static_sources, static_source_files
    from ..io.store import open_dataset, write_cube
    from ..provenance import provenance_attrs
    from ..report import markdown_table, write_report

    cfg = recipe.cube
    if cfg.source != "static":
        raise RecipeError(f"cube.source is {cfg.source!r}", where="cube.source",
                          fix="The static_cube workflow builds source: static; use stac_cube for rasters/stac.")
    grid = make_grid(cfg.grid.crs, cfg.grid.resolution, cfg.grid.bbox)
    unknown = [n for n in cfg.static_layers if n not in ("land_mask",) + tuple(STATIC_FILES) + ("mat", "map", "soc")]
    if unknown:
        raise RecipeError(f"unknown static layers {unknown}", where="cube.static_layers",
                          fix="Use land_mask, land_cover, koppen, ndvi_max, ndvi_min, elevation, mat, map, soc.")
    store = ctx.maps / cfg.store
    files = static_source_files(cfg.static_root)
    want = {n: True for n in cfg.static_layers}
    used = {n: files["soilresp" if n in ("mat", "map", "soc") else n] for n in cfg.static_layers}
    if ctx.resume and store.exists():
        log.info("resume: %s exists, not rebuilt", store)
    else:
        with ctx.step("checksums of the static sources"):
            inputs = {n: f"{Path(p).name} {file_checksum(p)}" for n, p in used.items()}
        with ctx.step("open static sources lazily"):
            sources = open_static_sources(cfg.static_root, names=want)
        with ctx.step(f"assemble the static cube on {grid.shape} pixels of {grid.resolution}"):
            ds = static_cube(sources, grid, land_threshold=cfg.land_threshold)
            chunks = None if cfg.chunking == "auto" else {"y": cfg.chunk_y, "x": cfg.chunk_x}
            ds = finalize_cube(ds, grid, attrs=provenance_attrs(recipe=recipe, inputs=inputs),
                               chunks=chunks, target_mb=cfg.chunk_mb)
        if ctx.scheduler:
            ctx.client()
        with ctx.step(f"write {store}"):
            write_cube(ds, store, overwrite=True)
    cube = open_dataset(store)
    with ctx.step("summary"):
        summary = summarise(cube)
        summary.to_csv(ctx.metrics / "cube_summary.csv", index=False)
    sections = [
        ("Cube", f"`{store}`: grid {grid.crs} at {grid.resolution} ({grid.shape[0]} x {grid.shape[1]}), "
                 f"chunks {cube.attrs.get('chunking', '')}.\n\n" + markdown_table(summary, floatfmt=".3g")),
    ]
    if cfg.sites:
        pts = read_points(cfg.sites)
        samples = sample_points(cube, pts, method=cfg.extraction, window=cfg.window)
        samples.to_csv(ctx.metrics / "site_samples.csv", index=False)
        sections.append(("Site samples", f"{len(samples)} sites sampled ({cfg.extraction}) -> "
                                         "`metrics/site_samples.csv`."))
    try:
        from ..report import map_png

        for v in ("elevation", "koppen", "mat"):
            if v in cube:
                step = max(1, cube.sizes["x"] // 1440)
                arr = cube[v].isel(y=slice(None, None, step), x=slice(None, None, step))
                map_png(arr.astype("float32").where(arr != arr.attrs.get("flag_fill", np.nan)),
                        ctx.figures / f"{v}.png", title=v, units=arr.attrs.get("units", ""),
                        categorical=v == "koppen")
                sections.append((f"Map: {v}", f"![{v}](figures/{v}.png)"))
    except Exception as exc:  # figures are a convenience; never fail the build on them
        log.warning("map figure skipped: %s", exc)
    write_report(ctx.out / "report.md", f"Static predictor cube: {recipe.name}", sections,
                 provenance={"sources": cfg.static_root})


def global_static_cube(grids_root: str | Path, resolution: float, layers=None,
                       land_threshold: float = 0.5):
    """The global static predictor cube (lazy) at ``resolution`` degrees from the grids under
    ``grids_root`` (all layers, or those named in ``layers``)."""
    from ..cube import static_cube
    from ..grid import GridSpec
    from ..io.static_grids import open_static_sources

    names = None
    if layers is not None:
        names = {n: True for n in layers}
    sources = open_static_sources(grids_root, names=names)
    return static_cube(sources, GridSpec.global_latlon(float(resolution)),
                       land_threshold=land_threshold)
