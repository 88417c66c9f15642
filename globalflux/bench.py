"""Chunk-throughput benchmarks: ``globalflux bench [--quick] [--out DIR] [--scheduler ADDR]``.

Every row is measured in the same process run, side by side, and printed as a table with its
context (chunk shape, workers, threads, versions, CPU count). Throughput is in *pixel-steps per
second per core* (one pixel at one time step = one prediction), measured single-threaded
unless the row says otherwise.

Rows
----
forest inference   scikit-learn RandomForestRegressor (100 trees, defaults) vs the fast forest
                   (LightGBM RF, bounded leaves, lleaves-compiled), both fitted on the synthetic
                   world's training table (globalflux.testing.synthetic), predicting its cube
                   pixels; full mode adds the LOSO R2 of both (the accuracy the speed keeps).
zoned forest       (full) ZonedForestRegressor.predict with engine sklearn vs lleaves.
zone labelling     ZoneClassifier.predict (scaler -> PCA -> nearest centre) on pixel factors.
LSTM inference     models.lstm.predict_cube (state carried across time chunks) on a daily cube.
Zarr write / read  io.store.write_dataset / open_dataset of a float32 (time, y, x) cube.
chunk pipeline     mapping.apply_to_cube + map_to_store from a Zarr predictor cube into a Zarr
                   map (read, predict with the fast forest, write, manifest), vs model-only
                   predict of the same pixels from memory: the end-to-end / model-only ratio.
peak memory        (full) peak RSS of one LocalCluster worker mapping an area A and 10 A.
throughput         one predictor cube mapped through the real path (fused write graph, blocks
                   of mapping.mapping_chunks): synchronous, LocalCluster 1 and 2 workers x 1
                   thread (cluster.local_cluster: globalflux's worker malloc thresholds and
                   monitor intervals), best of N; the ratios 1 worker / synchronous and 2 / 1
                   workers; 1 worker with Dask's defaults (MALLOC_TRIM_THRESHOLD_=65536, its
                   monitor intervals), with the minor page faults per map of each row; the CPU
                   an idle 1-worker cluster uses, both ways: the causes found in issue 15.
cold start         the demo's zoned-forest package (lleaves engine, forests compiled when it
                   was written): package write incl. compiling; load; first chunk; and a fresh
                   worker with an empty compile cache: load + first block - a later block.
LSTM map           mapping.apply_lstm_to_cube + map_chains_to_store (daily, state carried) on
                   one driver cube: synchronous, 1 and 2 workers, ratios; 1 worker with Dask's
                   defaults.
global year        the write graph map_to_store builds for a 46 x 43200 x 86400 cube (lazy
                   zeros at the map blocks, never computed): tasks; core-hours of a global year
                   (628 M land pixels x 46 periods; x 365 days for the LSTM) at the measured
                   1-worker rates.

Functions are importable: :func:`run_suite` returns ``(table DataFrame, context dict)``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["run_suite", "cli_main", "context"]

log = logging.getLogger("globalflux")


def context(client: Any = None, **extra: Any) -> dict[str, Any]:
    """Versions, CPUs and cluster size recorded beside the numbers."""
    import dask
    import lightgbm
    import sklearn
    import xarray
    import zarr

    from . import __version__
    from .cluster import cluster_config, describe, worker_malloc_env

    ctx = {
        "globalflux": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "xarray": xarray.__version__,
        "dask": dask.__version__,
        "zarr": zarr.__version__,
        "scikit-learn": sklearn.__version__,
        "lightgbm": lightgbm.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cluster": describe(client),
        "local_worker_malloc": worker_malloc_env(),
        "local_cluster_config": cluster_config(),
    }
    try:
        import lleaves

        ctx["lleaves"] = getattr(lleaves, "__version__", "installed")
    except ImportError:  # pragma: no cover
        ctx["lleaves"] = None
    ctx.update(extra)
    return ctx


def _best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _row(rows, bench, what, value, unit, **notes):
    rows.append({"benchmark": bench, "what": what, "value": float(value), "unit": unit,
                 "notes": "; ".join(f"{k}={v}" for k, v in notes.items())})


# ------------------------------------------------------------------------------------- forest


def _world(quick: bool):
    from .config import SyntheticConfig
    from .testing.synthetic import FACTORS, PREDICTORS, make_world

    cfg = SyntheticConfig(ny=96, nx=96) if quick else SyntheticConfig()
    w = make_world(cfg)
    table = w.training_table()
    cols = list(PREDICTORS) + list(FACTORS)
    return w, table, cols


def _pixel_rows(cube, cols, n: int) -> np.ndarray:
    """Up to ``n`` prediction rows: real cube pixels (land, every time step, all features
    finite), as the map would see them; static (y, x) features broadcast over time."""
    land = cube["land_mask"].values
    feats = []
    for c in cols:
        v = cube[c].values
        v = np.broadcast_to(v, (cube.sizes["time"],) + land.shape) if v.ndim == 2 else v
        feats.append(v[:, land].reshape(-1))
    P = np.stack(feats, axis=1)
    return P[np.isfinite(P).all(1)][:n]


def bench_forest(rows, *, quick: bool, num_leaves: int = 127, loso: bool | None = None):
    """sklearn default forest vs the fast forest: pixels/s per core (and LOSO R2 in full)."""
    from sklearn.ensemble import RandomForestRegressor

    from .models.fast import FastForestRegressor, loso_r2

    w, table, cols = _world(quick)
    X = table[cols].to_numpy("float64")
    y = table["rh"].to_numpy("float64")
    g = table["site_id"].astype(str).to_numpy()
    P = np.ascontiguousarray(_pixel_rows(w.cube, cols, 50_000 if quick else 400_000))
    skl = RandomForestRegressor(n_estimators=100, n_jobs=1, random_state=0).fit(X, y)
    fast = FastForestRegressor(n_estimators=100, num_leaves=num_leaves, n_jobs=1,
                               random_state=0).fit(X, y)
    t0 = time.perf_counter()
    fast._compiled_model()  # compiled before timing (as on a worker's first big chunk)
    _row(rows, "forest inference", f"lleaves compile ({num_leaves} leaves x 100 trees)",
         time.perf_counter() - t0, "s", note="once per worker; 0 when cached")
    rep = 1 if quick else 3
    t_skl = _best_time(lambda: skl.predict(P), rep)
    t_lgb = _best_time(lambda: fast.booster_.predict(P, num_threads=1), rep)
    t_fast = _best_time(lambda: fast.predict(P), rep)
    leaves = int(np.mean([e.tree_.n_leaves for e in skl.estimators_]))
    _row(rows, "forest inference", "sklearn RF default (100 trees)", len(P) / t_skl,
         "pixel-steps/s/core", mean_leaves=leaves, pixels=len(P))
    _row(rows, "forest inference", f"LightGBM RF predict ({num_leaves} leaves)", len(P) / t_lgb,
         "pixel-steps/s/core", pixels=len(P))
    _row(rows, "forest inference", f"fast forest lleaves ({num_leaves} leaves)", len(P) / t_fast,
         "pixel-steps/s/core", pixels=len(P))
    _row(rows, "forest inference", "speed-up lleaves / sklearn", t_skl / t_fast, "x",
         target=">= 5")
    if loso if loso is not None else not quick:
        r_skl = loso_r2(lambda: RandomForestRegressor(n_estimators=100, n_jobs=1,
                                                      random_state=0), X, y, g)
        r_fast = loso_r2(lambda: FastForestRegressor(n_estimators=100, num_leaves=num_leaves,
                                                     compile=False, random_state=0), X, y, g)
        _row(rows, "forest accuracy", "LOSO R2 sklearn RF default", r_skl, "R2",
             sites=len(set(g)), n_rows=len(y), data="SYNTHETIC world")
        _row(rows, "forest accuracy", f"LOSO R2 fast forest ({num_leaves} leaves)", r_fast, "R2",
             sites=len(set(g)), n_rows=len(y), data="SYNTHETIC world")
        _row(rows, "forest accuracy", "R2 difference (fast - sklearn)", r_fast - r_skl, "R2",
             target=">= -0.01")
    return w, table, cols, fast


def bench_zoned_forest(rows, w, table, cols, *, quick: bool):
    """The demo's model: ZonedForestRegressor (zones + one forest per zone), sklearn vs lleaves
    engine, predicting cube pixels (models/forest.py routes engines to models.fast)."""
    from .models.forest import ZonedForestRegressor
    from .testing.synthetic import FACTORS
    from .zones import ZoneClassifier

    X = table[cols]
    y = table["rh"].to_numpy("float64")
    groups = table["site_id"].astype(str).to_numpy()
    P = pd.DataFrame(_pixel_rows(w.cube, cols, 30_000 if quick else 200_000), columns=cols)
    for engine in ("sklearn", "lleaves"):
        model = ZonedForestRegressor(
            zone_factors=list(FACTORS), zone_classifier=ZoneClassifier(n_zones=4, n_iter=20),
            n_estimators=100, eliminate=False, engine=engine, n_jobs=1, random_state=0,
        ).fit(X, y, groups=groups)
        t0 = time.perf_counter()
        model.predict(P)  # the first big call compiles each zone's forest (lleaves), once
        if engine == "lleaves":
            _row(rows, "zoned forest", "first predict incl. compiling 4 zone forests",
                 time.perf_counter() - t0, "s", note="once per worker; cached per machine")
        t = _best_time(lambda m=model: m.predict(P), 1 if quick else 2)
        _row(rows, "zoned forest", f"ZonedForestRegressor.predict, engine={engine}", len(P) / t,
             "pixel-steps/s/core", zones=4, trees_per_zone=100, pixels=len(P))


def _lleaves_cache(folder: Path):
    """Within: lleaves compile cache at ``folder`` (GLOBALFLUX_LLEAVES_CACHE, inherited by worker
    processes started inside), so a row does not find another run's compiled forests."""
    from .cluster import patched_environ

    return patched_environ({"GLOBALFLUX_LLEAVES_CACHE": str(folder)})


