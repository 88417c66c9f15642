"""Forest inference: scikit-learn's default forest (100 trees) vs the fast forest (LightGBM RF,
bounded leaves, compiled by lleaves), per core, with the LOSO R2 of both on the synthetic world.

    python benchmarks/bench_forest.py [--quick] [--leaves 31,63,127,255]

For each bound on leaves: pixels/s per core of sklearn, LightGBM's own predict and lleaves, the
speed-up, and (unless --quick) the pooled leave-one-site-out R2 next to sklearn's. Targets:
speed-up >= 5 at a LOSO R2 within 0.01 of sklearn's.
"""

from __future__ import annotations

import argparse

import pandas as pd

from globalflux import bench


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--leaves", default="127")
    a = p.parse_args()
    rows: list[dict] = []
    for i, n in enumerate(int(v) for v in a.leaves.split(",")):
        part: list[dict] = []
        bench.bench_forest(part, quick=a.quick, num_leaves=n, loso=not a.quick)
        if i:  # sklearn rows once
            part = [r for r in part if "sklearn RF default" not in r["what"]]
        rows.extend(part)
    ctx = bench.context(None, mode="quick" if a.quick else "full", threads=1)
    print(bench.format_table(pd.DataFrame(rows), ctx))


if __name__ == "__main__":
    main()
