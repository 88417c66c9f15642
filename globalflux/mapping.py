"""Apply fitted models to every pixel of a chunked cube, lazily, and write maps block by block.

Public API
----------
``apply_to_cube(estimator, ds, features, *, mask=None, method="predict", dtype="float32",
fill=nan, as_frame=True, name="prediction") -> DataArray``
    Lazy per-pixel prediction. On a Dask-backed ``ds`` the estimator enters the graph ONCE (one
    key, a :class:`dask.delayed.Delayed` or a scattered :class:`distributed.Future` from
    :func:`scatter_model`); every chunk task refers to that key instead of pickling the model.
    Chunks with no pixel inside ``mask`` or no pixel with finite features return ``fill``
    without calling the estimator. Nothing is computed.

``scatter_model(client, estimator) -> Future``
    Broadcast a fitted model to every worker once; pass the Future to :func:`apply_to_cube`
    as ``estimator`` (it stays on the workers for the whole map, across submission batches).

``map_to_store(client, pieces, store_path, *, attrs=None, mask=None, resume=False,
progress=True, fingerprint=None, max_graph_tasks=100_000) -> Path``
    Write lazy DataArrays (``{"rh": (time, y, x), "zone": (y, x), ...}``, same grid and chunks)
    into one Zarr store, one chunk-aligned block per task: each task computes its block of
    every variable, writes it, flushes it to disk and then records the block in the manifest
    (see :mod:`globalflux.io.store`). ``resume=True`` computes only the blocks not yet
    recorded. Blocks with no land in ``mask`` are recorded without computing anything (they
    hold the fill value). Tasks are submitted in batches so no graph exceeds
    ``max_graph_tasks``. The store is then marked complete and consolidated.
    ``client`` is a ``distributed.Client`` or None (Dask's threaded scheduler).

``map_cube(model, cube, *, mask=None, bbox=None, time=None, ...) -> Dataset``
    The lazy map of a (packaged) model: forests through :func:`apply_to_cube`; an LSTM or LSTM
    seed ensemble through ``map_lstm`` (daily cube, :func:`apply_lstm_to_cube` per member with
    the state carried across time chunks, ``<target>_sd`` across members), written with
    ``map_chains_to_store``.

``graph_tasks(obj) -> int``
    Number of tasks in the graph of a lazy xarray/dask object.

``mapping_chunks(sizes, n_variables, *, worker_memory=None, threads=1, workers=1,
storage_chunks=None) -> dict``
    THE decision of a map's block (= task = output chunk) shape: whole time axis, tiles as big
    as a quarter of a worker's memory allows (capped), at least 4 blocks per thread, whole
    storage chunks. :func:`map_cube` (``chunks="auto"``), ``globalflux map`` and the
    workflows use it; its choice is logged.

``plan_tasks(pieces) -> dict``
    Blocks, fused tasks per block, total tasks and the largest submitted graph of the write
    graph :func:`map_to_store` would build, without writing or computing anything.

Performance (issue 15): :func:`map_to_store` submits, per batch, a graph culled to that
batch's blocks and fused by Dask's array optimisation: one task per block (read every input
chunk, predict, write, record) instead of ~19, which took the 1-worker LocalCluster from
0.40 to 0.64-0.84 of the synchronous rate on a loaded 2-core machine
(benchmarks/profile_map_cluster.py).

Example
-------
>>> zone = zone_clf.predict_cube(cube, mask=land)                      # doctest: +SKIP
>>> rh = apply_to_cube(forest, cube.assign(zone=zone), features, mask=land)  # doctest: +SKIP
>>> map_to_store(ctx.client(), {"rh": rh, "zone": zone}, ctx.maps / "rh.zarr",
...              attrs=provenance_attrs(recipe=recipe, synthetic=True), mask=land,
...              resume=ctx.resume)                                     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import DataError, StoreError

__all__ = [
    "apply_to_cube",
    "map_cube",
    "check_inputs",
    "subset_cube",
    "predict_block",
    "scatter_model",
    "map_to_store",
    "graph_tasks",
    "store_fingerprint",
    "batch_graph",
    "block_graph_tasks",
    "mapping_chunks",
    "storage_chunks_of",
    "plan_tasks",
]

log = logging.getLogger("globalflux")


# ------------------------------------------------------------------------------- per-chunk work


def predict_block(*arrays: np.ndarray, estimator: Any, method: str, dtype: str, fill: float,
                  columns: Sequence[str] | None = None, width: int = 0,
                  method_kwargs: Mapping[str, Any] | None = None) -> np.ndarray:
    """Predict one block: ``arrays`` are the feature arrays (same shape); the last input is the mask.

    Pixels outside the mask or with any non-finite feature get ``fill``. A block with no valid
    pixel returns at once without calling the estimator (and without stacking the features).
    ``width > 0``: the method returns (n, width) and the block gets a trailing axis of that size.
    """
    *feats, mask = arrays
    shape = np.broadcast_shapes(*(np.shape(f) for f in feats), np.shape(mask))
    out = np.full(shape + ((width,) if width else ()), fill, dtype=dtype)
    m = np.broadcast_to(np.asarray(mask, dtype=bool), shape).reshape(-1)
    if not m.any():
        return out
    # one (n, k) float64 table, filled column by column; finiteness checked on the inputs'
    # own dtype (no second pass over the table, no copy when every pixel is valid)
    ok = m.copy()
    cols = []
    for f in feats:
        col = np.broadcast_to(np.asarray(f), shape).reshape(-1)
        if col.dtype.kind == "f":
            ok &= np.isfinite(col)
        cols.append(col)
    if not ok.any():
        return out
    flat = out.reshape(-1, width) if width else out.reshape(-1)
    # the (rows, k) float64 table is built and predicted one slice of pixels at a time: a big
    # map block (see mapping_chunks) then needs only its inputs and output in memory, plus
    # one slice's table, whatever its size
    rows = max(1, int(PREDICT_ROWS))
    for s0 in range(0, m.size, rows):
        sl = slice(s0, min(s0 + rows, m.size))
        oks = ok[sl]
        if not oks.any():
            continue
        X = np.empty((sl.stop - sl.start, len(feats)), dtype="float64")
        step = 4096  # cache-sized blocks: a blocked transpose is ~2x faster than column writes
        for s in range(sl.start, sl.stop, step):
            e = min(s + step, sl.stop)
            X[s - sl.start:e - sl.start] = np.stack([c[s:e] for c in cols], axis=1)
        Xv = X if oks.all() else X[oks]
        if columns is not None:
            import pandas as pd

            Xv = pd.DataFrame(Xv, columns=list(columns))
        pred = np.asarray(getattr(estimator, method)(Xv, **dict(method_kwargs or {})))
        part = flat[sl]
        part[oks] = pred.astype(dtype, copy=False)
    return out


#: pixels per model call inside a block (bounds the float64 feature table: 16 features ->
#: 32 MiB per slice); large enough that a compiled forest runs at full speed
PREDICT_ROWS = 262_144


def _predict_chunk(estimator: Any, *arrays: np.ndarray, method: str, out_dtype: str, fill: float,
                   columns: Sequence[str] | None, axes: Sequence[tuple[int, ...]],
                   ndim: int, width: int = 0,
                   method_kwargs: Mapping[str, Any] | None = None) -> np.ndarray:
    """Module-level block function for :func:`dask.array.blockwise` (estimator first).

    ``axes[i]`` are the output axes of ``arrays[i]``; missing axes become length-1 so that
    (y, x) statics and (time,) series broadcast against (time, y, x) blocks.
    """
    full = []
    for a, ax in zip(arrays, axes):
        a = np.asarray(a)
        shape = [1] * ndim
        for k, n in zip(ax, a.shape):
            shape[k] = n
        full.append(a.reshape(shape))
    return predict_block(*full, estimator=estimator, method=method, dtype=out_dtype, fill=fill,
                         columns=columns, width=width, method_kwargs=method_kwargs)


def _is_lazy_model(obj: Any) -> bool:
    """A Delayed or a distributed Future (already a single key of a graph)."""
    from dask.delayed import Delayed

    if isinstance(obj, Delayed):
        return True
    try:
        from distributed import Future
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    return isinstance(obj, Future)


def scatter_model(client: Any, estimator: Any) -> Any:
    """Send a fitted model to every worker once; returns a Future usable as ``estimator``.

    A forest of the lleaves engine is compiled here first (or taken from the per-user cache) and
    its compiled object travels with it: a worker on the same kind of CPU starts without
    compiling; one on another CPU compiles on its first block.

    Parameters
    ----------
    client
        A ``distributed.Client``.
    estimator
        Any picklable fitted estimator.
    """
    for forest in _compiled_forests(estimator):
        forest.compiled_object()  # compiled (or taken from the cache) once, here, not per worker
    return client.scatter(estimator, broadcast=True, hash=False)


def _compiled_forests(estimator: Any) -> list[Any]:
    """The lleaves-engine forests inside a (zoned/unified) forest model, or the model itself."""
    found = []
    parts = [estimator, getattr(estimator, "model_", None), getattr(estimator, "fallback_", None),
             *dict(getattr(estimator, "models_", None) or {}).values()]
    for p in parts:
        f = getattr(p, "forest", p)
        if getattr(f, "compile", False) and hasattr(f, "compiled_object") and \
                getattr(f, "model_str_", None) is not None:
            found.append(f)
    return found


def _canonical_dims(arrays) -> tuple[str, ...]:
    """Union of the arrays' dims in first-seen order, with (time, y, x) leading where present."""
    order: list[str] = []
    for a in arrays:
        order.extend(d for d in a.dims if d not in order)
    for p in ("x", "y", "time"):
        if p in order:
            order.remove(p)
            order.insert(0, p)
    return tuple(order)