def bench_cold_start(rows, w, table, cols, *, quick: bool, tmp: Path):
    """Cold start of a map worker: load and verify a zoned-forest model package (lleaves
    engine), then the first chunk's prediction including compiling each zone's forest into an
    empty compile cache, then the same first prediction from a freshly loaded package with the
    compiled forests cached."""

    from .io.model_package import load_model, write_package
    from .models.forest import ZonedForestRegressor
    from .testing.synthetic import FACTORS
    from .zones import ZoneClassifier

    n_trees = 10 if quick else 100
    model = ZonedForestRegressor(
        zone_factors=list(FACTORS), zone_classifier=ZoneClassifier(n_zones=4, n_iter=20),
        n_estimators=n_trees, eliminate=False, engine="lleaves", n_jobs=1, random_state=0,
    ).fit(table[cols], table["rh"].to_numpy("float64"), groups=table["site_id"].astype(str))
    with _lleaves_cache(tmp / "write-cache"):  # empty: the row measures compiling
        t = time.perf_counter()
        folder = write_package(tmp / "cold-start-model", model)  # compiles the zone forests
        t_write = time.perf_counter() - t
    _row(rows, "cold start", "write package incl. compiling zone forests", t_write,
         "s", zones=4, trees_per_zone=n_trees, note="once, at training time; empty compile cache")
    # a map chunk's worth of rows, so every zone's table is large enough to use the compiled model
    P = pd.DataFrame(_pixel_rows(w.cube, cols, 100_000), columns=cols)
    with _lleaves_cache(tmp / "cold-start-cache"):
        t = time.perf_counter()
        loaded = load_model(folder)
        t_load = time.perf_counter() - t
        t = time.perf_counter()
        loaded.predict(P)
        t_first = time.perf_counter() - t
        again = load_model(folder)
        t = time.perf_counter()
        again.predict(P)
        t_warm = time.perf_counter() - t
    size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    _row(rows, "cold start", "load + verify zoned forest package", t_load, "s",
         zones=4, trees_per_zone=n_trees, package_mib=round(size, 2))
    _row(rows, "cold start", "first chunk predict, empty cache (package's compiled forests)",
         t_first, "s", pixels=len(P), note="compiled when the package was written")
    _row(rows, "cold start", "first chunk predict, compiled forests cached", t_warm, "s",
         pixels=len(P))
    return folder


