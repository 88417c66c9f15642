"""Mapping throughput: Zarr read/write, model-only vs end-to-end chunk pipeline, zone labelling,
LSTM inference, peak worker memory (area A vs 10 A) and 1 vs 2 workers.

    python benchmarks/bench_mapping.py [--quick] [--out DIR]

Prints a table with its context (chunk shape, workers, threads, versions). The same suite runs
as ``globalflux bench``; this script only adds the forest rows' exclusion for speed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from globalflux import bench


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-mapping-"))
    num_leaves = 31 if a.quick else 127
    w, table, cols, fast = bench.bench_forest([], quick=a.quick, loso=False, num_leaves=num_leaves)
    bench.bench_zones(rows, w, table, quick=a.quick)
    bench.bench_lstm(rows, quick=a.quick)
    bench.bench_zarr_and_pipeline(rows, fast, cols, quick=a.quick, tmp=tmp)
    if not a.quick:
        bench.bench_cluster(rows, fast, cols, tmp=tmp)
    import pandas as pd

    df = pd.DataFrame(rows)
    ctx = bench.context(None, mode="quick" if a.quick else "full", forest_num_leaves=num_leaves)
    print(bench.format_table(df, ctx))
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        df.to_csv(Path(a.out) / "bench_mapping.csv", index=False)


if __name__ == "__main__":
    main()
