"""``globalflux map MODEL CUBE --out STORE``: apply a model package to a predictor cube.

Wiring only: verify the package (:func:`globalflux.io.model_package.load_model`), open the cube
(:func:`globalflux.io.store.open_dataset`), build the lazy map (:func:`globalflux.mapping.map_cube`:
the same function every workflow maps with; an LSTM package goes through
:func:`globalflux.mapping.map_lstm`), write it block by block, resumably
(:func:`globalflux.mapping.map_to_store`; whole time chains by
:func:`globalflux.mapping.map_chains_to_store` for an LSTM) on a LocalCluster or an existing scheduler, then
optionally COGs (``STORE/cog/``) and a STAC Collection with relative hrefs (``STORE/stac/``).
Every check runs before anything is written; nothing is written outside ``--out``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DataError, InputFileError, StoreError

__all__ = ["main", "parse_bbox", "parse_time", "open_cube", "cube_from_recipe"]

log = logging.getLogger("globalflux")


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """``"W,S,E,N"`` -> four floats (exit 2 naming ``--bbox`` otherwise)."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 4 or not (vals[0] < vals[2] and vals[1] < vals[3]):
        raise DataError(f"{text!r} is not W,S,E,N", where="--bbox",
                        fix="Give four numbers west,south,east,north with W < E and S < N, "
                        "e.g. --bbox 10.0,47.8,10.2,48.0.")
    return vals  # type: ignore[return-value]


def parse_time(text: str | None) -> tuple[Any, Any] | None:
    """``"START/END"`` or ``"DAY"`` -> (start, end) timestamps (either side may be empty)."""
    if text is None:
        return None
    a, _, b = str(text).partition("/")
    if not _:
        b = a
    try:
        start = pd.Timestamp(a) if a.strip() else None
        end = pd.Timestamp(b) if b.strip() else None
    except ValueError:
        raise DataError(f"{text!r} is not START/END", where="--time",
                        fix="Give ISO dates, e.g. --time 2020-03-01/2020-06-30.") from None
    if start is not None and end is not None and end < start:
        raise DataError(f"{text!r} ends before it starts", where="--time",
                        fix="Give START/END with START <= END.")
    return start, end