def bench_zones(rows, w, table, *, quick: bool):
    from .testing.synthetic import FACTORS
    from .zones import ZoneClassifier

    sites = table.groupby("site_id")[list(FACTORS)].first()
    clf = ZoneClassifier(n_zones=4, n_iter=20, random_state=0).fit(sites)
    land = w.cube["land_mask"].values
    F = np.stack([w.cube[f].values[land] for f in FACTORS], 1)
    reps = max(1, (200_000 if quick else 2_000_000) // len(F))
    F = pd.DataFrame(np.tile(F, (reps, 1)), columns=list(FACTORS))
    t = _best_time(lambda: clf.predict(F), 1 if quick else 3)
    _row(rows, "zone labelling", "ZoneClassifier.predict", len(F) / t, "pixels/s/core",
         pixels=len(F))


def bench_lstm(rows, *, quick: bool):
    import dask
    import xarray as xr

    from .models.lstm import LSTMRegressor, predict_cube

    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 60, 2))
    yy = rng.normal(size=(4, 60))
    S = rng.normal(size=(4, 1))
    m = LSTMRegressor(drivers=("a", "b"), statics=("s",), epochs=1, batches_per_epoch=1,
                      batch_size=8, num_threads=1, random_state=0).fit(X, yy, static=S)
    nt, ny, nx = (60, 12, 12) if quick else (365, 32, 32)
    ds = xr.Dataset({"a": (("time", "y", "x"), rng.normal(size=(nt, ny, nx))),
                     "b": (("time", "y", "x"), rng.normal(size=(nt, ny, nx))),
                     "s": (("y", "x"), rng.normal(size=(ny, nx)))},
                    coords={"time": pd.date_range("2020-01-01", periods=nt),
                            "y": np.arange(ny) * 1.0, "x": np.arange(nx) * 1.0})
    lazy = predict_cube(m, ds.chunk({"y": ny, "x": nx}), ["a", "b"], ["s"], time_chunk=nt // 3)
    with dask.config.set(scheduler="synchronous"):
        t = _best_time(lambda: lazy.compute(), 1)
    _row(rows, "LSTM inference", "predict_cube (hidden 128, state carried)", nt * ny * nx / t,
         "pixel-steps/s/core", cube=f"{nt}x{ny}x{nx}", time_chunk=nt // 3)


# -------------------------------------------------------------------------------- pipeline


def _random_cube(nt: int, ny: int, nx: int, names, chunks, seed: int = 0):
    import dask.array as dsa
    import xarray as xr

    rng = dsa.random.default_rng(seed)
    data = {n: (("time", "y", "x"), rng.normal(size=(nt, ny, nx), chunks=(chunks[0],) +
                                               tuple(chunks[1:])).astype("float32"))
            for n in names}
    return xr.Dataset(data, coords={"time": pd.date_range("2020-01-01", periods=nt, freq="8D"),
                                    "y": 50.0 - np.arange(ny) * 0.01,
                                    "x": np.arange(nx) * 0.01})


def _store(ds, path: Path) -> float:
    """Write ``ds`` to Zarr at ``path`` (replacing it) on Dask's synchronous scheduler; seconds."""
    import dask

    from .io.store import write_dataset

    t = time.perf_counter()
    with dask.config.set(scheduler="synchronous"):
        write_dataset(ds, path, mode="w")
    return time.perf_counter() - t


def _write_cube(tmp: Path, nt, ny, nx, cols, chunks):
    path = tmp / f"cube_{ny}x{nx}.zarr"
    return path, _store(_random_cube(nt, ny, nx, cols, chunks), path)


def bench_zarr_and_pipeline(rows, model, cols, *, quick: bool, tmp: Path, client=None):
    import dask

    from .io.store import open_dataset
    from .mapping import apply_to_cube, map_to_store

    nt, ny, nx = (8, 256, 256) if quick else (23, 512, 512)
    chunks = (nt, 128, 128)
    path, t_w = _write_cube(tmp, nt, ny, nx, cols, chunks)
    cells = nt * ny * nx
    mb = cells * len(cols) * 4 / 2**20
    _row(rows, "Zarr", "write predictor cube (generate + encode + write)", cells / t_w,
         "pixel-steps/s/core", variables=len(cols), MiB=round(mb, 1), chunks="x".join(map(str, chunks)))
    ds = open_dataset(path, chunks={})
    with dask.config.set(scheduler="synchronous"):
        t_r = _best_time(lambda: [ds[c].data.sum().compute() for c in cols], 1)
    _row(rows, "Zarr", "read predictor cube", cells / t_r, "pixel-steps/s/core",
         MiB_per_s=round(mb / t_r, 1))

    # model only: the same pixels, in memory, one call per chunk-sized batch
    X = np.stack([ds[c].values.reshape(-1) for c in cols], 1).astype("float64")
    step = chunks[0] * chunks[1] * chunks[2]

    def model_only():
        for s in range(0, len(X), step):
            model.predict(X[s:s + step])

    rep = 1 if quick else 3  # best of N: the machine may be shared
    t_m = _best_time(model_only, rep)
    _row(rows, "chunk pipeline", "model only (fast forest, in memory)", cells / t_m,
         "pixel-steps/s/core", pixels=cells)

    def end_to_end(i=[0]):  # noqa: B006 - a fresh store name per repeat
        i[0] += 1
        out = tmp / f"map_{i[0]}.zarr"
        cube = open_dataset(path, chunks={})
        rh = apply_to_cube(model, cube, cols, as_frame=False, name="rh")
        if client is None:
            with dask.config.set(scheduler="synchronous"):
                map_to_store(None, {"rh": rh}, out, progress=False)
        else:
            map_to_store(client, {"rh": rh}, out, progress=False)
        shutil.rmtree(out, ignore_errors=True)

    t_e = _best_time(end_to_end, rep)
    cores = 1 if client is None else max(1, _threads(client))
    _row(rows, "chunk pipeline", "end to end (read + predict + write + manifest)",
         cells / t_e / cores, "pixel-steps/s/core", chunks="x".join(map(str, chunks)),
         scheduler="synchronous" if client is None else f"{cores} threads")
    _row(rows, "chunk pipeline", "end-to-end / model-only", (cells / t_e / cores) / (cells / t_m),
         "ratio", target=">= 0.5")
    return path


def _threads(client) -> int:
    from .cluster import describe

    return int(describe(client)["threads"])


def _peak_rss() -> int:
    """Module-level (runs on a worker): peak resident memory of this process in bytes.

    Linux ``VmHWM`` (high-water mark of this address space; reset by exec). ``ru_maxrss`` is
    only a fallback: it survives fork+exec, so a spawned worker would report its parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _map_on_cluster(model, cols, cube_path, out, n_workers, repeat=1):
    from distributed import Client

    from .cluster import local_cluster
    from .io.store import open_dataset
    from .mapping import apply_to_cube, map_to_store, scatter_model

    with local_cluster(n_workers, 1, "3GiB") as lc, Client(lc) as c:
        cube = open_dataset(cube_path, chunks={})
        fut = scatter_model(c, model)
        rh = apply_to_cube(fut, cube, cols, as_frame=False, name="rh")
        dt = float("inf")
        for _ in range(repeat):  # best of N
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            map_to_store(c, {"rh": rh}, out, progress=False)
            dt = min(dt, time.perf_counter() - t)
        peaks = c.run(_peak_rss)
    shutil.rmtree(out, ignore_errors=True)
    return dt, max(peaks.values())


def bench_cluster(rows, model, cols, *, tmp: Path):
    """Peak worker memory for area A vs 10 A (full mode)."""
    nt = 8
    chunks = (nt, 128, 128)
    small, _ = _write_cube(tmp, nt, 256, 256, cols, chunks)
    big, _ = _write_cube(tmp, nt, 810, 810, cols, chunks)  # 10.0 x the area
    t_a, peak_a = _map_on_cluster(model, cols, small, tmp / "ma.zarr", 1)
    t_b, peak_b = _map_on_cluster(model, cols, big, tmp / "mb.zarr", 1)
    _row(rows, "peak memory", "worker peak RSS, area A (256x256x8)", peak_a / 2**20, "MiB",
         workers=1, threads=1)
    _row(rows, "peak memory", "worker peak RSS, area 10 A (810x810x8)", peak_b / 2**20, "MiB",
         workers=1, threads=1)
    _row(rows, "peak memory", "peak(10 A) / peak(A)", peak_b / peak_a, "ratio", target="<= 1.2")
    # 1 vs 2 workers: the throughput rows (bench_throughput), on the pipeline's cube


# ------------------------------------------------------------------- cluster throughput (#15)

#: a global 500 m, 8-day year of the zoned forest (issue 15): land pixels x periods
GLOBAL_LAND_PIXELS = 628_000_000
GLOBAL_PERIODS = 46
GLOBAL_SHAPE = (43_200, 86_400)  # (y, x) of the 500 m sinusoidal grid


#: the workers' malloc environment Dask's Nanny sets by default (the ablation rows of issue 15)
DASK_MALLOC = {"MALLOC_TRIM_THRESHOLD_": "65536"}
#: the note of those rows
DASK_DEFAULTS_NOTE = ("MALLOC_TRIM_THRESHOLD_=65536 and Dask's monitor intervals: before "
                      "cluster.WORKER_MALLOC and cluster.CLUSTER_CONFIG")


def _cluster(n_workers: int, memory: str = "3GiB", dask_defaults: bool = False):
    """A LocalCluster as globalflux starts one (:func:`globalflux.cluster.local_cluster`), or,
    ``dask_defaults``, with Dask's own malloc environment and monitor settings (the ablation)."""
    from distributed import Client

    from .cluster import local_cluster

    kw = {"malloc": DASK_MALLOC, "config": {}} if dask_defaults else {}
    lc = local_cluster(n_workers, 1, memory, **kw)
    return lc, Client(lc, set_as_default=False)


def _idle_cpu(client, seconds: float = 4.0) -> float:
    """CPU (fraction of one core) this process and its worker processes use while the cluster
    of ``client`` sits idle for ``seconds`` (scheduler, nannies and workers: Dask's monitors)."""
    import psutil

    procs = [psutil.Process()] + [psutil.Process(p) for p in client.run(os.getpid).values()]

    def cpu() -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in procs))

    time.sleep(1.0)  # let start-up work settle
    a = cpu()
    time.sleep(seconds)
    return (cpu() - a) / seconds


