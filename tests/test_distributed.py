"""Real ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1: map through the address,
kill a worker in the middle, and get the same store as a LocalCluster run; bad addresses fail
fast with exit code 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import _mapjob
import pytest

from globalflux.cli import main
from globalflux.errors import SchedulerError
from globalflux.io.store import completed_blocks, read_manifest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]]


class Cluster:
    """A scheduler and workers as separate process groups; always torn down."""

    def __init__(self, tmp: Path, n_workers: int = 2):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.sched = self._spawn(_dask_cmd("scheduler", "--host", "127.0.0.1", "--port",
                                           str(port), "--no-dashboard", "--no-show"), "sched")
        self._wait_for_scheduler()
        for i in range(n_workers):
            w = self._spawn(_dask_cmd("worker", self.address, "--nthreads", "1", "--nworkers",
                                      "1", "--no-dashboard", "--no-nanny", "--memory-limit",
                                      "1GiB", "--name", f"w{i}", "--local-directory",
                                      str(tmp / f"w{i}")), f"w{i}")
            self.workers.append(w)
        self._wait_for_workers(n_workers)

    def _spawn(self, cmd, name):
        log = open(self.tmp / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.procs.append(p)
        return p

    def _wait_for_scheduler(self, timeout=60):
        host, port = self.address[6:].split(":")
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                with socket.create_connection((host, int(port)), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("scheduler did not start")

    def _wait_for_workers(self, n, timeout=90):
        from distributed import Client

        with Client(self.address, timeout=30) as c:
            c.wait_for_workers(n, timeout=timeout)

    @staticmethod
    def kill(p: subprocess.Popen) -> None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass

    def close(self) -> None:
        for p in reversed(self.procs):
            self.kill(p)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def _data(path: Path) -> dict:
    out = {}
    for f in sorted(path.rglob("*")):
        if f.is_file():
            rel = f.relative_to(path).as_posix()
            if f.name in ("zarr.json", "manifest.json"):
                obj = json.loads(f.read_text())
                _strip(obj)
                out[rel] = obj
            else:
                out[rel] = f.read_bytes()
    return out


def _strip(obj):
    if isinstance(obj, dict):
        obj.pop("history", None)
        obj.pop("created", None)
        for v in obj.values():
            _strip(v)


@pytest.mark.slow
def test_map_through_scheduler_with_a_worker_killed_equals_localcluster(tmp_path, cluster):
    from distributed import Client, LocalCluster

    # the LocalCluster run (the default deployment)
    local = tmp_path / "local.zarr"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit="1GiB") as lc, Client(lc) as c:
        _mapjob.run(local, client=c)

    # the same map through the scheduler address; kill worker w0 once blocks are being written
    remote = tmp_path / "remote.zarr"
    client = Client(cluster.address, timeout=20)
    errors: list[BaseException] = []

    def go():
        try:
            _mapjob.run(remote, client=client)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    th = threading.Thread(target=go, daemon=True)
    try:
        th.start()
        t0 = time.monotonic()
        killed_at = None
        while time.monotonic() - t0 < 120 and th.is_alive():
            if read_manifest(remote) is not None and len(completed_blocks(remote)) >= 8:
                killed_at = len(completed_blocks(remote))
                Cluster.kill(cluster.workers[0])
                break
            time.sleep(0.01)
        th.join(timeout=180)
        assert not th.is_alive(), "the map did not finish after a worker was killed"
    finally:
        client.close()
    assert not errors, errors
    total = 64
    assert killed_at is not None and killed_at < total, "the worker was not killed mid-run"
    assert cluster.workers[0].poll() is not None
    assert _data(remote) == _data(local)


def test_unreachable_scheduler_exits_2_fast(tmp_path, capsys):
    port = _free_port()  # nothing listens there
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\nworkflow: synthetic_zoned_rh\nmapping:\n  scheduler_timeout: 2\n")
    t0 = time.monotonic()
    code = main(["run", str(recipe), "--out", str(tmp_path / "out"), "--scheduler",
                 f"tcp://127.0.0.1:{port}"])
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2
    assert f"tcp://127.0.0.1:{port}: cannot reach the Dask scheduler within 2 s" in err
    assert "dask scheduler" in err
    assert took < 60  # bounded by the timeout, not a hang
    assert not (tmp_path / "out").exists()  # nothing written


def test_malformed_scheduler_address_exits_2(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\nworkflow: synthetic_zoned_rh\n")
    code = main(["run", str(recipe), "--out", str(tmp_path / "o"), "--scheduler", "localhost"])
    assert code == 2
    assert "--scheduler: 'localhost' is not a scheduler address" in capsys.readouterr().err


def test_connect_raises_scheduler_error_directly():
    from globalflux.cluster import connect

    with pytest.raises(SchedulerError, match="cannot reach the Dask scheduler within 1 s"):
        connect(f"tcp://127.0.0.1:{_free_port()}", timeout=1)


TINY_DEMO = ["--set", "synthetic.ny=48", "--set", "synthetic.nx=48", "--set", "synthetic.n_sites=16",
             "--set", "forest.n_estimators=8", "--set", "forest.n_jobs=1", "--set", "cube.chunk_y=16",
             "--set", "cube.chunk_x=16", "--set", "report.figures=false"]


def _demo(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "globalflux.cli", "--quiet", "run",
           str(REPO / "recipes" / "demo.yaml"), "--out", str(out), *TINY_DEMO, *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


@pytest.mark.slow
def test_demo_through_scheduler_equals_localcluster(tmp_path, cluster):
    """`globalflux run recipes/demo.yaml --scheduler tcp://...` (a worker killed once the run is
    under way) writes the same RH map as the default LocalCluster run."""
    import xarray as xr

    from globalflux.io.store import open_dataset

    local = _demo(tmp_path / "local")
    assert local.returncode == 0, local.stderr[-2000:]
    proc = subprocess.Popen(
        [sys.executable, "-m", "globalflux.cli", "--quiet", "run",
         str(REPO / "recipes" / "demo.yaml"), "--out", str(tmp_path / "remote"), *TINY_DEMO,
         "--scheduler", cluster.address],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)), start_new_session=True)
    try:
        pred = tmp_path / "remote" / "maps" / "predictors.zarr"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 300 and proc.poll() is None:
            if (pred / "zarr.json").is_file():  # the run is under way: lose a worker
                Cluster.kill(cluster.workers[0])
                break
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            Cluster.kill(proc)
    assert proc.returncode == 0, out[-2000:]
    assert cluster.workers[0].poll() is not None
    a = open_dataset(tmp_path / "remote" / "maps" / "rh.zarr")
    b = open_dataset(tmp_path / "local" / "maps" / "rh.zarr")
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    assert a.attrs["globalflux_complete"] == b.attrs["globalflux_complete"] == "true"
    assert a.attrs["recipe"] == b.attrs["recipe"]
