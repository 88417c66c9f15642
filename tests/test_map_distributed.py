"""`globalflux map` on real `dask scheduler` / `dask worker` processes with a worker killed
mid-map, and a SIGKILL of the whole map followed by `--resume`: both give the demo's own map,
value for value (slow: separate processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from globalflux.io.store import completed_blocks, read_manifest
from test_distributed import Cluster  # real scheduler/worker processes on 127.0.0.1

REPO = Path(__file__).resolve().parents[1]
VARS = ("rh", "rh_sd", "zone", "di", "aoa", "land_mask")


@pytest.fixture(scope="module")
def fine_cube(demo_run, tmp_path_factory) -> Path:
    """The demo's predictor cube in 16 x 16 pixel chunks: 16 map blocks instead of 2."""
    src = xr.open_zarr(demo_run / "maps" / "predictors.zarr")
    out = tmp_path_factory.mktemp("cube") / "fine.zarr"
    ds = src.chunk({"time": -1, "y": 16, "x": 16})
    for v in ds.variables.values():
        v.encoding = {}
    ds.to_zarr(out)
    return out


def _cmd(model: Path, cube: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "globalflux.cli", "--quiet", "map", str(model), str(cube),
            "--out", str(out), *extra]


def _spawn(cmd, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))


def _wait_blocks(store: Path, proc: subprocess.Popen, at_least: int, timeout: float = 240) -> int:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        if read_manifest(store) is not None and len(completed_blocks(store)) >= at_least:
            return len(completed_blocks(store))
        time.sleep(0.02)
    return -1


def _same_as_demo(store: Path, demo: Path) -> None:
    a = xr.open_zarr(store)
    b = xr.open_zarr(demo / "maps" / "rh.zarr")
    for v in VARS:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)


@pytest.mark.slow
def test_map_through_a_scheduler_with_a_worker_killed_equals_the_demo_map(
        demo_run, fine_cube, tmp_path):
    cluster = Cluster(tmp_path, n_workers=2)
    try:
        out = tmp_path / "remote.zarr"
        proc = _spawn(_cmd(demo_run / "model", fine_cube, out, "--scheduler", cluster.address),
                      tmp_path / "map.log")
        try:
            killed_at = _wait_blocks(out, proc, 3)
            assert 0 < killed_at < 16, (tmp_path / "map.log").read_text()
            Cluster.kill(cluster.workers[0])
            assert proc.wait(timeout=300) == 0, (tmp_path / "map.log").read_text()
        finally:
            Cluster.kill(proc)
    finally:
        cluster.close()
    _same_as_demo(out, demo_run)


@pytest.mark.slow
def test_sigkill_of_the_map_then_resume_equals_the_demo_map(demo_run, fine_cube, tmp_path):
    out = tmp_path / "m.zarr"
    proc = _spawn(_cmd(demo_run / "model", fine_cube, out), tmp_path / "first.log")
    try:
        done = _wait_blocks(out, proc, 3)
        assert 0 < done < 16, (tmp_path / "first.log").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert len(completed_blocks(out)) < 16
    # without --resume the interrupted store is refused (exit 2), then --resume finishes it
    again = subprocess.run(_cmd(demo_run / "model", fine_cube, out), cwd=REPO,
                           capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert again.returncode == 2 and "--resume" in again.stderr
    rerun = subprocess.run(_cmd(demo_run / "model", fine_cube, out, "--resume"), cwd=REPO,
                           capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    _same_as_demo(out, demo_run)
