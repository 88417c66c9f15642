"""Workflow ``stac_cube``: a time-varying predictor cube from STAC items or raster files.

``cube.source: stac`` -- items found with :func:`globalflux.io.stac.search_items` (a STAC API
such as Planetary Computer, or a local catalog / ItemCollection) and loaded with odc-stac onto
``cube.grid`` by :func:`globalflux.io.stac.load_products` (fill values, scale/offset and QC bits
of each product applied).

``cube.source: rasters`` -- GeoTIFF/COG, NetCDF or Zarr files (``cube.rasters``), one file or a
dated series per variable, decoded and QC-masked by :mod:`globalflux.io.rasters` and put on the
grid by :func:`globalflux.cube.regrid`.

Then (all lazy, :mod:`globalflux.cube`): NDVI/EVI/LSWI from reflectance (``cube.indices``),
MODIS 8-day compositing or daily interpolation (``cube.temporal``), a check that every variable
shares one time axis, annual max/min/mean per observation year (``cube.annual_stats``),
sin(DOY) (``cube.add_sin_doy``); chunking for time-series access and provenance (item ids or
file checksums); one atomic write to ``OUT/maps/<cube.store>``; optional site samples.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import xarray as xr

from ..errors import DataError, InputFileError, RecipeError

__all__ = ["SECTIONS", "run", "open_raster_sources", "derive", "build_cube"]

SECTIONS = ("cube",)

log = logging.getLogger("globalflux")


def _files(pattern: str, what: str) -> list[str]:
    if any(ch in pattern for ch in "*?["):
        files = sorted(glob.glob(pattern))
        if not files:
            raise InputFileError("no file matches the pattern", where=pattern, fix=f"Check cube.rasters.{what}.path.")
        return files
    if not Path(pattern).exists():
        raise InputFileError("source not found", where=pattern, fix=f"Check cube.rasters.{what}.path.")
    return [pattern]


def open_raster_sources(cfg, grid) -> tuple[dict[str, xr.DataArray], dict[str, str]]:
    """Open, decode, QC-mask and regrid every ``cube.rasters`` source; returns (arrays, checksums)."""
    from ..cube import regrid
    from ..io.products import QCRule
    from ..io.rasters import file_checksum, mask_qc, open_raster, open_raster_series

    if not cfg.rasters:
        raise RecipeError("no raster sources", where="cube.rasters",
                          fix="List sources as cube.rasters.<name>.path (file or glob).")
    arrays: dict[str, xr.DataArray] = {}
    inputs: dict[str, str] = {}
    for name, src in cfg.rasters.items():
        files = _files(src.path, name)
        kw = dict(variable=src.variable, band=src.band, crs=src.crs, nodata=src.nodata, scale=src.scale,
                  offset=src.offset, fill=src.fill, valid_range=src.valid_range,
                  categorical=src.categorical, units=src.units)
        series = len(files) > 1 or any(ch in src.path for ch in "*?[")
        da = open_raster_series(files, name=name, **kw) if series else open_raster(files[0], name=name, **kw)
        for f in files:
            inputs[f"{name}:{Path(f).name}"] = file_checksum(f)
        if src.qc_path:
            qfiles = _files(src.qc_path, name)
            qkw = dict(band=src.qc_band, crs=src.crs, decode_values=False, categorical=True)
            qc = open_raster_series(qfiles, name=f"{name}_qc", **qkw) if series else open_raster(qfiles[0], name=f"{name}_qc", **qkw)
            if qc.shape != da.shape:
                raise DataError(f"QC band shape {qc.shape} differs from the data {da.shape}",
                                where=src.qc_path, fix="Give the QC band of the same files/dates.")
            qc = qc.assign_coords({d: da[d] for d in da.dims})
            da = mask_qc(da, qc, QCRule(asset=Path(src.qc_path).name, mask=src.qc_mask, good=src.qc_good))
            for f in qfiles:
                inputs[f"{name}_qc:{Path(f).name}"] = file_checksum(f)
        method = "mode" if src.categorical and src.resampling == "average" else src.resampling
        arrays[name] = regrid(da, grid, method=method, name=src.path)
        arrays[name].attrs["source_file"] = src.path
    return arrays, inputs


def derive(arrays: dict[str, xr.DataArray], cfg) -> xr.Dataset:
    """Indices, temporal handling, time-axis check, annual stats and sin(DOY) (lazy)."""
    from ..cube import (
        annual_stats,
        check_time_axes,
        composite_8day,
        daily_interpolate,
        evi,
        lswi,
        ndvi,
        sin_doy,
    )

    out = dict(arrays)
    need = {"ndvi": ("sr_b02", "sr_b01"), "evi": ("sr_b02", "sr_b01", "sr_b03"), "lswi": ("sr_b02", "sr_b06")}
    for idx in cfg.indices:
        miss = [b for b in need[idx] if b not in out]
        if miss:
            raise RecipeError(f"index {idx} needs reflectance variables {miss}", where="cube.indices",
                              fix="Load sr_b01 (red), sr_b02 (NIR), sr_b03 (blue) and sr_b06 (SWIR) "
                              "(STAC products or raster sources with those names).")
    if "ndvi" in cfg.indices:
        out["ndvi"] = ndvi(out["sr_b02"], out["sr_b01"])
    if "evi" in cfg.indices:
        out["evi"] = evi(out["sr_b02"], out["sr_b01"], out["sr_b03"])
    if "lswi" in cfg.indices:
        out["lswi"] = lswi(out["sr_b02"], out["sr_b06"])
    timed = {k: v for k, v in out.items() if "time" in v.dims}
    if timed:
        check_time_axes(timed)  # mismatched sources are reported by name before compositing
        if cfg.temporal in ("8day", "daily"):
            for k, v in timed.items():
                out[k] = composite_8day(v) if v.dtype.kind == "f" else composite_8day(v, how="max")
            if cfg.temporal == "daily":
                for k in timed:
                    out[k] = daily_interpolate(out[k])
    ds = xr.Dataset({k: v.drop_vars("spatial_ref", errors="ignore") for k, v in out.items()})
    if timed and cfg.annual_stats:
        for k in timed:
            ds = ds.merge(annual_stats(ds[k].rename(k)))
    if timed and cfg.add_sin_doy:
        ds["sin_doy"] = sin_doy(ds["time"].values)
    return ds


def _no_step(_what: str):
    from contextlib import nullcontext

    return nullcontext()


def build_cube(recipe, step=None):
    """The lazy predictor cube of a ``stac_cube`` recipe (``cube.source: stac`` or ``rasters``):
    the items or files opened lazily onto the recipe's grid, indices, time steps and statistics
    derived, provenance attached; nothing is computed or written. The workflow writes it;
    ``globalflux map MODEL RECIPE`` maps it directly. ``step``: a context-manager factory for
    logged steps (``ctx.step``), or None."""
    from ..cube import finalize_cube
    from ..grid import make_grid
    from ..provenance import provenance_attrs

    ctx_step = step if step is not None else _no_step
    cfg = recipe.cube
    grid = make_grid(cfg.grid.crs, cfg.grid.resolution, cfg.grid.bbox)
    if cfg.source == "stac":
        from ..io.products import product
        from ..io.stac import item_ids, load_products, search_items

        prods = [product(p) for p in cfg.stac.products]
        collections = sorted({p.collection for p in prods})
        with ctx_step(f"search {cfg.stac.catalog} for {collections}"):
            items = search_items(cfg.stac.catalog, collections=collections, bbox=_lonlat_bbox(grid),
                                 datetime=cfg.stac.datetime, max_items=cfg.stac.max_items)
            log.info("%d items", len(items))
        patch = _signer(cfg.stac.sign)
        with ctx_step("load items lazily with odc-stac"):
            loaded = load_products(items, prods, grid, groupby=cfg.stac.groupby, patch_url=patch,
                                   chunks={"time": 1, "y": cfg.stac.load_chunk, "x": cfg.stac.load_chunk})
        arrays = {k: loaded[k] for k in loaded.data_vars}
        inputs = {"stac_items": ", ".join(item_ids(items))}
    elif cfg.source == "rasters":
        with ctx_step("open raster sources lazily"):
            arrays, inputs = open_raster_sources(cfg, grid)
    else:
        raise RecipeError(f"cube.source is {cfg.source!r}", where="cube.source",
                          fix="The stac_cube workflow builds source: stac or rasters; use static_cube for "
                          "the static grids.")
    with ctx_step("derive indices, time steps and statistics"):
        ds = derive(arrays, cfg)
        chunks = None
        if cfg.chunking == "fixed":
            chunks = {"time": cfg.chunk_time if cfg.chunk_time > 0 else ds.sizes.get("time", 1),
                      "y": cfg.chunk_y, "x": cfg.chunk_x}
        ds = finalize_cube(ds, grid, attrs=provenance_attrs(recipe=recipe, inputs=inputs), chunks=chunks,
                           target_mb=cfg.chunk_mb)
    return ds


def run(recipe, ctx) -> None:
    from ..extract import sample_points
    from ..grid import make_grid
    from ..io.store import open_dataset, write_cube
    from ..report import markdown_table, write_report
    from .static_cube import read_points, summarise

    cfg = recipe.cube
    grid = make_grid(cfg.grid.crs, cfg.grid.resolution, cfg.grid.bbox)
    store = ctx.maps / cfg.store
    if ctx.resume and store.exists():
        log.info("resume: %s exists, not rebuilt", store)
    else:
        ds = build_cube(recipe, step=ctx.step)
        if ctx.scheduler:
            ctx.client()
        with ctx.step(f"write {store}"):
            write_cube(ds, store, overwrite=True)
    cube = open_dataset(store)
    summary = summarise(cube)
    summary.to_csv(ctx.metrics / "cube_summary.csv", index=False)
    sections = [("Cube", f"`{store}`: {dict(cube.sizes)}, grid {grid.resolution} ({grid.crs[:40]}), chunks "
                         f"{cube.attrs.get('chunking', '')}.\n\n" + markdown_table(summary, floatfmt=".3g"))]
    if cfg.sites:
        samples = sample_points(cube, read_points(cfg.sites), method=cfg.extraction, window=cfg.window)
        samples.to_csv(ctx.metrics / "site_samples.csv", index=False)
        sections.append(("Site samples", f"{len(samples)} rows -> `metrics/site_samples.csv`."))
    write_report(ctx.out / "report.md", f"Predictor cube: {recipe.name}", sections,
                 provenance={"source": cfg.source})


def _lonlat_bbox(grid):
    if grid.is_geographic:
        return grid.bbox
    from odc.geo.geom import BoundingBox

    from ..grid import BBox

    b = BoundingBox(*grid.bbox.as_tuple(), crs=grid.crs).to_crs("EPSG:4326")
    return BBox(max(-180.0, b.left), max(-90.0, b.bottom), min(180.0, b.right), min(90.0, b.top))


def _signer(kind: str):
    if kind == "none":
        return None
    try:
        import planetary_computer  # type: ignore[import-not-found]
    except ImportError:
        raise RecipeError("cube.stac.sign is planetary_computer but the package is missing",
                          where="cube.stac.sign", fix="pip install planetary-computer, or set sign: none.") from None
    return planetary_computer.sign