def _minor_faults() -> int:
    """Module-level (runs on a worker too): minor page faults of this process so far."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def _faults(client) -> int:
    """Minor page faults so far of this process (``client`` None) or of the client's workers."""
    return _minor_faults() if client is None else sum(client.run(_minor_faults).values())


def _timed_write(client, write, pieces, out: Path) -> float:
    """Seconds of one ``write(client, pieces, out)`` (``map_to_store`` or
    ``map_chains_to_store``): Dask's synchronous scheduler without a client, else on ``client``;
    the store is removed before and after."""
    import dask

    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    if client is None:
        with dask.config.set(scheduler="synchronous"):
            write(None, pieces, out, progress=False)
    else:
        with client.as_current():
            write(client, pieces, out, progress=False)
    dt = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    return dt


def _map_forest(client, model, cols, cube_path, out, chunks) -> float:
    """One map of the cube through the real path (map_cube's chunking, map_to_store); seconds."""
    from .io.store import open_dataset
    from .mapping import apply_to_cube, map_to_store, scatter_model

    cube = open_dataset(cube_path, chunks=chunks)  # opened at the map blocks, as globalflux map
    est = model if client is None else scatter_model(client, model)
    rh = apply_to_cube(est, cube, cols, as_frame=False, name="rh")
    return _timed_write(client, map_to_store, {"rh": rh}, out)


