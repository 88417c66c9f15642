"""Cube assembly throughput and bounded memory, printed as tables.

    python benchmarks/bench_cube.py            # full sizes (a few minutes on 2 cores)
    python benchmarks/bench_cube.py --quick    # small sizes
    python benchmarks/bench_cube.py --out DIR  # also write bench_cube.csv and bench_cube.json

Table 1, assembly: MODIS-like 8-day GeoTIFF series (LST DNs uint16 + QC uint8, tiled, deflate)
are assembled into a cube exactly as the ``stac_cube`` workflow does with ``source: rasters``
(open_raster_series -> decode -> QC mask -> regrid -> annual stats -> finalize_cube ->
store.write_cube). Reported: wall time, MB read (uncompressed source bytes), MB written
(uncompressed cube bytes), MB/s and MB/s per core (threads of the Dask scheduler). The baseline
row is a plain ``zarr`` read of the written store (every chunk decoded once, no Dask) on the same
machine, and a Dask read of it (``xr.open_zarr(...).load()``).

Table 2, memory: a lazily generated (time, y, x) float32 cube of 92 MODIS 8-day steps and
growing size is chunked by :func:`globalflux.cube.choose_chunks` (whole time axis, ~32 MB chunks)
and written with ``store.write_cube``, each size in a fresh subprocess; its peak RSS (sampled every 20 ms with psutil) is reported. With
``--cap-mb`` the subprocess also runs under RLIMIT_DATA so a write that held the cube in memory
would fail. Peak RSS staying flat while the cube grows past the cap shows the write is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _tif_series(root: Path, n: int, size: int) -> tuple[list[Path], list[Path]]:
    import pandas as pd
    import rasterio

    from globalflux.grid import BBox, GridSpec, modis_8day_periods

    grid = GridSpec("EPSG:4326", 0.005, BBox(10.0, 50.0 - size * 0.005, 10.0 + size * 0.005, 50.0))
    rng = np.random.default_rng(0)
    dates = modis_8day_periods("2019-01-01", "2020-12-31")[:n]
    lst, qcs = [], []
    prof = dict(driver="GTiff", height=size, width=size, count=1, crs="EPSG:4326", transform=grid.transform,
                tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    for d in dates:
        dn = rng.integers(13000, 16000, size=(size, size), dtype=np.uint16)
        dn[rng.random((size, size)) < 0.05] = 0
        qc = (rng.random((size, size)) < 0.1).astype(np.uint8)
        tag = f"A{d.year}{pd.Timestamp(d).day_of_year:03d}"
        p = root / f"MOD11A2.{tag}.LST.tif"
        q = root / f"MOD11A2.{tag}.QC.tif"
        with rasterio.open(p, "w", dtype="uint16", nodata=0, **prof) as dst:
            dst.write(dn, 1)
        with rasterio.open(q, "w", dtype="uint8", **prof) as dst:
            dst.write(qc, 1)
        lst.append(p)
        qcs.append(q)
    return lst, qcs, grid


def assembly(n: int, size: int, threads: int, work: Path) -> list[dict]:
    import dask
    import xarray as xr
    import zarr

    from globalflux.cube import annual_stats, finalize_cube, regrid
    from globalflux.io.products import PRODUCTS
    from globalflux.io.rasters import mask_qc, open_raster_series
    from globalflux.io.store import write_cube

    lst_f, qc_f, grid = _tif_series(work, n, size)
    p = PRODUCTS["lst_day"]
    read_mb = n * size * size * (2 + 1) / 2**20
    rows = []
    with dask.config.set(scheduler="threads", num_workers=threads):
        t0 = time.perf_counter()
        lst = open_raster_series(lst_f, name="lst", scale=p.scale, offset=p.offset, valid_range=p.valid_range,
                                 chunks={"band": 1, "y": 512, "x": 512})
        qc = open_raster_series(qc_f, name="qc", decode_values=False, categorical=True,
                                chunks={"band": 1, "y": 512, "x": 512})
        lst = regrid(mask_qc(lst, qc, p.qc), grid)
        ds = xr.Dataset({"lst": lst}).merge(annual_stats(lst.rename("lst")))
        ds = finalize_cube(ds, grid)
        store = work / "cube.zarr"
        write_cube(ds, store)
        dt = time.perf_counter() - t0
        written_mb = sum(v.size * v.dtype.itemsize for v in ds.data_vars.values()) / 2**20
        rows.append({"step": "assemble GeoTIFF series -> cube (decode, QC, regrid, annual stats, write)",
                     "seconds": dt, "mb_read": read_mb, "mb_written": written_mb,
                     "mb_s": (read_mb + written_mb) / dt, "mb_s_per_core": (read_mb + written_mb) / dt / threads,
                     "chunks": ds.attrs["chunking"], "threads": threads})
        # baseline 1: plain zarr read of the same store, chunk by chunk, no Dask
        arr = zarr.open_array(store=str(store), path="lst", mode="r")
        t0 = time.perf_counter()
        nbytes = 0
        for idx in np.ndindex(*arr.cdata_shape):
            sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, arr.chunks, arr.shape, strict=True))
            nbytes += arr[sl].nbytes
        dt = time.perf_counter() - t0
        rows.append({"step": "baseline: plain zarr read of the cube (lst, 1 thread)", "seconds": dt,
                     "mb_read": nbytes / 2**20, "mb_written": 0.0, "mb_s": nbytes / 2**20 / dt,
                     "mb_s_per_core": nbytes / 2**20 / dt, "chunks": str(arr.chunks), "threads": 1})
        t0 = time.perf_counter()
        loaded = xr.open_zarr(store).load()
        dt = time.perf_counter() - t0
        mb = sum(v.nbytes for v in loaded.data_vars.values()) / 2**20
        rows.append({"step": "baseline: Dask read of the whole cube (xr.open_zarr().load())", "seconds": dt,
                     "mb_read": mb, "mb_written": 0.0, "mb_s": mb / dt, "mb_s_per_core": mb / dt / threads,
                     "chunks": ds.attrs["chunking"], "threads": threads})
    return rows


# ----------------------------------------------------------------------------- memory bound


def _gen_block(block, block_info=None):
    """Deterministic values for one block (module-level: picklable)."""
    loc = block_info[None]["array-location"]
    t = np.arange(*loc[0], dtype="float32")[:, None, None]
    y = np.arange(*loc[1], dtype="float32")[None, :, None]
    x = np.arange(*loc[2], dtype="float32")[None, None, :]
    return (np.sin(t / 7.0) * 10 + y * 1e-3 - x * 1e-3).astype("float32")


def memory_child(nt: int, ny: int, nx: int, threads: int, out: str) -> None:
    import dask
    import dask.array as dsa
    import xarray as xr

    from globalflux.cube import finalize_cube
    from globalflux.grid import BBox, GridSpec, modis_8day_periods
    from globalflux.io.store import write_cube

    grid = GridSpec("EPSG:4326", 0.01, BBox(0.0, 0.0, nx * 0.01, ny * 0.01))
    base = dsa.zeros((nt, ny, nx), dtype="float32", chunks=(nt, 256, 256))
    data = base.map_blocks(_gen_block, dtype="float32")
    time_ = modis_8day_periods("2019-01-01", "2021-12-31")[:nt]
    da = xr.DataArray(data, dims=("time", "y", "x"), coords={"time": time_, "y": grid.y, "x": grid.x}, name="v")
    ds = finalize_cube(xr.Dataset({"v": da * np.float32(1.0)}), grid)
    import threading

    import psutil

    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample():  # ru_maxrss would include the parent's RSS inherited over fork/exec
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=threads):
        write_cube(ds, Path(out) / "mem.zarr")
    dt = time.perf_counter() - t0
    done.set()
    sampler.join()
    rss = peak[0] / 2**20
    print(json.dumps({"seconds": dt, "peak_rss_mb": rss, "chunks": ds.attrs["chunking"],
                      "out_mb": float(ds.v.nbytes / 2**20)}))


def memory(sizes_mb: list[int], threads: int, cap_mb: int | None) -> list[dict]:
    rows = []
    nt = 92  # two years of MODIS 8-day periods
    for mb in sizes_mb:
        side = int(np.sqrt(mb * 2**20 / 4 / nt))
        side = max(256, (side // 256) * 256)
        in_mb = nt * side * side * 4 / 2**20
        with tempfile.TemporaryDirectory() as tmp:
            pre = None
            if cap_mb:
                def pre(cap=cap_mb):  # noqa: E306
                    lim = cap * 2**20
                    resource.setrlimit(resource.RLIMIT_DATA, (lim, lim))
            cmd = [sys.executable, __file__, "--child", str(nt), str(side), str(side), str(threads), tmp]
            # glibc reserves a 64 MB malloc arena per thread: that address space counts against
            # RLIMIT_DATA without being used, so the arenas are limited to make the cap measure heap
            env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
            proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pre, env=env)
            if proc.returncode != 0:
                rows.append({"cube_mb": round(in_mb), "status": "FAILED",
                             "detail": proc.stderr.strip().splitlines()[-1][:120] if proc.stderr else ""})
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"cube_mb": round(res["out_mb"]),
                         "shape": f"({nt}, {side}, {side})", "seconds": round(res["seconds"], 1),
                         "peak_rss_mb": round(res["peak_rss_mb"]), "cap_mb": cap_mb or "",
                         "chunks": res["chunks"], "status": "ok"})
    return rows


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = [[(f"{r[c]:.2f}" if isinstance(r.get(c), float) else str(r.get(c, ""))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(f[i]) for f in fmt)) for i, c in enumerate(cols)]
    line = "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(v.ljust(w) for v, w in zip(f, widths, strict=True)) + " |" for f in fmt]
    return "\n".join([line, sep, *body])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--cap-mb", type=int, default=None, help="RLIMIT_DATA for the memory subprocesses")
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", choices=["assembly", "memory"], default=None, help="run one table")
    ap.add_argument("--child", nargs=5, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        nt, ny, nx, th, out = args.child
        memory_child(int(nt), int(ny), int(nx), int(th), out)
        return 0
    import dask
    import zarr

    import globalflux

    context = {"globalflux": globalflux.__version__, "python": platform.python_version(),
               "cpu_count": os.cpu_count(), "threads": args.threads, "dask": dask.__version__,
               "zarr": zarr.__version__, "quick": args.quick, "machine": platform.machine()}
    print("context:", json.dumps(context))
    n, size = (8, 512) if args.quick else (46, 1024)
    rows: list[dict] = []
    mem: list[dict] = []
    if args.only in (None, "memory"):  # first: a fresh parent keeps the children's numbers clean
        sizes = [64, 128, 256] if args.quick else [256, 1024, 2048, 4096]
        mem = memory(sizes, args.threads, args.cap_mb)
        print("\nMemory: lazily generated 8-day cube (92 steps) -> finalize_cube -> write_cube "
              "(fresh process per size)\n")
        print(_table(mem))
    if args.only in (None, "assembly"):
        with tempfile.TemporaryDirectory() as tmp:
            rows = assembly(n, size, args.threads, Path(tmp))
        print(f"\nAssembly: {n} dates of {size}x{size} LST (uint16) + QC (uint8) GeoTIFFs\n")
        print(_table(rows))
    if args.out:
        import csv

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "bench_cube.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows + mem for k in r)))
            w.writeheader()
            w.writerows(rows + mem)
        (out / "bench_cube.json").write_text(json.dumps(context, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    raise SystemExit(main())
