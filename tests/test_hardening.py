"""Issue 12, beyond single bad inputs: what listens on the network, and what compiled code is
loaded from the cache."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

import _mapjob
import numpy as np
import psutil
import pytest

LOOPBACK = {"127.0.0.1", "::1"}


def _listeners(pids: set[int]) -> list[tuple[int, str, int]]:
    out = []
    for c in psutil.net_connections(kind="inet"):
        if c.pid in pids and c.status == psutil.CONN_LISTEN:
            out.append((c.pid, c.laddr.ip, c.laddr.port))
    return out


def test_local_cluster_map_listens_only_on_loopback(tmp_path):
    """A short LocalCluster map: every listening socket of this process and of the workers and
    nanny processes it started (scheduler, workers, nannies, dashboard) is on 127.0.0.1."""
    from globalflux.cluster import connect, describe, probe
    from globalflux.config import MappingConfig

    client, cluster = connect(None, MappingConfig(n_workers=1, threads_per_worker=1, memory_limit="1GiB"))
    try:
        _mapjob.run(tmp_path / "m.zarr", client=client)
        # the bounded handshake used for --scheduler recognises a real scheduler
        assert probe(cluster.scheduler_address, 10.0)["type"] == "Scheduler"
        remote, none = connect(cluster.scheduler_address, timeout=10.0)
        assert none is None and describe(remote)["workers"] == 1
        remote.close()
        me = psutil.Process()
        pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
        found = _listeners(pids)
        dash_port = int(client.dashboard_link.split(":")[2].split("/")[0])
    finally:
        client.close()
        cluster.close()
    ports = {port for _, _, port in found}
    assert dash_port in ports, (dash_port, found)  # the dashboard was among them
    assert len(found) >= 3, found  # scheduler + worker + nanny (+ dashboard)
    wide = [f for f in found if f[1] not in LOOPBACK]
    assert not wide, f"listeners not on loopback: {wide}"


def test_dashboard_host_is_a_recipe_key():
    from globalflux.cluster import dashboard_address
    from globalflux.config import MappingConfig

    assert dashboard_address(None) == "127.0.0.1:0"
    assert dashboard_address(MappingConfig()) == "127.0.0.1:0"
    assert dashboard_address(MappingConfig(dashboard_host="::1")) == "[::1]:0"


# ---------------------------------------------------------------------------- compiled cache


@pytest.fixture
def forest():
    from globalflux.models.fast import FastForestRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = X[:, 0] + np.sin(X[:, 1]) + rng.normal(scale=0.1, size=300)
    return FastForestRegressor(n_estimators=5, num_leaves=7, compile_min_rows=0).fit(X, y), X


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("GLOBALFLUX_LLEAVES_CACHE", str(d))
    return d


def _key(est) -> str:
    return hashlib.sha256(est.model_str_.encode()).hexdigest()


def test_cache_folder_is_private_and_entries_are_recorded(forest, cache):
    est, X = forest
    est.predict(X)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    key = _key(est)
    meta = json.loads((cache / f"{key}.json").read_text())
    so = (cache / f"{key}.so").read_bytes()
    assert meta["key"] == key and meta["so_sha256"] == hashlib.sha256(so).hexdigest()
    for p in cache.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p


@pytest.mark.parametrize("how", ["no-record", "forged-record-wrong-bytes", "writable-by-others", "symlink"])
def test_planted_cache_file_is_not_loaded(forest, cache, tmp_path, how):
    """A file planted under the entry's name is never loaded: the entry is rebuilt."""
    from globalflux.models import fast

    est, X = forest
    key = _key(est)
    cache.mkdir(mode=0o700)
    planted = b"\x7fELF planted code that must never be loaded" * 50
    target = cache / f"{key}.so"
    (cache / f"{key}.txt").write_text(est.model_str_)
    if how == "symlink":
        evil = tmp_path / "evil.so"
        evil.write_bytes(planted)
        target.symlink_to(evil)
    else:
        target.write_bytes(planted)
    if how != "no-record":
        sha_txt = hashlib.sha256(est.model_str_.encode()).hexdigest()
        so_sha = hashlib.sha256(b"something else").hexdigest() if how.startswith("forged") else \
            hashlib.sha256(planted).hexdigest()
        (cache / f"{key}.json").write_text(json.dumps({"key": key, "txt_sha256": sha_txt,
                                                       "so_sha256": so_sha}))
    if how == "writable-by-others":
        os.chmod(target, 0o666)
    assert fast.verify_cache_entry(cache, key) is not None
    pred = est.predict(X)  # would crash or mispredict if the planted bytes were loaded
    ref = est.booster_.predict(X, num_threads=1)
    assert np.all(np.abs(pred - ref) <= fast.COMPILED_RTOL * np.maximum(1.0, np.abs(ref)))
    assert not target.is_symlink() and target.read_bytes() != planted
    assert fast.verify_cache_entry(cache, key) is None  # rebuilt and recorded


def test_cache_entry_tampered_after_write_is_rebuilt(forest, cache):
    from globalflux.models import fast

    est, X = forest
    est.predict(X)
    key = _key(est)
    so = cache / f"{key}.so"
    data = bytearray(so.read_bytes())
    data[len(data) // 2] ^= 0xFF
    so.write_bytes(bytes(data))
    assert "does not match its recorded checksum" in fast.verify_cache_entry(cache, key)
    clone = type(est)(**est.get_params()).fit(X, X[:, 0] + np.sin(X[:, 1]))
    clone.model_str_ = est.model_str_
    clone._compiled = None
    clone.predict(X)
    assert fast.verify_cache_entry(cache, key) is None


def test_world_writable_cache_folder_is_not_used(tmp_path, monkeypatch, caplog):
    from globalflux.models import fast

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # like /tmp without the sticky bit: anyone could swap entries
    monkeypatch.setenv("GLOBALFLUX_LLEAVES_CACHE", str(shared / "cache"))
    import logging

    logger = logging.getLogger("globalflux")  # the CLI may have turned propagation off
    logger.addHandler(caplog.handler)
    try:
        d = fast.compiled_cache_dir()
    finally:
        logger.removeHandler(caplog.handler)
    assert d != shared / "cache" and stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert "world-writable" in caplog.text


def test_default_cache_is_per_user(monkeypatch):
    import platformdirs

    from globalflux.models import fast

    monkeypatch.delenv("GLOBALFLUX_LLEAVES_CACHE", raising=False)
    d = fast.compiled_cache_dir()
    assert d == Path(platformdirs.user_cache_dir("globalflux", appauthor=False)) / "lleaves"
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert "globalflux-lleaves" != d.name and str(d) != "/tmp/globalflux-lleaves"


def test_scheduler_that_is_a_web_server_fails_fast():
    """A loopback HTTP server as --scheduler: SchedulerError naming it within the timeout."""
    import http.server
    import socketserver
    import threading

    from globalflux.cluster import connect
    from globalflux.errors import SchedulerError

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Quiet)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    addr = f"tcp://127.0.0.1:{srv.server_address[1]}"
    t = time.perf_counter()
    try:
        with pytest.raises(SchedulerError, match=f"{addr}: cannot reach the Dask scheduler within 1 s"):
            connect(addr, timeout=1.0)
    finally:
        srv.shutdown()
        srv.server_close()
    assert time.perf_counter() - t < 5
