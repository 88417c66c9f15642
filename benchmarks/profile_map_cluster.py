"""Where the time of a map goes: synchronous vs a 1-worker LocalCluster on the same cube.

    python benchmarks/profile_map_cluster.py [--blocks 8x128x256] [--report DIR] [--dask-defaults]

Writes a predictor cube (8x512x512, 16 float32 variables, 128x128 storage tiles, SYNTHETIC
random values), fits the fast forest on the synthetic world, then maps the cube through the real
path (``apply_to_cube`` + ``map_to_store``): twice with Dask's synchronous scheduler (cProfile of
a third run printed), then three times on a LocalCluster with one worker x one thread, with a
``distributed.performance_report`` per run (``--report``) and the task stream summed per task
prefix: compute seconds inside tasks vs the wall time of the run, and the minor page faults per
run in each process. ``--dask-defaults`` starts the cluster with Dask's default malloc
environment (``MALLOC_TRIM_THRESHOLD_=65536``) and monitor intervals instead of globalflux's
(``cluster.WORKER_MALLOC``, ``cluster.CLUSTER_CONFIG``). Used for issue 15 (see
benchmarks/results/bench/README.md).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    import dask

    from globalflux import bench
    from globalflux.io.store import open_dataset
    from globalflux.mapping import apply_to_cube, map_to_store, scatter_model
    from globalflux.models.fast import FastForestRegressor

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", default="8x128x256", help="map blocks TxYxX (default 8x128x256)")
    p.add_argument("--report", default=None, help="folder for the performance reports (HTML)")
    p.add_argument("--dask-defaults", action="store_true",
                   help="Dask's malloc environment and monitor intervals (default globalflux's)")
    a = p.parse_args()
    nt, cy, cx = (int(v) for v in a.blocks.split("x"))
    chunks = {"time": nt, "y": cy, "x": cx}
    tmp = Path(tempfile.mkdtemp(prefix="globalflux-profile-"))
    try:
        _, table, cols = bench._world(True)
        fast = FastForestRegressor(n_estimators=100, num_leaves=127, n_jobs=1).fit(
            table[cols].to_numpy("float64"), table["rh"].to_numpy("float64"))
        fast._compiled_model()
        path, _ = bench._write_cube(tmp, 8, 512, 512, cols, (8, 128, 128))
        cells = 8 * 512 * 512

        def sync(out: Path) -> float:
            rh = apply_to_cube(fast, open_dataset(path, chunks=chunks), cols, as_frame=False,
                               name="rh")
            t = time.perf_counter()
            with dask.config.set(scheduler="synchronous"):
                map_to_store(None, {"rh": rh}, out, progress=False)
            return time.perf_counter() - t

        f0 = bench._minor_faults()
        ts = [sync(tmp / f"s{i}.zarr") for i in range(2)]
        print(f"synchronous: {min(ts):.2f} s ({cells / min(ts) / 1e6:.2f} M pixel-steps/s), "
              f"{(bench._minor_faults() - f0) / 2 / 1e3:.0f}k minor page faults per run")
        pr = cProfile.Profile()
        pr.enable()
        sync(tmp / "sp.zarr")
        pr.disable()
        pstats.Stats(pr).sort_stats("cumulative").print_stats(20)

        from distributed import Client, performance_report

        from globalflux.cluster import local_cluster

        kw = {"malloc": bench.DASK_MALLOC, "config": {}} if a.dask_defaults else {}
        with local_cluster(1, 1, "3GiB", **kw) as lc, Client(lc) as c:
            rh = apply_to_cube(scatter_model(c, fast), open_dataset(path, chunks=chunks), cols,
                               as_frame=False, name="rh")
            map_to_store(c, {"rh": rh}, tmp / "warm.zarr", progress=False)
            c.get_task_stream()  # start recording
            f0 = bench._faults(c)
            walls = []
            for i in range(3):
                t = time.perf_counter()
                if a.report:
                    Path(a.report).mkdir(parents=True, exist_ok=True)
                    with performance_report(filename=str(Path(a.report) / f"report{i}.html")):
                        map_to_store(c, {"rh": rh}, tmp / f"c{i}.zarr", progress=False)
                else:
                    map_to_store(c, {"rh": rh}, tmp / f"c{i}.zarr", progress=False)
                walls.append(time.perf_counter() - t)
            faults = (bench._faults(c) - f0) / 3
            agg: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
            for r in c.get_task_stream():
                key = r["key"][0] if isinstance(r["key"], tuple) else r["key"]
                a_ = agg[str(key).rsplit("-", 1)[0][:40]]
                a_[0] += 1
                a_[1] += sum(s["stop"] - s["start"] for s in r["startstops"]
                             if s["action"] == "compute")
        which = "Dask's defaults" if a.dask_defaults else "globalflux's settings"
        print(f"1 worker x 1 thread ({which}), wall per run:",
              ", ".join(f"{w:.2f} s" for w in walls), f"; {faults / 1e3:.0f}k minor page faults "
              "per run in the worker")
        inside = sum(v[1] for v in agg.values())
        print(f"inside tasks: {inside / 3:.2f} s per run ({inside / sum(walls):.0%} of wall)")
        for k, (n, sec) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:8]:
            print(f"  {k:40s} {int(n):5d} tasks  {sec:7.2f} s  {sec / n * 1e3:7.1f} ms/task")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