def bench_throughput(rows, model, cols, *, quick: bool, tmp: Path) -> float:
    """Synchronous pipeline vs a LocalCluster of 1 and 2 workers (1 thread each), all on the
    SAME predictor cube with the SAME map blocks (:func:`globalflux.mapping.mapping_chunks`
    for 2 workers); interleaved rounds, best of N. Then 1 worker with Dask's defaults (its
    malloc environment and monitor intervals: the causes found in issue 15; minor page faults
    per map and idle-cluster CPU are noted). Returns the 1-worker rate (pixel-steps/s)."""
    from .mapping import mapping_chunks

    nt, ny, nx = (8, 512, 512) if quick else (23, 512, 512)
    path, _ = _write_cube(tmp, nt, ny, nx, cols, (nt, 128, 128))
    chunks = mapping_chunks({"time": nt, "y": ny, "x": nx}, len(cols), worker_memory="3GiB",
                            workers=2, storage_chunks={"y": 128, "x": 128})
    cells = nt * ny * nx
    rep = 2 if quick else 5  # rounds (best of each); the ablation below runs 3 times
    cube = f"{nt}x{ny}x{nx}"
    blocks = "x".join(str(v) for v in chunks.values())
    # the synchronous, 1-worker and 2-worker maps run in interleaved rounds (best of N each),
    # both clusters up: a machine whose speed drifts (shared hosts) shifts all three alike
    times: dict[Any, float] = {}
    faults: dict[Any, float] = {"sync": 0.0, 1: 0.0, 2: 0.0}
    idle: dict[Any, float] = {}
    clusters = {1: _cluster(1)}
    try:
        idle[1] = _idle_cpu(clusters[1][1])  # alone: this process hosts every scheduler
        clusters[2] = _cluster(2)
        for _lc, c in clusters.values():
            _map_forest(c, model, cols, path, tmp / "tw.zarr", chunks)  # warm: compile, imports
        runs = [("sync", None)] + [(n, c) for n, (_lc, c) in clusters.items()]
        for _ in range(rep):
            for key, c in runs:
                f0 = _faults(c)
                t = _map_forest(c, model, cols, path, tmp / f"t{key}.zarr", chunks)
                faults[key] += (_faults(c) - f0) / rep
                times[key] = min(times.get(key, t), t)
    finally:
        # last opened, first closed: each LocalCluster restores the distributed log level it
        # found, so closing the first one first lets the second one's close log at INFO
        for lc, c in reversed(list(clusters.values())):
            c.close()
            lc.close()
    t_s = times["sync"]
    lc, c = _cluster(1, dask_defaults=True)  # the ablation: Dask's malloc and monitor settings
    try:
        idle["dask"] = _idle_cpu(c)
        _map_forest(c, model, cols, path, tmp / "tw.zarr", chunks)
        f0 = _faults(c)
        n_dask = min(rep, 3)
        times["dask"] = min(_map_forest(c, model, cols, path, tmp / "td.zarr", chunks)
                            for _ in range(n_dask))
        faults["dask"] = (_faults(c) - f0) / n_dask
    finally:
        c.close()
        lc.close()
    pf = {k: f"{v / 1e3:.0f}k" for k, v in faults.items()}
    _row(rows, "throughput", "pipeline synchronous", cells / t_s, "pixel-steps/s", cube=cube,
         blocks=blocks, cores=1, page_faults_per_map=pf["sync"])
    _row(rows, "throughput", "cluster 1 worker", cells / times[1], "pixel-steps/s", cube=cube,
         blocks=blocks, threads=1, page_faults_per_map=pf[1])
    _row(rows, "throughput", "cluster 2 workers", cells / times[2], "pixel-steps/s", cube=cube,
         blocks=blocks, threads=2, page_faults_per_map=pf[2])
    _row(rows, "throughput", "cluster 1 worker, Dask's defaults", cells / times["dask"],
         "pixel-steps/s", cube=cube, blocks=blocks, threads=1, page_faults_per_map=pf["dask"],
         note=DASK_DEFAULTS_NOTE)
    _row(rows, "throughput", "cluster 1 worker / synchronous", t_s / times[1], "ratio",
         target=">= 0.8")
    _row(rows, "throughput", "cluster 2 / 1 workers", times[1] / times[2], "ratio",
         target=">= 1.7", cpus=os.cpu_count())
    _row(rows, "throughput", "cluster 1 worker, Dask's defaults / synchronous",
         t_s / times["dask"], "ratio")
    _row(rows, "throughput", "idle cluster CPU, 1 worker", 100 * idle[1], "% of a core",
         note="scheduler + nanny + worker, 4 s idle; cluster.CLUSTER_CONFIG")
    _row(rows, "throughput", "idle cluster CPU, 1 worker, Dask's defaults", 100 * idle["dask"],
         "% of a core", note="scheduler + nanny + worker, 4 s idle")
    return cells / times[1]


