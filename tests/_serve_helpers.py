"""Shared by tests/test_serve.py and tests/test_serve_browser.py: ``globalflux serve`` (or ``run
--serve`` of the demo recipe on a 48 x 48 world, ~10 s) in a child process on a free 127.0.0.1
port, and a land pixel of a demo map store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "demo.yaml"

# the demo recipe on a tiny world: one Dask worker, few trees, no figures (~10 s on 2 cores)
TINY = [
    "synthetic.ny=48", "synthetic.nx=48", "synthetic.n_sites=16", "synthetic.min_sites_per_zone=4",
    "forest.n_estimators=5", "forest.n_jobs=1", "mapping.n_workers=1", "cube.chunk_y=24",
    "cube.chunk_x=48", "report.figures=false",
]


def tiny_demo_args(out: Path) -> list[str]:
    args = ["run", str(DEMO), "--out", str(out)]
    for o in TINY:
        args += ["--set", o]
    return args


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


@contextmanager
def serving(args: list[str], timeout: float = 180.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m globalflux.cli ARGS`` (a serve, or a run --serve) in a child process; yields
    the URL it prints once it listens (and the process), and stops it afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "globalflux.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                            cwd=str(REPO))
    lines: list[str] = []
    url = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"serving .* at (http://127\.0\.0\.1:\d+/)", line)
            if m:
                url = m.group(1)
                break
        assert url, "globalflux serve did not start:\n" + "".join(lines)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


def land_pixel(store: Path) -> tuple[int, int, float, float]:
    """Row, column, lon and lat of a land pixel near the centre of the map with RH everywhere."""
    ds = xr.open_zarr(store)
    land = ds["land_mask"].values.astype(bool) & np.isfinite(ds["rh"].values).all(axis=0)
    rows, cols = np.nonzero(land)
    cy, cx = (land.shape[0] - 1) / 2, (land.shape[1] - 1) / 2
    k = int(np.argmin((rows - cy) ** 2 + (cols - cx) ** 2))
    r, c = int(rows[k]), int(cols[k])
    return r, c, float(ds["x"].values[c]), float(ds["y"].values[r])