def apply_to_cube(
    estimator: Any,
    ds: xr.Dataset,
    features: Sequence[str],
    *,
    mask: xr.DataArray | None = None,
    method: str = "predict",
    dtype: str = "float32",
    fill: float = np.nan,
    as_frame: bool = True,
    name: str = "prediction",
    width: int = 0,
    width_dim: str = "stat",
    method_kwargs: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Apply ``estimator.<method>`` to every pixel (and time step) of ``ds``, lazily.

    Parameters
    ----------
    estimator
        A fitted estimator with a ``predict``-like method taking an (n, len(features)) table,
        or a :class:`~dask.delayed.Delayed` / scattered ``Future`` of one
        (see :func:`scatter_model`). On Dask data a plain estimator is wrapped in one Delayed
        key, so the model is serialised once per graph, not once per chunk.
    ds
        Dataset holding every name in ``features``; variables broadcast against each other
        (static (y, x) factors broadcast over time).
    features
        Variable names, in the column order the estimator was fitted with.
    mask
        Boolean DataArray (True = land / to predict); None predicts every finite pixel.
    method
        Estimator method to call (``predict``, ``predict_std``, ...).
    dtype, fill
        Output dtype and the value written where nothing is predicted (recorded as the
        output's ``_FillValue`` encoding, which :func:`map_to_store` uses as the Zarr fill).
    as_frame
        Pass a pandas DataFrame with the feature names as columns (True) or a plain ndarray.
    name
        Name of the returned DataArray.
    width, width_dim
        ``width > 0``: the method returns (n, width) columns (e.g.
        ``predict_tree_stats``); the result gets a trailing dim ``width_dim`` of that size.
    method_kwargs
        Keyword arguments of the method (e.g. ``{"quantiles": (0.05, 0.95)}``).

    Returns
    -------
    xr.DataArray
        Dims of the broadcast features; Dask-backed (lazy) when any input is.
    """
    missing = [f for f in features if f not in ds.data_vars and f not in ds.coords]
    if missing:
        raise DataError(f"cube lacks predictor(s) {missing}", where="cube",
                        fix=f"Add them to the cube; it has: {sorted(ds.data_vars)}.")
    if not len(features):
        raise DataError("no features given", where="apply_to_cube",
                        fix="Pass the predictor names the estimator was fitted with.")
    inputs = [ds[f] for f in features] + ([mask] if mask is not None else [])
    try:
        inputs = list(xr.align(*inputs, join="exact"))
    except ValueError as exc:
        raise DataError(f"mask and features are not on one grid ({exc})", where="apply_to_cube",
                        fix="Build the mask on the cube's own x/y coordinates.") from None
    dims = _canonical_dims(inputs)
    coords = xr.merge([a.coords.to_dataset() for a in inputs], compat="override",
                      join="exact").coords
    kwargs: dict[str, Any] = {
        "method": method,
        "out_dtype": dtype,
        "fill": fill,
        "columns": list(features) if as_frame else None,
    }
    ordered = [a.transpose(*[d for d in dims if d in a.dims]) for a in inputs]
    axes = [tuple(dims.index(d) for d in a.dims) for a in ordered]
    if mask is None:
        axes.append(())
    kwargs["axes"] = axes
    kwargs["ndim"] = len(dims)
    kwargs["width"] = int(width)
    kwargs["method_kwargs"] = dict(method_kwargs) if method_kwargs else None
    lazy = any(a.chunks is not None for a in ordered)
    if not lazy:
        if _is_lazy_model(estimator):
            estimator = estimator.compute() if hasattr(estimator, "compute") else estimator.result()
        arrays = [a.values for a in ordered] + ([np.True_] if mask is None else [])
        data = _predict_chunk(estimator, *arrays, **kwargs)
    else:
        import dask
        import dask.array as dsa

        chunks: dict[str, Any] = {}
        for a in ordered:
            if a.chunks is not None:
                for d, c in zip(a.dims, a.chunks):
                    chunks.setdefault(d, c)
        model = estimator if _is_lazy_model(estimator) else dask.delayed(
            estimator, pure=True, traverse=False)
        args: list[Any] = [model, None]
        for a, ax in zip(ordered, axes):
            a = a.chunk({d: chunks.get(d, -1) for d in a.dims})
            args.extend([a.data, ax])
        if mask is None:
            args.extend([np.True_, None])
        out_ind = tuple(range(len(dims))) + ((len(dims),) if width else ())
        data = dsa.blockwise(
            _predict_chunk, out_ind, *args, dtype=np.dtype(dtype),
            concatenate=True, new_axes={len(dims): int(width)} if width else None, **kwargs,
        )
    out_dims = dims + ((width_dim,) if width else ())
    out = xr.DataArray(data, dims=out_dims, coords={k: v for k, v in coords.items()
                                                    if set(v.dims) <= set(dims)}, name=name)
    out.encoding["_FillValue"] = fill
    return out


def graph_tasks(obj: Any) -> int:
    """Number of tasks in the Dask graph of ``obj`` (0 for eager objects)."""
    import dask

    if isinstance(obj, xr.Dataset | xr.DataArray):
        coll = [obj.variable.data] if isinstance(obj, xr.DataArray) else [
            v.data for v in obj.data_vars.values()]
    else:
        coll = [obj]
    coll = [c for c in coll if dask.is_dask_collection(c)]
    if not coll:
        return 0
    keys: set = set()
    for c in coll:
        keys.update(c.__dask_graph__().keys())
    return len(keys)


# ------------------------------------------------------------------------------------ chunking


#: most pixel-steps in one map block (at ~3 M pixel-steps/s per core: a few seconds per task)
MAX_BLOCK_CELLS = 8_000_000
#: fewest blocks per worker thread, so that every thread has work and the last ones balance
MIN_BLOCKS_PER_THREAD = 4


def _bytes(value: int | str | None, default: int = 2 * 2**30) -> int:
    if value is None:
        return default
    if isinstance(value, int | float | np.integer):
        return int(value)
    from dask.utils import parse_bytes

    return int(parse_bytes(str(value)))


def _snap(target: int, storage: int, size: int) -> int:
    """A tile length near ``target`` (not above it) made of whole storage chunks, or the largest
    divisor of one storage chunk not above ``target`` when one is already too big."""
    target = max(1, min(int(target), int(size)))
    storage = max(1, min(int(storage), int(size)))
    if storage <= target:
        return storage * max(1, target // storage)
    for k in range(-(-storage // target), storage + 1):  # the largest divisor <= target
        if storage % k == 0:
            if storage // k >= target // 2:
                return storage // k
            break
    return target  # no divisor near the target (e.g. a prime length): an uneven split


def mapping_chunks(sizes: Mapping[str, int], n_variables: int, *,
                   worker_memory: int | str | None = None, threads: int = 1, workers: int = 1,
                   storage_chunks: Mapping[str, int] | None = None,
                   itemsize: int = 4) -> dict[str, int]:
    """The chunk (= task, = output Zarr chunk) shape of a map: THE one place that decides it.

    Every block holds the whole ``time`` axis (a pixel's series in one task) and a square-ish
    ``(y, x)`` tile, as big as the memory allows: a block's inputs (``n_variables`` x
    ``itemsize`` bytes per pixel-step, counted twice for decoding and broadcasting) plus its
    float32 output must fit in a quarter of ``worker_memory`` per thread (Dask's spilling starts
    at 60 %). Big blocks keep the per-task overhead of a distributed scheduler small (issue 15:
    at 131 k pixel-steps per block a third of a 1-worker cluster's time was scheduling). The
    block is capped at :data:`MAX_BLOCK_CELLS` pixel-steps and the tile is shrunk until there
    are at least :data:`MIN_BLOCKS_PER_THREAD` blocks per thread, so every thread gets work.
    Tiles are whole multiples of the cube's ``storage_chunks`` (or an even split of one), so
    no stored chunk is read by two tasks.

    Parameters
    ----------
    sizes
        Dimension sizes of the map, e.g. ``{"time": 46, "y": 43200, "x": 86400}``.
    n_variables
        Input variables read per block (the model's features, plus mask and zone factors).
    worker_memory
        Memory limit of one worker (bytes or a string such as ``"2GiB"``); default 2 GiB (the
        LocalCluster default of :func:`globalflux.cluster.connect`).
    threads, workers
        Threads per worker and workers.
    storage_chunks
        Chunk sizes of the stored cube along ``y``/``x`` (default: no constraint).
    itemsize
        Bytes per input value (4 for float32).

    Returns
    -------
    dict
        ``{"time": nt, "y": cy, "x": cx}`` (only the dims present in ``sizes``).
    """
    nt = int(sizes.get("time", 1))
    ny, nx = int(sizes["y"]), int(sizes["x"])
    mem = _bytes(worker_memory)
    per_cell = 2 * max(1, int(n_variables)) * int(itemsize) + 8
    budget = mem / (4 * max(1, int(threads)))
    cells = int(min(budget / per_cell, MAX_BLOCK_CELLS))
    pixels = max(1, cells // max(nt, 1))
    min_blocks = MIN_BLOCKS_PER_THREAD * max(1, int(threads)) * max(1, int(workers))
    pixels = max(1, min(pixels, (ny * nx) // min_blocks))
    side = max(1, int(math.sqrt(pixels)))
    st = dict(storage_chunks or {})
    cy = _snap(min(ny, side), int(st.get("y", 1)) if st.get("y") else 1, ny)
    cx = _snap(min(nx, max(1, pixels // cy)), int(st.get("x", 1)) if st.get("x") else 1, nx)
    out = {"y": cy, "x": cx}
    if "time" in sizes:
        out = {"time": nt, **out}
    log.info("map chunks %s: %d input variable(s), worker memory %.1f GiB x %d worker(s) x %d "
             "thread(s), %.1f M pixel-steps per block", "x".join(str(v) for v in out.values()),
             n_variables, mem / 2**30, workers, threads, nt * cy * cx / 1e6)
    return out


def storage_chunks_of(ds: xr.Dataset, names: Sequence[str]) -> dict[str, int]:
    """The first chunk length along ``y``/``x`` of the first chunked variable in ``names``."""
    for n in names:
        v = ds[n]
        if v.chunks is not None:
            return {d: int(c[0]) for d, c in zip(v.dims, v.chunks) if d in ("y", "x")}
    return {}


# --------------------------------------------------------------------------------------- map_cube


def subset_cube(ds: xr.Dataset, *, bbox: Sequence[float] | None = None,
                time: tuple[Any, Any] | None = None, where: str = "--bbox") -> xr.Dataset:
    """The part of ``ds`` inside ``bbox`` = (W, S, E, N) (pixel centres, either y order) and the
    closed time interval ``time`` = (start, end) (either may be None)."""
    from .errors import GridError

    out = ds
    if bbox is not None:
        w, s, e, n = (float(v) for v in bbox)
        if not (w < e and s < n):
            raise GridError(f"bbox {list(bbox)} is empty", where=where,
                            fix="Give W,S,E,N with W < E and S < N.")
        y = out["y"].values
        ysl = slice(n, s) if len(y) > 1 and y[0] > y[-1] else slice(s, n)
        out = out.sel(x=slice(w, e), y=ysl)
        if out.sizes.get("x", 0) == 0 or out.sizes.get("y", 0) == 0:
            raise GridError(f"bbox {list(bbox)} holds no pixel of the cube "
                            f"[{float(ds['x'].min()):.4f}, {float(ds['y'].min()):.4f}, "
                            f"{float(ds['x'].max()):.4f}, {float(ds['y'].max()):.4f}]",
                            where=where, fix="Give a W,S,E,N that covers at least one pixel.")
    if time is not None and "time" in out.dims:
        a, b = time
        out = out.sel(time=slice(a, b))
        if out.sizes["time"] == 0:
            raise DataError(f"time {a}/{b} holds no step of the cube", where="--time",
                            fix="Give START/END inside the cube's time axis.")
    return out


def check_inputs(package: Any, ds: xr.Dataset, features: Sequence[str]) -> None:
    """A cube fit for a model package: every input present, in the manifest's units, with a CRS.

    Raises
    ------
    DataError, GridError
        Naming the variable that is missing or in other units, or the cube without CRS.
    """
    from .errors import GridError

    missing = [f for f in features if f not in ds.data_vars and f not in ds.coords]
    if missing:
        raise DataError(f"cube lacks the model's input variable(s) {missing}",
                        where=f"cube variable {missing[0]}",
                        fix=f"Give a cube holding every input the model was trained on: "
                        f"{', '.join(features)}.")
    if package is not None:
        for entry in package.inputs:
            name, want = entry.get("name"), entry.get("units")
            if name not in features or want is None:
                continue
            have = ds[name].attrs.get("units")
            if have is None or str(have).strip() != str(want).strip():
                raise DataError(f"has units {have!r}, the model was trained on {want!r}",
                                where=f"cube variable {name}",
                                fix=f"Convert {name} to {want} (and set its units attribute).")
    import rioxarray  # noqa: F401  (registers .rio)

    crs = None
    try:
        crs = ds.rio.crs
    except Exception:  # pragma: no cover - rioxarray raises on odd grid_mapping attrs
        crs = None
    if crs is None and "spatial_ref" in ds.coords and ds["spatial_ref"].attrs.get("crs_wkt"):
        crs = ds["spatial_ref"].attrs["crs_wkt"]
    if crs is None:
        raise GridError("the cube's grid has no CRS", where=f"cube variable {features[0]}",
                        fix="Write one with rioxarray (ds.rio.write_crs('EPSG:4326')) before "
                        "mapping.")


def _package_of(model: Any) -> Any:
    return getattr(model, "package_", None)


def map_cube(
    model: Any,
    cube: xr.Dataset,
    *,
    mask: xr.DataArray | None = None,
    bbox: Sequence[float] | None = None,
    time: tuple[Any, Any] | None = None,
    uncertainty: bool = True,
    quantiles: Sequence[float] = (),
    applicability: bool = True,
    check: bool = True,
    name: str | None = None,
    chunks: Mapping[str, int] | str | None = "auto",
    worker_memory: int | str | None = None,
    threads: int = 1,
    workers: int = 1,
) -> xr.Dataset:
    """The map of a (packaged) model over a predictor cube, as a lazy Dataset.

    The one mapping path: ``globalflux map`` and every workflow call this, then
    :func:`map_to_store`.

    Parameters
    ----------
    model
        A fitted forest, LSTM or LSTM ensemble (the latter two are mapped by :func:`map_lstm`:
        daily cube, state carried across time chunks, ``<target>_sd`` across ensemble
        members), e.g. from :func:`globalflux.load_model` (its ``package_`` gives the
        inputs' units, the target's name and attributes and the area of applicability).
    cube
        Dataset with every input variable of the model (``(time, y, x)`` or ``(y, x)``), chunked
        with Dask for a lazy result, and a CRS.
    mask
        Boolean (y, x) DataArray, True where to map; default the cube's ``land_mask`` if it has
        one, else every pixel with finite inputs.
    bbox, time
        Optional subset: (W, S, E, N) and (start, end).
    uncertainty
        Add ``<target>_sd`` (SD across trees) where the model has per-tree predictions
        (scikit-learn engine).
    quantiles
        Tree quantiles to add as ``<target>_qNN`` (with ``uncertainty``).
    applicability
        Add ``di`` and ``aoa`` where the package holds an area of applicability.
    check
        Check the cube against the package (variables, units, CRS) first.
    name
        Name of the mapped variable; default the package's target name (``prediction``
        for an estimator without a package).
    chunks
        ``"auto"``: the blocks of :func:`mapping_chunks` (from the number of inputs and
        ``worker_memory``, ``threads``, ``workers``); a dict: those chunks; None: the cube's own.

    Returns
    -------
    xr.Dataset
        ``<target>`` (float32), optionally ``<target>_sd`` and quantiles, ``zone`` (int16, -1
        where not mapped) for zoned models, ``di`` (float32) and ``aoa`` (int8: 1 inside, 0
        outside, -1 not mapped). Nothing is computed.
    """
    if _is_lstm(model):  # a daily sequence model: its own state-carrying path
        return map_lstm(model, cube, mask=mask, bbox=bbox, time=time, uncertainty=uncertainty,
                        check=check, name=name)
    pkg = _package_of(model)
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise DataError("the model was fitted without feature names", where="map_cube",
                        fix="Fit it on a DataFrame whose columns are the cube's variable names.")
    features = [str(c) for c in names]
    if check:
        check_inputs(pkg, cube, features)
    ds = subset_cube(cube, bbox=bbox, time=time)
    if chunks is not None and any(ds[f].chunks is not None for f in features):
        want = dict(chunks) if not isinstance(chunks, str) else mapping_chunks(
            ds.sizes, len(features) + 1, worker_memory=worker_memory, threads=threads,
            workers=workers, storage_chunks=storage_chunks_of(ds, features))
        ds = ds.chunk({d: c for d, c in want.items() if d in ds.dims})
    if mask is None and "land_mask" in ds:
        mask = ds["land_mask"].astype(bool)
    elif mask is not None:
        mask = subset_cube(mask.to_dataset(name="mask"), bbox=bbox)["mask"].astype(bool)
    target = dict(pkg.target) if pkg is not None else {}
    tname = str(name or target.get("name") or "prediction")
    units = target.get("units")
    base_attrs = {k: v for k, v in target.items() if k in ("units", "standard_name", "long_name")
                  and v}
    base_attrs.setdefault("long_name", f"{tname} ({type(model).__name__})")
    out: dict[str, xr.DataArray] = {}
    per_tree = (uncertainty and hasattr(model, "predict_tree_stats")
                and getattr(model, "engine", "sklearn") == "sklearn")
    if per_tree:
        q = tuple(float(v) for v in quantiles)
        stats = apply_to_cube(model, ds, features, mask=mask, method="predict_tree_stats",
                              dtype="float32", name=tname, width=2 + len(q),
                              method_kwargs={"quantiles": q} if q else None)
        out[tname] = stats.isel(stat=0, drop=True).rename(tname).assign_attrs(base_attrs)
        out[f"{tname}_sd"] = stats.isel(stat=1, drop=True).rename(f"{tname}_sd").assign_attrs(
            units=units or "1", long_name=f"standard deviation of {tname} across trees "
            "(the forest's sampling spread)")
        for i, qq in enumerate(q):
            nm = f"{tname}_q{int(round(qq * 100)):02d}"
            out[nm] = stats.isel(stat=2 + i, drop=True).rename(nm).assign_attrs(
                units=units or "1", long_name=f"{qq * 100:g}th percentile of {tname} across trees")
    else:
        out[tname] = apply_to_cube(model, ds, features, mask=mask, name=tname).assign_attrs(
            base_attrs)
    for v in list(out):
        out[v].encoding["_FillValue"] = np.float32(np.nan)
    zc = getattr(model, "zone_classifier_", None)
    if zc is not None:
        zone = zc.predict_cube(ds, list(model.zone_factors_), mask=mask)
        zone.attrs.update(units="1", long_name="environmentally similar zone (-1 not mapped)")
        out["zone"] = zone
    aoa_obj = getattr(pkg, "applicability", None) if pkg is not None else None
    if applicability and aoa_obj is not None:
        di = apply_to_cube(aoa_obj, ds, aoa_obj.features_, mask=mask, method="predict",
                           dtype="float32", name="di")
        di.attrs.update(units="1", long_name="dissimilarity index to the training data "
                        "(Meyer and Pebesma 2021)", threshold=float(aoa_obj.threshold_))
        aoa = xr.where(di.isnull(), np.int8(-1), (di <= np.float32(aoa_obj.threshold_))
                       .astype("int8")).astype("int8").rename("aoa")
        aoa.attrs.update(units="1", long_name="area of applicability (1 inside, 0 outside, "
                         "-1 not mapped)", flag_values="-1 0 1",
                         flag_meanings="not_mapped outside inside",
                         threshold=float(aoa_obj.threshold_))
        aoa.encoding["_FillValue"] = np.int8(-1)
        out["di"], out["aoa"] = di, aoa
    result = xr.Dataset(out)
    if pkg is not None:
        result.attrs.update(model_sha256=pkg.checksum, model_kind=pkg.kind,
                            model_package=str(pkg.path.name))
    return result


# ---------------------------------------------------------------------------------- map_to_store


def _fill_value(da: xr.DataArray) -> Any:
    fv = da.encoding.get("_FillValue", da.attrs.get("_FillValue"))
    if fv is not None:
        return fv
    if np.issubdtype(da.dtype, np.floating):
        return np.nan
    if np.issubdtype(da.dtype, np.signedinteger):
        return -1
    if np.issubdtype(da.dtype, np.unsignedinteger):
        return np.iinfo(da.dtype).max
    return None


def _regular(chunks: tuple[int, ...]) -> bool:
    return len(chunks) <= 1 or (len(set(chunks[:-1])) == 1 and chunks[-1] <= chunks[0])


def _assemble(pieces: Mapping[str, xr.DataArray], attrs: Mapping[str, Any] | None) -> xr.Dataset:
    """One chunked Dataset from the pieces: common dims order, regular common chunks, fills."""
    if not pieces:
        raise DataError("nothing to map (no pieces)", where="map_to_store",
                        fix="Pass a dict of name -> lazy DataArray.")
    order = _canonical_dims(pieces.values())
    chunks: dict[str, int] = {}
    for da in pieces.values():
        if da.chunks is not None:
            for d, c in zip(da.dims, da.chunks):
                if d not in chunks:
                    chunks[d] = int(c[0])
    out = {}
    for name, da in pieces.items():
        if not isinstance(da, xr.DataArray):
            raise DataError(f"piece {name!r} is a {type(da).__name__}", where="map_to_store",
                            fix="Pass xarray DataArrays.")
        da = da.transpose(*[d for d in order if d in da.dims])
        want = {d: chunks.get(d, da.sizes[d]) for d in da.dims}
        if da.chunks is None or any(
            not _regular(c) or c[0] != want[d] for d, c in zip(da.dims, da.chunks)
        ):
            da = da.chunk(want)
        fv = _fill_value(da)
        da = da.copy()
        da.attrs = {k: v for k, v in da.attrs.items() if k != "_FillValue"}
        # _FillValue: CF attribute (masked on read); fill_value: the Zarr v3 fill of unwritten chunks
        da.encoding = {"_FillValue": fv, "fill_value": fv} if fv is not None else {}
        out[name] = da
    try:
        ds = xr.Dataset(out)
    except Exception as exc:
        raise DataError(f"pieces do not share one grid ({exc})", where="map_to_store",
                        fix="Map every variable on the same (time, y, x) coordinates.") from None
    ds.attrs = dict(attrs or {})
    return ds


def store_fingerprint(ds: xr.Dataset) -> str:
    """A hash of what a store holds: the recipe attribute (or all attrs but ``history``),
    variables, dtypes, shape and chunks. Two runs of one recipe get the same fingerprint."""
    from .io.store import StoreLayout

    attrs = dict(ds.attrs)
    if "recipe" in attrs:
        ident: Any = {"recipe": attrs["recipe"]}
    else:
        ident = {k: str(v) for k, v in attrs.items() if k not in ("history", "date_created")}
    ident["layout"] = StoreLayout.from_dataset(ds).to_json()
    ident["dtypes"] = {k: str(v.dtype) for k, v in ds.data_vars.items()}
    text = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _block_numbers(numblocks: tuple[int, ...]) -> np.ndarray:
    return np.arange(int(np.prod(numblocks)), dtype="int64").reshape(numblocks)


def _write_block_task(ids: np.ndarray, *arrays: np.ndarray, path: str, layout_json: dict,
                      names: tuple[str, ...]) -> np.ndarray:
    """Module-level block function: write one block of every variable, then record it."""
    from .io.store import StoreLayout, write_block

    layout = StoreLayout.from_json(layout_json)
    if isinstance(ids, tuple):  # the block index itself (ArrayBlockIdDep)
        index = tuple(int(i) for i in ids)
    else:
        index = layout.block_index(int(np.asarray(ids).reshape(-1)[0]))
    write_block(path, layout, index, dict(zip(names, arrays)))
    return np.ones((1,) * len(layout.dims), dtype="int8")


def _land_blocks(mask: xr.DataArray, layout, client: Any) -> set[tuple[int, ...]] | None:
    """Block indices (all block dims) whose spatial tile has no True pixel in ``mask``."""
    import dask
    import dask.array as dsa

    mdims = [d for d in mask.dims]
    if not set(mdims) <= set(layout.dims):
        raise DataError(f"mask dims {tuple(mdims)} are not among the map dims {layout.dims}",
                        where="map_to_store(mask=)", fix="Pass a (y, x) land mask of the map grid.")
    chunk_of = dict(zip(layout.dims, layout.chunks))
    m = mask.transpose(*[d for d in layout.dims if d in mdims])
    m = m.chunk({d: chunk_of[d] for d in m.dims})
    data = m.data
    anyb = dsa.map_blocks(_block_any, data.astype(bool), dtype=bool,
                          chunks=tuple((1,) * len(c) for c in data.chunks))
    if client is not None:
        flags = client.compute(anyb).result()
    else:
        flags = dask.compute(anyb)[0]
    flags = np.asarray(flags, dtype=bool)
    empty = set()
    mpos = [layout.dims.index(d) for d in m.dims]
    import itertools

    for idx in itertools.product(*[range(n) for n in layout.numblocks]):
        sub = tuple(idx[p] for p in mpos)
        if not flags[sub]:
            empty.add(tuple(idx))
    return empty


def _block_any(a: np.ndarray) -> np.ndarray:
    return np.array(bool(np.any(a))).reshape((1,) * a.ndim)


class _Progress:
    """Logs ``done/total`` blocks with rate and ETA, at most every few seconds (into the run's
    log), and shows a tqdm bar (:mod:`globalflux.progress`) unless bars are off."""

    def __init__(self, total: int, what: str, enabled: bool = True, every: float = 5.0):
        from .progress import progress_bar, progress_enabled

        self.total, self.what, self.enabled, self.every = total, what, enabled, every
        self.done = 0
        self.t0 = self.last = time.perf_counter()
        self._cm = progress_bar(total, what, enabled=enabled and progress_enabled(), unit="block")
        self._bar = self._cm.__enter__()

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)
        self.done += n
        if self.done >= self.total:
            self.close()
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.every or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            bar = "#" * int(20 * self.done / max(self.total, 1))
            log.info("%s [%-20s] %d/%d blocks (%.0f%%), %.2f blocks/s, ETA %.0f s", self.what, bar,
                     self.done, self.total, 100.0 * self.done / max(self.total, 1), rate, eta)


def batch_graph(status: Any, blocks: Sequence[tuple[int, ...]]) -> list[Any]:
    """One Delayed per block of ``status`` (the write array of :func:`map_to_store`), from a
    graph holding only those blocks' tasks, culled and fused.

    The graph is culled to the blocks first (symbolically: nothing of the other blocks is
    built), then Dask's array optimisation fuses each block's chain (read every input chunk,
    predict, write, record) into one task. Measured on a 1-worker LocalCluster (issue 15), the
    unfused graph ran 18 tasks per block (16 reads, predict, write) and a third of the wall
    time went to scheduling them; fused, the scheduler sees one task per block.
    """
    import dask.array as dsa
    from dask.delayed import Delayed

    keys = [(status.name, *map(int, b)) for b in blocks]
    dsk = dsa.optimize(status.__dask_graph__(), keys)
    return [Delayed(k, dsk) for k in keys]


def block_graph_tasks(status: Any) -> int:
    """Tasks per block in the fused graph :func:`batch_graph` submits: the graph of the first
    block alone, or, with two or more blocks, the growth from one block to two (tasks shared by
    all blocks, such as the model key or the opened stores, counted once by the caller)."""
    return sum(_graph_growth(status))


def _graph_growth(status: Any) -> tuple[int, int]:
    """``(per_block, shared)`` task counts of the fused graph, measured on blocks 0 and 1."""
    import itertools

    blocks = list(itertools.islice(np.ndindex(*status.numblocks), 2))
    one = len(batch_graph(status, blocks[:1])[0].__dask_graph__())
    if len(blocks) < 2:
        return max(1, one), 0
    two = len(batch_graph(status, blocks)[0].__dask_graph__())
    per = max(1, two - one)
    return per, max(0, one - per)


def _batch_blocks(status: Any, n: int, max_graph_tasks: int) -> int:
    """Blocks per submitted batch of ``n`` blocks to write: all of them when even the unfused,
    unculled graph fits in ``max_graph_tasks`` (its length is known without building it);
    else as many as fit, from the fused graph's growth per block (measuring that optimises
    the graph of two blocks: ~0.1 s a map, which a small map would pay for nothing)."""
    if len(status.__dask_graph__()) <= max_graph_tasks:
        return max(1, n)
    per_block, shared = _graph_growth(status)
    batch = max(1, min(n, int((max_graph_tasks - shared) // per_block)))
    if batch < n:
        log.info("graph of %d tasks per block (fused): at most %d of the %d blocks per "
                 "submitted graph", per_block, batch, n)
    return batch


def plan_tasks(pieces: Mapping[str, xr.DataArray], *,
               max_graph_tasks: int = 100_000) -> dict[str, int]:
    """The task count of the graph :func:`map_to_store` would build for ``pieces``, without
    writing or computing anything: blocks, fused tasks per block (measured on block 0 of the
    real write graph), total tasks, and the largest graph submitted at once."""
    from .io.store import StoreLayout

    ds = _assemble(pieces, None)
    layout = StoreLayout.from_dataset(ds)
    status = _write_graph(ds, layout, "/nonexistent/plan.zarr", "plan")
    per_block, shared = _graph_growth(status)
    batch = max(1, min(layout.nblocks, int((max_graph_tasks - shared) // per_block)))
    return {"blocks": int(layout.nblocks), "tasks_per_block": int(per_block),
            "shared_tasks": int(shared), "tasks": int(layout.nblocks * per_block + shared),
            "largest_graph": int(batch * per_block + shared)}


def _write_graph(ds: xr.Dataset, layout: Any, path: str, fp: str) -> Any:
    """The lazy write array of :func:`map_to_store`: one block per task, status int8."""
    import dask.array as dsa
    from dask.layers import ArrayBlockIdDep

    names = tuple(ds.data_vars)
    # the block index enters each task as a literal (no array of block numbers): nothing but
    # the inputs' reads stands between a block and its write, so the chain fuses to one task
    ids = ArrayBlockIdDep(tuple((1,) * n for n in layout.numblocks))
    ind = tuple(range(len(layout.dims)))
    args: list[Any] = [ids, ind]
    for n in names:
        v = ds[n]
        args.extend([v.data, tuple(layout.dims.index(d) for d in v.dims)])
    return dsa.blockwise(
        _write_block_task, ind, *args, dtype="int8", concatenate=True, align_arrays=False,
        adjust_chunks={i: 1 for i in ind}, path=str(path), layout_json=layout.to_json(),
        names=names, name=f"write-{fp}",
    )


def _blocks_to_compute(layout: Any, done: Any, mask: Any, client: Any, path: Path) -> list:
    """Blocks not yet written; blocks with no land under ``mask`` are recorded as fill (never
    computed) and left out."""
    from .io.store import record_blocks

    todo = [b for b in (layout.block_index(i) for i in range(layout.nblocks)) if b not in done]
    if mask is not None and todo:
        empty = _land_blocks(mask, layout, client)
        skip = [b for b in todo if b in empty]
        if skip:
            record_blocks(path, skip)
            log.info("%d of %d blocks have no land: recorded as fill without computing",
                     len(skip), layout.nblocks)
        todo = [b for b in todo if b not in empty]
    return todo


def _compute_on_client(client: Any, part: list, bar: Any) -> None:
    """Run one submitted batch on a distributed client, moving ``bar`` per finished block."""
    from distributed import as_completed

    futures = client.compute(part, optimize_graph=False)
    try:
        # as_completed looks up the current client; ours is not the default one
        with client.as_current():
            for fut in as_completed(futures, loop=client.loop):
                fut.result()
                bar.update()
    finally:
        for f in futures:
            f.release()


def map_to_store(
    client: Any,
    pieces: Mapping[str, xr.DataArray],
    store_path: str | Path,
    *,
    attrs: Mapping[str, Any] | None = None,
    mask: xr.DataArray | None = None,
    manifest: bool = True,
    resume: bool = False,
    progress: bool = True,
    fingerprint: str | None = None,
    max_graph_tasks: int = 100_000,
    zarr_format: int = 3,
) -> Path:
    """Write lazy maps into one Zarr store block by block, resumably; return the store path.

    Parameters
    ----------
    client
        A ``distributed.Client`` (e.g. ``ctx.client()``) or None for Dask's threaded scheduler.
    pieces
        Variable name -> lazy DataArray on one grid (dims a subset of ``(time, y, x)`` or any
        common dims). They are rechunked to common regular chunks if needed; the chunks become
        the Zarr chunks and the write blocks. The fill of each variable is its
        ``encoding["_FillValue"]`` (set by :func:`apply_to_cube`), else NaN / -1.
    store_path
        Target Zarr store (a folder; must not exist unless ``resume``).
    attrs
        Global attributes (e.g. :func:`globalflux.provenance.provenance_attrs`).
    mask
        Optional boolean (y, x) land mask: blocks whose tile has no land are recorded complete
        without computing or writing anything (they read as the fill value).
    manifest
        Must be True (kept for the documented signature): blocks are always recorded.
    resume
        Finish an existing store of the same fingerprint: only blocks not in its manifest are
        computed. A complete store is left as it is.
    progress
        Show a progress bar (tqdm; off with ``globalflux.progress.set_progress(False)`` or
        ``--quiet``) and log blocks done, rate and ETA.
    fingerprint
        Identity of the store's content; default :func:`store_fingerprint` of the pieces and
        attrs (the resolved recipe in ``attrs["recipe"]`` when present).
    max_graph_tasks
        Largest graph submitted at once; more blocks are submitted in batches.
    zarr_format
        3 (default) or 2 (GDAL's Zarr driver opens v2 only); recipe key ``mapping.zarr_format``.

    Raises
    ------
    StoreError
        The store exists and ``resume`` is False, or it belongs to another recipe/layout.
    """
    import dask

    from .io.store import finalize_store, is_complete, prepare_store

    if not manifest:
        raise StoreError("map_to_store always writes a manifest", where="map_to_store(manifest=)",
                         fix="Use globalflux.io.store.write_dataset for a one-shot write.")
    path = Path(store_path).absolute()  # workers may run in another working directory
    ds = _assemble(pieces, attrs)
    fp = fingerprint or store_fingerprint(ds)
    layout, done = prepare_store(path, ds, fingerprint=fp, resume=resume, zarr_format=zarr_format)
    if resume and is_complete(path) and len(done) >= layout.nblocks:
        log.info("store %s is complete; nothing to do", path)
        return path

    names = tuple(ds.data_vars)
    status = _write_graph(ds, layout, str(path), fp)
    todo = _blocks_to_compute(layout, done, mask, client, path)
    log.info("mapping %d variable(s) into %s: %d blocks of %s, %d to compute (%d done before)",
             len(names), path, layout.nblocks, "x".join(map(str, layout.chunks)), len(todo),
             len(done))
    if todo:
        batch = _batch_blocks(status, len(todo), max_graph_tasks)
        bar = _Progress(len(todo), f"map {path.name}", enabled=progress)
        for start in range(0, len(todo), batch):
            part = batch_graph(status, todo[start:start + batch])
            if client is not None:
                _compute_on_client(client, part, bar)
            else:
                # threaded scheduler: small sub-batches so the bar moves
                sub = max(1, min(len(part), 16))
                for s in range(0, len(part), sub):
                    # the configured local scheduler
                    dask.compute(*part[s:s + sub], optimize_graph=False)
                    bar.update(len(part[s:s + sub]))
    extra = {"globalflux_blocks": int(layout.nblocks)}
    finalize_store(path, layout, extra)
    log.info("store %s complete and consolidated", path)
    return path


# ------------------------------------------------------------------ LSTM: state carried in time
# Sequence models map differently from per-pixel ones: a pixel's value on day t depends on all
# its earlier days. apply_lstm_to_cube cuts the time axis into chunks and, for every spatial
# block, chains one task per time chunk, each handing the LSTM's hidden and cell state (h, c) to
# the next, so the map equals running every pixel's whole series at once (state zero on the
# first day) while no task holds more than one time chunk.

__all__ += ["apply_lstm_to_cube", "lstm_block", "require_daily"]


def require_daily(ds: xr.Dataset | xr.DataArray, where: str = "cube") -> Any:
    """The time axis of ``ds`` (a ``pandas.DatetimeIndex``) if it is daily: one step per
    calendar day, none missing.

    Raises
    ------
    DataError
        Naming ``where`` and the step found, when the axis is not daily (a daily model cannot
        be applied to it).
    """
    import pandas as pd

    if "time" not in ds.dims:
        raise DataError(f"has no time dimension (dims {tuple(ds.dims)})", where=where,
                        fix="Give a daily (time, y, x) cube.")
    t = pd.DatetimeIndex(ds["time"].values)
    if len(t) >= 2:
        steps = np.diff(t.values.astype("datetime64[s]").astype("int64")) / 86_400.0
        bad = np.flatnonzero(steps != 1.0)
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"time step is not daily: {steps[i]:g} days between {t[i]:%Y-%m-%d %H:%M} and "
                f"{t[i + 1]:%Y-%m-%d %H:%M} ({bad.size} of {steps.size} steps are not 1 day)",
                where=where,
                fix="The LSTM is a daily model: give one step per calendar day (resample or "
                "reindex to days; gaps may hold NaN).")
    return t


def _lstm_chunks(n: int, size: int) -> tuple[int, ...]:
    size = max(1, int(size))
    return tuple([size] * (n // size) + ([n % size] if n % size else []))


def _lstm_spatial_chunks(ds: xr.Dataset, names: Sequence[str], dim: str) -> tuple[int, ...]:
    for n in names:
        v = ds[n]
        if dim in v.dims and v.chunks is not None:
            return tuple(v.chunks[v.dims.index(dim)])
    return (ds.sizes[dim],)



def _lstm_module(weights: Any, device: str = "cpu") -> Any:
    """The torch module of ``weights`` (evaluation mode) on ``device``, built once per process
    (shared with site prediction: :func:`globalflux.models.lstm.inference._module_for`)."""
    from .models.lstm.inference import _module_for

    return _module_for(weights, device)


def lstm_block(weights: Any, mask: np.ndarray, statics: Sequence[np.ndarray],
               state: tuple[np.ndarray, np.ndarray] | None, *drivers: np.ndarray,
               dtype: str = "float32", batch_pixels: int = 4096, torch_threads: int | None = 1,
               device: str = "cpu") -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One time chunk of one spatial block: the task of :func:`apply_lstm_to_cube`.

    The network is stepped one day at a time from ``state``, so every day is computed with
    the same array shapes whatever the chunk length: cutting the time axis anywhere gives
    bit-identical values (a whole-sequence call would change the shapes of the input matmul,
    and with them the last bits of float32 results).

    Parameters
    ----------
    weights
        :class:`~globalflux.models.lstm.LSTMWeights` (state dict, scalers, sizes).
    mask
        (ny, nx) bool: pixels to predict (they also need finite statics).
    statics
        (ny, nx) arrays, one per static input.
    state
        ``(h, c)`` each (ny*nx, hidden) float32 after the previous time chunk, or None (zeros).
    drivers
        (t, ny, nx) arrays, one per driver, raw units (scaled here with the model's scalers;
        missing values take the training mean, as in training).
    dtype, batch_pixels, torch_threads
        Output dtype; pixels per network call (bounds memory; the batch composition is part
        of the computation, so keep it fixed when comparing runs); torch intra-op threads of
        the worker (set, not restored: tasks run concurrently; None leaves torch alone).
    device
        Torch device of the network (``"cpu"`` or ``"cuda"``); the state is handed between
        tasks as numpy arrays either way.

    Returns
    -------
    (y, (h, c))
        ``y`` (t, ny, nx) in target units (NaN outside the mask) and the state after the last
        day.
    """
    import torch

    from .models.lstm.inference import model_inputs

    if torch_threads is not None and torch.get_num_threads() != int(torch_threads):
        torch.set_num_threads(int(torch_threads))
    T, ny, nx = np.shape(drivers[0])
    P = ny * nx
    flat = [np.asarray(d).reshape(T, P) for d in drivers]
    stat = (np.stack([np.asarray(s, dtype="float64").reshape(P) for s in statics], axis=-1)
            if len(statics) else np.zeros((P, 0)))
    ok = np.asarray(mask, dtype=bool).reshape(P) & np.isfinite(stat).all(axis=1)
    H = int(weights.hidden_size)
    h = np.zeros((P, H), "float32") if state is None else state[0].copy()
    c = np.zeros((P, H), "float32") if state is None else state[1].copy()
    out = np.full((P, T), np.nan, dtype=dtype)
    mod = _lstm_module(weights, device)
    idx = np.flatnonzero(ok)
    for s in range(0, idx.size, int(batch_pixels)):
        sel = idx[s:s + int(batch_pixels)]
        dyn = np.stack([f[:, sel] for f in flat], axis=-1)  # (T, B, D)
        # float32, missing -> training mean; then one 0/1 availability channel per masked
        # driver (LSTMRegressor(masked_drivers=...)), exactly as in training
        zd = model_inputs(weights.scaler_dyn, dyn, getattr(weights, "available", ()))
        zs = (weights.scaler_static.transform(stat[sel]) if weights.n_static
              else np.zeros((sel.size, 0), "float32"))
        z = np.empty((T, sel.size), "float32")
        with torch.no_grad():
            xs = torch.from_numpy(np.ascontiguousarray(zs)).to(device)
            st = (torch.from_numpy(np.ascontiguousarray(h[sel]))[None].to(device),
                  torch.from_numpy(np.ascontiguousarray(c[sel]))[None].to(device))
            xd = torch.from_numpy(np.ascontiguousarray(zd)).to(device)  # (T, B, D)
            zt = torch.empty((T, sel.size), dtype=torch.float32, device=device)
            for t in range(T):
                y_t, st = mod(xd[t][:, None, :], xs, st)
                zt[t] = y_t[:, 0]
            z[:] = zt.cpu().numpy()
        out[sel] = weights.scaler_y.inverse(z.T[..., None])[..., 0].astype(dtype)
        h[sel], c[sel] = st[0][0].cpu().numpy(), st[1][0].cpu().numpy()
    return out.T.reshape(T, ny, nx), (h, c)


def apply_lstm_to_cube(
    model: Any,
    ds: xr.Dataset,
    drivers: Sequence[str],
    statics: Sequence[str] = (),
    *,
    mask: xr.DataArray | None = None,
    time_chunk: int = 365,
    dtype: str = "float32",
    batch_pixels: int = 4096,
    torch_threads: int | None = 1,
    check_daily: bool = True,
    device: str = "cpu",
    name: str = "prediction",
) -> xr.DataArray:
    """Apply a fitted sequence-to-sequence LSTM to every pixel of a daily cube, lazily.

    For every spatial block one chain of Dask tasks runs the time chunks in order; each task
    (:func:`lstm_block`) starts from the hidden and cell state ``(h, c)``
    the previous chunk of the same block ended with, so the result equals each pixel's whole
    series run at once, whatever ``time_chunk`` and the spatial chunks are. The model enters the
    graph as ONE key; every task is a module-level function; nothing is computed here.

    Parameters
    ----------
    model
        A fitted :class:`~globalflux.models.lstm.LSTMRegressor`, its ``weights()``
        (:class:`~globalflux.models.lstm.LSTMWeights`), or a Delayed / scattered Future of the
        weights (:func:`scatter_model`).
    ds
        Cube with dims ``(time, y, x)`` and a daily time axis: ``drivers`` over
        ``(time, y, x)`` or ``(time,)`` (broadcast, e.g. ``sin_doy``), ``statics`` over
        ``(y, x)``, in the units the model was trained with. Spatial chunks of the first
        chunked driver/static become the spatial blocks.
    drivers, statics
        Variable names in the model's column order (``model.drivers``, ``model.statics``).
    mask
        (y, x) bool, True where to predict; None: every pixel with finite statics.
    time_chunk
        Days per time chunk (per task and per output chunk).
    dtype, name
        Output dtype and name. The output's ``_FillValue`` encoding is NaN.
    batch_pixels
        Pixels per LSTM call inside a task (bounds a task's input memory).
    torch_threads
        Torch threads per worker process (default 1; Dask supplies the parallelism).
    check_daily
        Refuse a cube whose time axis is not daily (:func:`require_daily`).
    device
        Torch device of every task (``"cpu"``, ``"cuda"``; ``"auto"``: CUDA when the process
        building the graph sees one). Workers must have that device.

    Returns
    -------
    xr.DataArray
        Lazy ``(time, y, x)`` prediction in the target's units, chunks ``(time_chunk, y-chunks,
        x-chunks)``, NaN outside the mask; coordinates (and the CRS's ``spatial_ref``) of ``ds``.

    Raises
    ------
    DataError
        A driver or static absent from the cube (named), wrong dims, a non-daily time axis.
    ModelError
        The number of drivers/statics differs from the model's.

    Notes
    -----
    Writing the result block by block (:func:`map_to_store`) computes each chain once when all
    time chunks of a spatial block are submitted together; a block whose chain is split across
    submissions recomputes the earlier chunks of its chain (same values, more work).
    """
    import functools
    import operator

    import dask
    import dask.array as dsa
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    # imported on use: mapping a forest never loads the LSTM package
    from .errors import ModelError
    from .models.lstm import LSTMRegressor

    drivers, statics = list(drivers), list(statics)
    missing = [v for v in drivers + statics if v not in ds.data_vars]
    if missing:
        raise DataError(f"the driver cube lacks variable(s) {missing}", where="cube",
                        fix=f"Add them to the cube or change the model's inputs; the cube has "
                        f"{sorted(ds.data_vars)}.")
    for dim in ("time", "y", "x"):
        if dim not in ds.dims:
            raise DataError(f"has no {dim!r} dimension (dims {tuple(ds.dims)})", where="cube",
                            fix="Pass a (time, y, x) cube.")
    if check_daily:
        require_daily(ds)
    if hasattr(model, "members_"):
        raise ModelError("an LSTM ensemble has one map per member", where="apply_lstm_to_cube",
                         fix="Map it with globalflux.mapping.map_lstm (mean and <target>_sd).")
    weights = model.weights() if isinstance(model, LSTMRegressor) else model
    if _is_lazy_model(weights):
        w = weights if hasattr(weights, "__dask_graph__") else dask.delayed(weights)
    else:
        if (len(drivers), len(statics)) != (weights.n_dynamic, weights.n_static):
            raise ModelError(
                f"{len(drivers)} drivers and {len(statics)} statics given, the model takes "
                f"{weights.n_dynamic} and {weights.n_static}", where="apply_lstm_to_cube",
                fix="Pass the cube variables of the model's drivers and statics, in order.")
        w = dask.delayed(weights, pure=True, traverse=False)
    for v in drivers:
        if set(ds[v].dims) - {"time", "y", "x"} or "time" not in ds[v].dims:
            raise DataError(f"driver {v!r} has dims {ds[v].dims}", where=f"cube variable {v}",
                            fix="Drivers must be over (time, y, x) or (time,).")
    for v in statics:
        if set(ds[v].dims) != {"y", "x"}:
            raise DataError(f"static {v!r} has dims {ds[v].dims}", where=f"cube variable {v}",
                            fix="Statics must be over (y, x).")

    nt, ny, nx = ds.sizes["time"], ds.sizes["y"], ds.sizes["x"]
    tch = _lstm_chunks(nt, time_chunk)
    ych = _lstm_spatial_chunks(ds, drivers + statics, "y")
    xch = _lstm_spatial_chunks(ds, drivers + statics, "x")

    def prep(arr: xr.DataArray, dims: tuple[str, ...]) -> Any:
        shape = tuple(ds.sizes[d] for d in dims)
        chunks = tuple({"time": tch, "y": ych, "x": xch}[d] for d in dims)
        a = arr.transpose(*[d for d in dims if d in arr.dims])
        data = a.data if isinstance(a.data, dsa.Array) else dsa.from_array(np.asarray(a.data))
        if a.dims != dims:  # (time,) -> (time, y, x): a lazy broadcast, no copy
            data = dsa.broadcast_to(data[(slice(None),) + (None,) * (len(dims) - 1)], shape)
        return data.rechunk(chunks)

    drv = [prep(ds[v], ("time", "y", "x")) for v in drivers]
    sta = [prep(ds[v], ("y", "x")) for v in statics]
    if mask is None:
        msk = dsa.ones((ny, nx), dtype=bool, chunks=(ych, xch))
    else:
        if set(mask.dims) != {"y", "x"}:
            raise DataError(f"mask has dims {mask.dims}", where="mask",
                            fix="Pass a (y, x) boolean mask on the cube's grid.")
        msk = prep(mask.astype(bool), ("y", "x"))

    from .models.lstm.inference import resolve_device

    device = resolve_device(device)  # "auto" -> cuda/cpu; an unavailable device fails here
    token = tokenize(w.key, [d.name for d in drv], [s.name for s in sta], msk.name, tch, dtype,
                     batch_pixels, torch_threads, device)
    out_name, step, state = f"{name}-lstm-{token}", f"lstm-step-{token}", f"lstm-state-{token}"
    func = functools.partial(lstm_block, dtype=dtype, batch_pixels=batch_pixels,
                             torch_threads=torch_threads, device=device)
    dsk: dict[Any, Any] = {}
    for i in range(len(ych)):
        for j in range(len(xch)):
            prev = None
            for k in range(len(tch)):
                dsk[(step, k, i, j)] = (func, w.key, (msk.name, i, j),
                                        [(s.name, i, j) for s in sta], prev,
                                        *[(d.name, k, i, j) for d in drv])
                dsk[(out_name, k, i, j)] = (operator.getitem, (step, k, i, j), 0)
                dsk[(state, k, i, j)] = (operator.getitem, (step, k, i, j), 1)
                prev = (state, k, i, j)
    graph = HighLevelGraph.from_collections(out_name, dsk, dependencies=[w, msk, *drv, *sta])
    data = dsa.Array(graph, out_name, chunks=(tch, ych, xch), dtype=np.dtype(dtype))
    coords = {k: c for k, c in ds.coords.items() if set(c.dims) <= {"time", "y", "x"}}
    out = xr.DataArray(data, dims=("time", "y", "x"), coords=coords, name=name,
                       attrs={"long_name": "LSTM prediction (sequence to sequence, state carried "
                              "across time chunks)", "lstm_time_chunk": int(time_chunk)})
    out.encoding["_FillValue"] = np.nan
    return out


def _is_lstm(model: Any) -> bool:
    pkg = _package_of(model)
    if pkg is not None and pkg.kind == "lstm":
        return True
    return type(model).__name__ in ("LSTMRegressor", "LSTMEnsemble")


def _time_chunk_of(ds: xr.Dataset, names: Sequence[str], default: int = 365) -> int:
    """The cube's own time chunk (first chunked variable over time), else ``default``."""
    for n in names:
        v = ds[n]
        if "time" in v.dims and v.chunks is not None:
            return int(v.chunks[v.dims.index("time")][0])
    return int(default)


def lstm_valid_pixels(cube: xr.Dataset, drivers: list[str], statics: list[str]) -> xr.DataArray:
    """Pixels to map (lazy): the cube's ``land_mask`` when it has one, else pixels where every
    static and the first spatial driver are finite on some day."""
    if "land_mask" in cube:
        return cube["land_mask"].astype(bool)
    ok = None
    for v in statics:
        f = np.isfinite(cube[v])
        ok = f if ok is None else ok & f
    spatial = [v for v in drivers if {"y", "x"} <= set(cube[v].dims)]
    if spatial:
        f = np.isfinite(cube[spatial[0]]).any("time")
        ok = f if ok is None else ok & f
    if ok is None:
        ok = xr.ones_like(cube["x"] * cube["y"], dtype=bool)
    return ok.rename("land_mask")


def map_lstm(
    model: Any,
    cube: xr.Dataset,
    *,
    mask: xr.DataArray | None = None,
    bbox: Sequence[float] | None = None,
    time: tuple[Any, Any] | None = None,
    time_chunk: int | None = None,
    uncertainty: bool = True,
    check: bool = True,
    name: str | None = None,
    dtype: str = "float32",
    batch_pixels: int = 4096,
    torch_threads: int | None = 1,
    device: str = "cpu",
    drivers: Sequence[str] | None = None,
    statics: Sequence[str] | None = None,
) -> xr.Dataset:
    """The daily map of a (packaged) LSTM or LSTM seed ensemble over a daily cube, lazily.

    The one LSTM map path: :func:`map_cube` (hence ``globalflux map``) and the
    ``efflux_daily_map`` workflow call this, then :func:`map_chains_to_store`. Each member runs
    through :func:`apply_lstm_to_cube` (state carried across time chunks).

    Parameters
    ----------
    model
        A fitted :class:`~globalflux.models.lstm.LSTMRegressor` or
        :class:`~globalflux.models.lstm.LSTMEnsemble`, e.g. from :func:`globalflux.load_model`
        (its ``package_`` gives the inputs' units and the target's name and attributes).
    cube
        Daily cube holding the model's drivers (``(time, y, x)`` or ``(time,)``) and statics
        (``(y, x)``) under the model's names, with a CRS.
    mask, bbox, time, check, name
        As in :func:`map_cube` (``check`` also refuses a time axis that is not daily).
    time_chunk
        Days per task and per output chunk; default the cube's own time chunk (365 for an
        unchunked cube). It never changes a value.
    uncertainty
        For an ensemble, add ``<target>_sd``: the standard deviation across members
        (``ddof=1``), named like the forests' spread across trees.
    dtype, batch_pixels, torch_threads, device
        See :func:`apply_lstm_to_cube`.
    drivers, statics
        Cube variable names to use for the model's drivers and statics, in the model's order
        (default: the model's own names).

    Returns
    -------
    xr.Dataset
        ``<target>`` (the ensemble mean for an ensemble) and, for an ensemble with
        ``uncertainty``, ``<target>_sd``; ``(time, y, x)``, NaN where not mapped. Nothing is
        computed.
    """
    pkg = _package_of(model)
    members = list(getattr(model, "members_", None) or [model])
    base = members[0]
    drivers = [str(v) for v in (base.drivers if drivers is None else drivers)]
    statics = [str(v) for v in (base.statics if statics is None else statics)]
    if check:
        check_inputs(pkg, cube, drivers + statics)
        require_daily(cube, where="cube")
    ds = subset_cube(cube, bbox=bbox, time=time)
    if mask is None:  # the same pixels every LSTM map takes (workflow or `globalflux map`)
        mask = lstm_valid_pixels(ds, drivers, statics)
    else:
        mask = subset_cube(mask.to_dataset(name="mask"), bbox=bbox)["mask"].astype(bool)
    target = dict(pkg.target) if pkg is not None else {}
    tname = str(name or target.get("name") or base.target)
    units = target.get("units") or "1"
    tc = int(time_chunk) if time_chunk else _time_chunk_of(ds, drivers + statics)
    maps = [apply_lstm_to_cube(m, ds, drivers, statics, mask=mask, time_chunk=tc, dtype=dtype,
                               batch_pixels=batch_pixels, torch_threads=torch_threads,
                               check_daily=False, device=device, name=tname)
            for m in members]
    attrs = {k: v for k, v in target.items() if k in ("units", "standard_name", "long_name")
             and v}
    attrs.setdefault("long_name", f"{tname} (LSTM)")
    attrs.update(cell_methods="time: mean (daily)", lstm_time_chunk=tc)
    out: dict[str, xr.DataArray] = {}
    if len(maps) == 1:
        out[tname] = maps[0].assign_attrs(attrs)
    else:
        stack = xr.concat(maps, dim="member")
        out[tname] = stack.mean("member", skipna=False).astype(dtype).rename(tname).assign_attrs(
            {**attrs, "long_name": f"{attrs['long_name']}, mean of {len(maps)} seed-ensemble "
             "members"})
        if uncertainty:
            sd = f"{tname}_sd"
            out[sd] = stack.std("member", ddof=1, skipna=False).astype(dtype).rename(
                sd).assign_attrs(units=units, long_name=f"standard deviation of {tname} across "
                                 f"the {len(maps)} members of the LSTM seed ensemble",
                                 cell_methods="time: mean (daily)", lstm_time_chunk=tc)
    for v in out.values():
        v.encoding["_FillValue"] = np.float32(np.nan)
    result = xr.Dataset(out)
    result.attrs["lstm_members"] = len(maps)
    if pkg is not None:
        result.attrs.update(model_sha256=pkg.checksum, model_kind=pkg.kind,
                            model_package=str(pkg.path.name))
    return result


def map_chains_to_store(
    client: Any,
    pieces: Mapping[str, xr.DataArray],
    store_path: str | Path,
    *,
    chain_dim: str = "time",
    attrs: Mapping[str, Any] | None = None,
    mask: xr.DataArray | None = None,
    resume: bool = False,
    progress: bool = True,
    fingerprint: str | None = None,
    max_graph_tasks: int = 100_000,
) -> Path:
    """:func:`map_to_store` for maps whose blocks along ``chain_dim`` form a dependency chain.

    The blocks of :func:`apply_lstm_to_cube` along time depend on each other (each time chunk
    starts from the state its predecessor ended with). :func:`map_to_store` submits blocks in
    array order, time outermost, in batches; a chain cut across two submissions recomputes its
    earlier chunks (measured: 40 task runs for 24 blocks with the threaded scheduler). This
    writer is the same store, manifest, resume and land skipping, but submits whole chains:
    blocks are ordered chain by chain (``chain_dim`` innermost) and every submission holds
    complete chains only, so each chain runs once. Parameters as in :func:`map_to_store`.
    """
    import itertools

    import dask

    from .io.store import finalize_store, is_complete, prepare_store

    path = Path(store_path).absolute()
    ds = _assemble(pieces, attrs)
    fp = fingerprint or store_fingerprint(ds)
    layout, done = prepare_store(path, ds, fingerprint=fp, resume=resume)
    if resume and is_complete(path) and len(done) >= layout.nblocks:
        log.info("store %s is complete; nothing to do", path)
        return path
    if chain_dim not in layout.dims:
        raise DataError(f"the map has no {chain_dim!r} dimension (dims {layout.dims})",
                        where="map_chains_to_store(chain_dim=)", fix="Name a dimension of the map.")
    names = tuple(ds.data_vars)
    status = _write_graph(ds, layout, str(path), fp)
    ci = layout.dims.index(chain_dim)
    todo = _blocks_to_compute(layout, done, mask, client, path)

    def tile(b: tuple[int, ...]) -> tuple[int, ...]:
        return b[:ci] + b[ci + 1:]

    todo.sort(key=lambda b: (tile(b), b[ci]))  # chain by chain, chain_dim innermost
    chains = [list(g) for _, g in itertools.groupby(todo, key=tile)]
    log.info("mapping %d variable(s) into %s: %d blocks of %s in chains along %s, %d to compute "
             "in %d chains (%d done before)", len(names), path, layout.nblocks,
             "x".join(map(str, layout.chunks)), chain_dim, len(todo), len(chains), len(done))
    if todo:
        cap = _batch_blocks(status, len(todo), max_graph_tasks)  # blocks per submission
        batches: list[list[tuple[int, ...]]] = [[]]
        for ch in chains:
            if batches[-1] and len(batches[-1]) + len(ch) > cap:
                batches.append([])
            batches[-1].extend(ch)
        bar = _Progress(len(todo), f"map {path.name}", enabled=progress)
        for batch in batches:
            part = batch_graph(status, batch)
            delayed = dict(zip(batch, part))
            if client is not None:
                _compute_on_client(client, part, bar)
            else:  # threaded scheduler: whole chains per call, at least ~16 blocks at a time
                group: list[Any] = []
                for ch in [list(g) for _, g in itertools.groupby(batch, key=tile)]:
                    group.extend(delayed[b] for b in ch)
                    if len(group) >= 16:
                        dask.compute(*group, optimize_graph=False)
                        bar.update(len(group))
                        group = []
                if group:
                    dask.compute(*group, optimize_graph=False)
                    bar.update(len(group))
    finalize_store(path, layout, {"globalflux_blocks": int(layout.nblocks)})
    log.info("store %s complete and consolidated", path)
    return path


__all__ += ["map_chains_to_store", "map_lstm", "lstm_valid_pixels"]