def _cold_probe(folder: str, P: pd.DataFrame) -> tuple[float, float, float]:
    """Runs on a fresh worker: load + verify the package, first block, a later block (s)."""
    from .io.model_package import load_model

    t = time.perf_counter()
    model = load_model(folder)
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    model.predict(P)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    model.predict(P)
    return t_load, t_first, time.perf_counter() - t


def bench_cold_worker(rows, folder: Path, w, cols, *, tmp: Path) -> None:
    """A fresh 1-worker LocalCluster with an empty compile cache maps one 100 k-pixel block with
    the demo's zoned-forest package: cold start = load + first block - a later block."""
    P = pd.DataFrame(_pixel_rows(w.cube, cols, 100_000), columns=cols)  # real pixels: all zones
    with _lleaves_cache(tmp / "cold-worker-cache"):  # inherited by the worker
        lc, c = _cluster(1)
        try:
            t_load, t_first, t_later = c.submit(_cold_probe, str(folder), P,
                                                pure=False).result()
        finally:
            c.close()
            lc.close()
    _row(rows, "cold start", "cold start per worker", t_load + t_first - t_later, "s",
         target="<= 5", load=round(t_load, 3), first_block=round(t_first, 3),
         later_block=round(t_later, 3), pixels=len(P), cache="empty")