def open_cube(path: str | Path, chunks: Any = None):
    """A predictor cube: a Zarr store written by globalflux (or any CF Zarr store with a CRS),
    or a ``static_cube`` or ``stac_cube`` recipe (:func:`cube_from_recipe`; a STAC source). ``chunks``: Dask chunks to open a
    Zarr cube with (default its stored chunks); opening at the map blocks
    (:func:`globalflux.mapping.mapping_chunks`) reads each block in one task, no rechunking."""
    import rioxarray  # noqa: F401

    from ..io.store import open_dataset

    p = Path(path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return cube_from_recipe(p)
    if not p.exists():
        raise InputFileError("does not exist", where=str(p),
                             fix="Give a Zarr predictor cube, e.g. RUN/maps/predictors.zarr.")
    if not p.is_dir() or not ((p / "zarr.json").is_file() or (p / ".zgroup").is_file()):
        raise InputFileError("is not a Zarr store", where=str(p),
                             fix="Give a Zarr predictor cube, e.g. RUN/maps/predictors.zarr.")
    try:
        ds = open_dataset(p, chunks=chunks if chunks is not None else {})
    except (OSError, ValueError, KeyError) as exc:
        raise InputFileError(f"cannot be opened as a Zarr cube ({exc.__class__.__name__}: {exc})",
                             where=str(p), fix="Give a Zarr predictor cube.") from None
    if ds.rio.crs is None and "spatial_ref" in ds.coords and ds["spatial_ref"].attrs.get("crs_wkt"):
        ds = ds.rio.write_crs(ds["spatial_ref"].attrs["crs_wkt"])
    return ds


def cube_from_recipe(path: str | Path):
    """The lazy cube of a ``static_cube`` or ``stac_cube`` recipe (STAC items or local rasters),
    built as that workflow builds it (the same library calls) but not written: map chunks read
    the sources directly."""
    from ..cube import finalize_cube, static_cube
    from ..grid import make_grid
    from ..io.static_grids import open_static_sources
    from ..pipeline import validate
    from ..provenance import provenance_attrs

    recipe = validate(path)
    if recipe.workflow == "stac_cube":  # a STAC source (or local rasters), loaded lazily
        from .stac_cube import build_cube

        return build_cube(recipe)
    if recipe.workflow != "static_cube":
        raise InputFileError(f"is a {recipe.workflow} recipe; a CUBE recipe must be a static_cube "
                             "or stac_cube recipe", where=str(path),
                             fix=f"Run `globalflux run {path} --out RUN` and pass the Zarr cube "
                             "it writes under RUN/maps/.")
    cfg = recipe.cube
    grid = make_grid(cfg.grid.crs, cfg.grid.resolution, cfg.grid.bbox)
    sources = open_static_sources(cfg.static_root, names={n: True for n in cfg.static_layers})
    ds = static_cube(sources, grid, land_threshold=cfg.land_threshold)
    chunks = None if cfg.chunking == "auto" else {"y": cfg.chunk_y, "x": cfg.chunk_x}
    return finalize_cube(ds, grid, attrs=provenance_attrs(recipe=recipe), chunks=chunks,
                         target_mb=cfg.chunk_mb)


def main(args) -> int:
    """Run the ``map`` subcommand (``args`` from :func:`globalflux.cli.build_parser`)."""
    from ..cluster import connect
    from ..io.model_package import load_model
    from ..io.paths import check_writable_dir
    from ..mapping import map_chains_to_store, map_cube, map_to_store, require_daily
    from ..provenance import provenance_attrs

    out = check_writable_dir(args.out, what="--out")  # a file, /proc, no permission: exit 2 now
    if out.exists() and not args.resume:
        raise StoreError("exists", where=str(out),
                         fix="Choose a new --out, or add --resume to finish that store.")
    if out.exists() and args.resume:
        from ..io.store import read_manifest

        if read_manifest(out) is None:  # refused before a cluster starts or a byte is written
            raise StoreError("is not a resumable globalflux store (no manifest)", where=str(out),
                             fix="Choose another --out, or run without --resume into a new one.")
    bbox = parse_bbox(args.bbox)
    span = parse_time(args.time)
    model = load_model(args.model)
    pkg = model.package_
    cube = open_cube(args.cube)
    lstm = pkg.kind == "lstm"
    if lstm:  # a daily model: refuse any other time step, naming the cube
        require_daily(cube, where=f"cube {args.cube}")
    chunks: Any = "auto"
    if not lstm and Path(args.cube).suffix not in (".yaml", ".yml"):
        # a Zarr cube of a forest: open it at the map blocks (one read per block, no rechunk)
        from ..mapping import mapping_chunks, storage_chunks_of

        feats = [str(c) for c in getattr(model, "feature_names_in_", [])]
        if feats and all(f in cube for f in feats):
            chunks = mapping_chunks(cube.sizes, len(feats) + 1, workers=2,  # connect()'s default
                                    storage_chunks=storage_chunks_of(cube, feats))
            cube = open_cube(args.cube, chunks={d: c for d, c in chunks.items()
                                                if d in cube.dims})
    ds = map_cube(model, cube, bbox=bbox, time=span, chunks=chunks)
    pieces = dict(ds.data_vars)
    mask = None
    if "land_mask" in cube:
        from ..mapping import subset_cube

        land = subset_cube(cube[["land_mask"]], bbox=bbox)["land_mask"]
        mask = land.astype(bool)
        pieces["land_mask"] = land.assign_attrs(long_name="land (true) or sea (false)", units="1")
    synthetic = bool(pkg.manifest.get("synthetic"))
    target = pkg.target.get("name", "prediction")
    attrs = provenance_attrs(synthetic=synthetic, extra=dict(ds.attrs))
    attrs["title"] = (("SYNTHETIC " if synthetic else "") + f"{target} mapped by the "
                      f"{pkg.kind} package {Path(args.model).resolve().name}")
    attrs["model_recipe"] = pkg.manifest.get("recipe") or ""
    attrs["model_time_step"] = str(pkg.manifest.get("time_step"))
    client, cluster = connect(args.scheduler, None, timeout=args.scheduler_timeout)
    try:
        with client.as_current():
            if lstm:  # time chunks form chains (state carried): submit whole chains
                path = map_chains_to_store(client, pieces, out, chain_dim="time", attrs=attrs,
                                           mask=mask, resume=args.resume)
            else:
                path = map_to_store(client, pieces, out, attrs=attrs, mask=mask,
                                    resume=args.resume)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    cogs: list[Path] = []
    if args.cog or args.stac:
        from ..io.cog import write_cogs

        stored = open_cube(path)
        tags = {k: v for k, v in attrs.items() if isinstance(v, str) and k != "model_recipe"}
        for name in [v for v in (target, f"{target}_sd", "aoa") if v in stored]:
            cogs += list(write_cogs(stored[name], path / "cog", prefix=name, tags=tags,
                                    resume=args.resume))
    if args.stac:
        from ..io.catalog import write_catalog

        write_catalog(cogs, path / "stac", collection_id=f"{target}-{pkg.checksum[:8]}",
                      title=attrs["title"], store=path,
                      description=f"{target} mapped by globalflux map from a {pkg.kind} package "
                      f"(model sha256 {pkg.checksum}).",
                      synthetic=synthetic)
    print(f"globalflux: map {path} ({', '.join(pieces)}"
          + (f"; {len(cogs)} COGs in {path / 'cog'}" if cogs else "")
          + (f"; STAC in {path / 'stac'}" if args.stac else "") + ")")
    return 0