def bench_global_year(rows, model, cols, rate_1w: float, lstm_rate: float | None) -> None:
    """The graph the real path builds for a global 46-period 86400 x 43200 year (lazy zeros on
    the cube's default storage chunks; never computed) and core-hours from measured rates."""
    import dask.array as dsa
    import xarray as xr

    from .mapping import apply_to_cube, mapping_chunks, plan_tasks

    ny, nx = GLOBAL_SHAPE
    sizes = {"time": GLOBAL_PERIODS, "y": ny, "x": nx}
    # stored in 128 x 128 tiles (the cube recipe's fixed chunk_y/chunk_x), opened at the map
    # blocks (as globalflux map opens a cube), 2 GiB workers (the LocalCluster default)
    chunks = mapping_chunks(sizes, len(cols) + 1, worker_memory="2GiB",
                            storage_chunks={"y": 128, "x": 128})
    shape = (GLOBAL_PERIODS, ny, nx)
    zeros = dsa.zeros(shape, chunks=tuple(chunks[d] for d in ("time", "y", "x")),
                      dtype="float32")
    ds = xr.Dataset({c: (("time", "y", "x"), zeros) for c in cols})
    land = xr.DataArray(dsa.ones((ny, nx), chunks=(chunks["y"], chunks["x"]), dtype=bool),
                        dims=("y", "x"))
    t = time.perf_counter()
    rh = apply_to_cube(model, ds, cols, mask=land, as_frame=False, name="rh")
    plan = plan_tasks({"rh": rh})
    dt = time.perf_counter() - t
    _row(rows, "global year", "global year: tasks", plan["tasks"], "tasks", target="<= 100000",
         blocks=plan["blocks"], tasks_per_block=plan["tasks_per_block"],
         largest_graph=plan["largest_graph"], chunks="x".join(str(v) for v in chunks.values()),
         cube=f"{GLOBAL_PERIODS}x{ny}x{nx}", built_s=round(dt, 1))
    steps = GLOBAL_LAND_PIXELS * GLOBAL_PERIODS
    _row(rows, "global year", "global year: projected core-hours (forest)",
         steps / rate_1w / 3600, "core-hours", land_pixels=GLOBAL_LAND_PIXELS,
         periods=GLOBAL_PERIODS, rate="cluster 1 worker")
    if lstm_rate:
        steps = GLOBAL_LAND_PIXELS * 365
        _row(rows, "global year", "global year: projected core-hours (LSTM, daily)",
             steps / lstm_rate / 3600, "core-hours", land_pixels=GLOBAL_LAND_PIXELS, days=365,
             rate="LSTM cluster 1 worker")


def bench_global_year_lstm(rows, weights, time_chunk: int = 122) -> None:
    """The write graph map_chains_to_store builds for a global daily year of the LSTM (365 x
    43200 x 86400, 2 drivers + 1 static, lazy zeros at the map blocks; never computed)."""
    import dask.array as dsa
    import xarray as xr

    from .mapping import apply_lstm_to_cube, mapping_chunks, plan_tasks

    ny, nx = GLOBAL_SHAPE
    nt = 365
    ch = mapping_chunks({"time": time_chunk, "y": ny, "x": nx}, 3, worker_memory="2GiB",
                        storage_chunks={"y": 128, "x": 128})
    t = time.perf_counter()
    z = dsa.zeros((nt, ny, nx), chunks=(time_chunk, ch["y"], ch["x"]), dtype="float32")
    s = dsa.zeros((ny, nx), chunks=(ch["y"], ch["x"]), dtype="float32")
    ds = xr.Dataset({"a": (("time", "y", "x"), z), "b": (("time", "y", "x"), z),
                     "s": (("y", "x"), s)},
                    coords={"time": pd.date_range("2020-01-01", periods=nt)})
    eff = apply_lstm_to_cube(weights, ds, ["a", "b"], ["s"], time_chunk=time_chunk,
                             name="efflux")
    plan = plan_tasks({"efflux": eff})
    _row(rows, "global year", "global year: tasks (LSTM, daily)", plan["tasks"], "tasks",
         blocks=plan["blocks"], tasks_per_block=plan["tasks_per_block"],
         largest_graph=plan["largest_graph"], chunks=f"{time_chunk}x{ch['y']}x{ch['x']}",
         cube=f"{nt}x{ny}x{nx}", built_s=round(time.perf_counter() - t, 1),
         note="submitted in batches of <= 100000 tasks (whole chains)")


def _lstm_map(client, weights, ds, out, time_chunk) -> float:
    from .mapping import apply_lstm_to_cube, map_chains_to_store, scatter_model

    w = weights if client is None else scatter_model(client, weights)
    eff = apply_lstm_to_cube(w, ds, ["a", "b"], ["s"], time_chunk=time_chunk, name="efflux")
    return _timed_write(client, map_chains_to_store, {"efflux": eff}, out)


def bench_lstm_map(rows, *, quick: bool, tmp: Path) -> tuple[float, Any]:
    """The LSTM map path (mapping.apply_lstm_to_cube + map_chains_to_store: daily, state carried
    across time chunks) on one driver cube read from Zarr, as ``globalflux map`` reads it:
    synchronous, 1 and 2 workers. Returns the 1-worker rate (pixel-steps/s) and the LSTM's
    weights."""
    import xarray as xr

    from .io.store import open_dataset
    from .models.lstm import LSTMRegressor

    rng = np.random.default_rng(0)
    m = LSTMRegressor(drivers=("a", "b"), statics=("s",), epochs=1, batches_per_epoch=1,
                      batch_size=8, num_threads=1, random_state=0).fit(
        rng.normal(size=(4, 60, 2)), rng.normal(size=(4, 60)), static=rng.normal(size=(4, 1)))
    nt, ny, nx = (60, 16, 16) if quick else (365, 64, 128)
    ds = xr.Dataset({"a": (("time", "y", "x"), rng.normal(size=(nt, ny, nx)).astype("float32")),
                     "b": (("time", "y", "x"), rng.normal(size=(nt, ny, nx)).astype("float32")),
                     "s": (("y", "x"), rng.normal(size=(ny, nx)).astype("float32"))},
                    coords={"time": pd.date_range("2020-01-01", periods=nt),
                            "y": np.arange(ny) * 1.0, "x": np.arange(nx) * 1.0})
    tc = nt // 3
    # 8 spatial blocks (4 chains per worker with 2), 3 time chunks each; stored, so a task reads
    # its drivers from disk instead of carrying them in the graph
    path = tmp / "drivers.zarr"
    _store(ds.chunk({"time": tc, "y": ny // 2, "x": nx // 4}), path)
    ds = open_dataset(path, chunks={})
    cells = nt * ny * nx
    weights = m.weights()
    t_s = min(_lstm_map(None, weights, ds, tmp / "ls.zarr", tc) for _ in range(2))
    times = {}
    for n, dask_defaults in ((1, False), (2, False), ("dask", True)):
        lc, c = _cluster(1 if n == "dask" else n, dask_defaults=dask_defaults)
        try:
            _lstm_map(c, weights, ds, tmp / "lw.zarr", tc)  # warm (torch import, module build)
            times[n] = min(_lstm_map(c, weights, ds, tmp / f"l{n}.zarr", tc) for _ in range(2))
        finally:
            c.close()
            lc.close()
    cube = f"{nt}x{ny}x{nx}"
    _row(rows, "LSTM map", "pipeline synchronous", cells / t_s, "pixel-steps/s", cube=cube,
         time_chunk=tc, blocks=f"{ny // 2}x{nx // 4}", hidden=128, torch_threads=1,
         drivers="Zarr")
    _row(rows, "LSTM map", "cluster 1 worker", cells / times[1], "pixel-steps/s", cube=cube)
    _row(rows, "LSTM map", "cluster 2 workers", cells / times[2], "pixel-steps/s", cube=cube)
    _row(rows, "LSTM map", "cluster 1 worker, Dask's defaults", cells / times["dask"],
         "pixel-steps/s", cube=cube, note=DASK_DEFAULTS_NOTE)
    _row(rows, "LSTM map", "cluster 1 worker / synchronous", t_s / times[1], "ratio")
    _row(rows, "LSTM map", "cluster 2 / 1 workers", times[1] / times[2], "ratio")
    return cells / times[1], weights


def run_suite(*, quick: bool = False, client=None, tmp: str | Path | None = None,
              loso: bool | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run every benchmark; returns the table and its context."""
    rows: list[dict[str, Any]] = []
    own_tmp = tmp is None
    tmpdir = Path(tempfile.mkdtemp(prefix="globalflux-bench-")) if own_tmp else Path(tmp)
    t0 = time.perf_counter()
    try:
        # quick: a smaller bound so compiling stays short; full: the LOSO-checked size
        w, table, cols, fast = bench_forest(rows, quick=quick, loso=loso,
                                            num_leaves=31 if quick else 127)
        bench_zones(rows, w, table, quick=quick)
        package = bench_cold_start(rows, w, table, cols, quick=quick, tmp=tmpdir)
        if not quick:
            bench_zoned_forest(rows, w, table, cols, quick=quick)
        bench_lstm(rows, quick=quick)
        bench_zarr_and_pipeline(rows, fast, cols, quick=quick, tmp=tmpdir, client=client)
        rate_1w = bench_throughput(rows, fast, cols, quick=quick, tmp=tmpdir)
        bench_cold_worker(rows, package, w, cols, tmp=tmpdir)
        lstm_rate, lstm_weights = bench_lstm_map(rows, quick=quick, tmp=tmpdir)
        bench_global_year(rows, fast, cols, rate_1w, lstm_rate)
        bench_global_year_lstm(rows, lstm_weights)
        if not quick:
            bench_cluster(rows, fast, cols, tmp=tmpdir)
    finally:
        if own_tmp:
            shutil.rmtree(tmpdir, ignore_errors=True)
    ctx = context(client, mode="quick" if quick else "full",
                  seconds=round(time.perf_counter() - t0, 1),
                  pipeline_chunks="8x128x128" if quick else "23x128x128",
                  forest_threads=1)
    return pd.DataFrame(rows), ctx


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def format_table(df: pd.DataFrame, ctx: dict[str, Any]) -> str:
    from .report import markdown_table

    show = df.copy()
    show["value"] = [_fmt(v) for v in show["value"]]
    head = ", ".join(f"{k}={v}" for k, v in ctx.items() if k != "cluster")
    return f"# globalflux bench ({ctx.get('mode')})\n{head}\ncluster: {ctx.get('cluster')}\n\n" + \
        markdown_table(show)


def cli_main(args) -> int:
    """``globalflux bench``: run, print the table, optionally write CSV + JSON to ``--out``."""
    from .io.paths import atomic_write_text, check_output_file, check_writable_dir, writing

    out = Path(args.out) if args.out else None
    overwrite = bool(getattr(args, "overwrite", False))
    if out is not None:  # before the benchmark runs: a bad --out must not cost minutes
        check_writable_dir(out, what="--out")
        for name in ("bench.csv", "bench_context.json"):
            check_output_file(out / name, what="--out", overwrite=overwrite)
    client = None
    if getattr(args, "scheduler", None):
        from .cluster import connect

        client, _ = connect(args.scheduler, timeout=getattr(args, "scheduler_timeout", None))
    try:
        df, ctx = run_suite(quick=bool(args.quick), client=client)
    finally:
        if client is not None:
            client.close()
    print(format_table(df, ctx))
    if out is not None:
        with writing(out):
            out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "bench.csv", df.to_csv(index=False))
        atomic_write_text(out / "bench_context.json", json.dumps(ctx, indent=1, default=str))
        print(f"globalflux: wrote {out / 'bench.csv'} and {out / 'bench_context.json'}")
    return 0
