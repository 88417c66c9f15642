"""Cluster throughput (issue 15): one function decides map blocks, one fused task per block,
compiled forests travel in model packages and are used only on a matching CPU."""

from __future__ import annotations

import logging
import os
import pickle

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from sklearn.ensemble import RandomForestRegressor

from globalflux.mapping import (
    MAX_BLOCK_CELLS,
    apply_to_cube,
    map_to_store,
    mapping_chunks,
    plan_tasks,
    predict_block,
)


def test_mapping_chunks_whole_time_memory_bound_and_storage_aligned(caplog):
    caplog.set_level(logging.INFO, logger="globalflux")
    logging.getLogger("globalflux").addHandler(caplog.handler)
    try:
        c = mapping_chunks({"time": 46, "y": 43_200, "x": 86_400}, 17, worker_memory="2GiB",
                           storage_chunks={"y": 128, "x": 128})
    finally:
        logging.getLogger("globalflux").removeHandler(caplog.handler)
    assert c["time"] == 46 and c["y"] % 128 == 0 and c["x"] % 128 == 0
    cells = c["time"] * c["y"] * c["x"]
    assert cells <= MAX_BLOCK_CELLS
    assert cells * (2 * 17 * 4 + 8) <= 2 * 2**30 / 4  # a quarter of the worker's memory
    assert "map chunks" in caplog.text and "17 input variable(s)" in caplog.text
    # less memory -> smaller blocks; more workers on a small cube -> enough blocks for all
    small = mapping_chunks({"time": 46, "y": 43_200, "x": 86_400}, 17, worker_memory="256MiB")
    assert small["y"] * small["x"] < c["y"] * c["x"]
    few = mapping_chunks({"time": 8, "y": 256, "x": 256}, 16, workers=2, threads=1)
    assert -(-256 // few["y"]) * -(-256 // few["x"]) >= 8
    # a storage chunk bigger than the block is split evenly, not read by several tasks unevenly
    big = mapping_chunks({"time": 46, "y": 4096, "x": 4096}, 17, worker_memory="512MiB",
                         storage_chunks={"y": 2048, "x": 2048})
    assert 2048 % big["y"] == 0 and 2048 % big["x"] == 0


def _cube(nt=4, ny=64, nx=48, chunks=16):
    rng = np.random.default_rng(0)
    ds = xr.Dataset({v: (("time", "y", "x"), rng.normal(size=(nt, ny, nx)).astype("float32"))
                     for v in ("a", "b", "c")},
                    coords={"time": np.arange(nt), "y": np.arange(ny) * 1.0,
                            "x": np.arange(nx) * 1.0})
    return ds, ds.chunk({"time": -1, "y": chunks, "x": chunks})


@pytest.fixture(scope="module")
def forest():
    rng = np.random.default_rng(1)
    return RandomForestRegressor(n_estimators=5, random_state=0).fit(rng.normal(size=(50, 3)),
                                                                     rng.normal(size=50))


def test_write_graph_is_one_fused_task_per_block(forest, tmp_path):
    from globalflux.io.store import open_dataset, write_dataset

    _, lazy = _cube()
    write_dataset(lazy, tmp_path / "cube.zarr")
    cube = open_dataset(tmp_path / "cube.zarr", chunks={})  # as a map reads a predictor cube
    rh = apply_to_cube(forest, cube, ["a", "b", "c"], as_frame=False, name="rh")
    plan = plan_tasks({"rh": rh})
    assert plan["blocks"] == 4 * 3
    assert plan["tasks_per_block"] == 1, plan  # read 3 inputs + predict + write: fused
    assert plan["tasks"] == plan["blocks"] + plan["shared_tasks"]


def test_fused_map_equals_eager_on_threads_and_on_a_cluster(tmp_path, forest):
    from distributed import Client, LocalCluster

    from globalflux.io.store import open_dataset

    eager, lazy = _cube()
    want = apply_to_cube(forest, eager, ["a", "b", "c"], as_frame=False, name="rh").values
    rh = apply_to_cube(forest, lazy, ["a", "b", "c"], as_frame=False, name="rh")
    p1 = map_to_store(None, {"rh": rh}, tmp_path / "t.zarr", progress=False)
    np.testing.assert_array_equal(open_dataset(p1)["rh"].values, want)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,  # in-process comms
                      dashboard_address=None) as lc, Client(lc, set_as_default=False) as c:
        p2 = map_to_store(c, {"rh": rh}, tmp_path / "c.zarr", progress=False,
                          max_graph_tasks=5)  # several batches
    np.testing.assert_array_equal(open_dataset(p2)["rh"].values, want)


def test_predict_block_in_row_slices_equals_one_call(monkeypatch, forest):
    import globalflux.mapping as mapping

    rng = np.random.default_rng(3)
    feats = [rng.normal(size=(3, 20, 20)) for _ in range(3)]
    feats[1][0, :5, :5] = np.nan
    mask = rng.random((1, 20, 20)) > 0.3
    kw = dict(estimator=forest, method="predict", dtype="float32", fill=np.nan)
    one = predict_block(*feats, mask, **kw)
    monkeypatch.setattr(mapping, "PREDICT_ROWS", 37)
    np.testing.assert_array_equal(predict_block(*feats, mask, **kw), one)


def test_global_year_plan_is_under_100k_tasks(forest):
    sizes = {"time": 46, "y": 43_200, "x": 86_400}
    ch = mapping_chunks(sizes, 4, worker_memory="2GiB")
    z = dsa.zeros((46, 43_200, 86_400), chunks=(46, ch["y"], ch["x"]), dtype="float32")
    ds = xr.Dataset({v: (("time", "y", "x"), z) for v in ("a", "b", "c")})
    rh = apply_to_cube(forest, ds, ["a", "b", "c"], as_frame=False, name="rh")
    plan = plan_tasks({"rh": rh})
    assert plan["tasks"] <= 100_000, plan
    assert plan["largest_graph"] <= 100_000


# ----------------------------------------------------------------- compiled forests travel


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("GLOBALFLUX_LLEAVES_CACHE", str(d))
    return d


@pytest.fixture(scope="module")
def small_fast():
    from globalflux.models.fast import FastForestRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = X[:, 0] + rng.normal(scale=0.1, size=300)
    return FastForestRegressor(n_estimators=5, num_leaves=7, compile_min_rows=0).fit(X, y), X


def _no_compiling(monkeypatch):
    import lleaves.compiler

    def refuse(*a, **k):
        raise AssertionError("compiled although a verified object for this CPU was given")

    monkeypatch.setattr(lleaves.compiler, "compile_to_module", refuse)


def test_compiled_object_travels_and_is_not_rebuilt_on_the_same_cpu(small_fast, fresh_cache,
                                                                     monkeypatch):
    model, X = small_fast
    target, obj = model.compiled_object()
    assert target["cpu"] and target["triple"] and obj[:4] == b"\x7fELF"
    want = model.predict(X)
    monkeypatch.setenv("GLOBALFLUX_LLEAVES_CACHE", str(fresh_cache.parent / "empty"))
    _no_compiling(monkeypatch)
    worker_copy = pickle.loads(pickle.dumps(model))  # as a Dask worker receives it
    np.testing.assert_array_equal(worker_copy.predict(X), want)


def test_compiled_object_of_another_cpu_is_rebuilt(small_fast, fresh_cache, monkeypatch):
    import lleaves.compiler

    model, X = small_fast
    model.compiled_object()
    other = pickle.loads(pickle.dumps(model))
    other.compiled_target_ = {**other.compiled_target_, "cpu": "some-other-cpu"}
    other.compiled_object_ = b"\x7fELF not for this machine"
    monkeypatch.setenv("GLOBALFLUX_LLEAVES_CACHE", str(fresh_cache.parent / "other"))
    calls = []
    real = lleaves.compiler.compile_to_module
    monkeypatch.setattr(lleaves.compiler, "compile_to_module",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    np.testing.assert_array_equal(other.predict(X), model.predict(X))
    assert calls  # compiled here, the foreign object never loaded


def test_package_carries_verified_compiled_forests(tmp_path, fresh_cache, monkeypatch):
    import json

    import pandas as pd

    from globalflux.errors import InputFileError
    from globalflux.io.model_package import load_model, read_package, write_package
    from globalflux.models.forest import UnifiedForestRegressor

    rng = np.random.default_rng(2)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = X["a"].to_numpy() + rng.normal(scale=0.1, size=200)
    m = UnifiedForestRegressor(n_estimators=5, eliminate=False, engine="lleaves",
                               random_state=0).fit(X, y, groups=np.repeat(np.arange(20), 10))
    folder = write_package(tmp_path / "pkg", m)
    man = json.loads((folder / "model.json").read_text())
    assert "forest.so" in man["payloads"] and len(man["payloads"]["forest.so"]["sha256"]) == 64
    assert man["model"]["forest"]["compiled"]["target"]["cpu"]
    monkeypatch.setenv("GLOBALFLUX_LLEAVES_CACHE", str(tmp_path / "worker-cache"))
    _no_compiling(monkeypatch)
    loaded = load_model(folder)
    big = pd.DataFrame(rng.normal(size=(20_000, 3)), columns=["a", "b", "c"])  # compiled path
    np.testing.assert_allclose(loaded.predict(big), m.predict(big), rtol=0, atol=1e-12)
    data = bytearray((folder / "forest.so").read_bytes())
    data[100] ^= 0xFF
    (folder / "forest.so").write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="forest.so.*sha256 does not match"):
        read_package(folder)


# ----------------------------------------------- worker malloc environment (issue 15's cause)


def _refaults(nbytes: int = 2**20, n: int = 16) -> float:
    """Runs on a worker (pickled by value): minor page faults per page when a freed 1 MiB array
    is allocated and written again; ~0 when the memory is reused, ~1 when each is a new mmap
    (numpy asks for huge pages only from 4 MiB on, so these are 4 KiB page faults)."""
    import resource

    a = np.empty(nbytes, np.uint8)
    a.fill(1)
    del a
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        a = np.empty(nbytes, np.uint8)
        a.fill(1)
        del a
    pages = n * nbytes / resource.getpagesize()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / pages


def test_local_cluster_workers_reuse_memory_and_dasks_default_is_named(monkeypatch):
    """globalflux's LocalCluster workers run with WORKER_MALLOC (arrays reused: no page faults
    on the next block), this process's environment is left as it was, and a cluster with
    Dask's default malloc environment gets a note naming the variables to set."""
    import sys

    import cloudpickle
    from distributed import Client

    from globalflux import bench
    from globalflux.cluster import (
        CLUSTER_CONFIG,
        WORKER_MALLOC,
        _malloc_environ,
        local_cluster,
        malloc_note,
        worker_malloc_env,
    )

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as a Nanny leaves its process
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    before = {k: os.environ.get(k) for k in WORKER_MALLOC}
    assert worker_malloc_env() == WORKER_MALLOC
    faults = {}
    try:
        for name, kw in (("globalflux", {}), ("dask", {"malloc": bench.DASK_MALLOC,
                                                        "config": {}})):
            with local_cluster(1, 1, "1GiB", **kw) as lc, \
                    Client(lc, set_as_default=False) as c:
                env = next(iter(c.run(_malloc_environ).values()))
                faults[name] = next(iter(c.run(_refaults).values()))
                note = malloc_note(c)
                cfg = next(iter(c.run(_dask_config, list(CLUSTER_CONFIG)).values()))
            assert {k: os.environ.get(k) for k in WORKER_MALLOC} == before
            if name == "globalflux":
                assert env == WORKER_MALLOC
                assert note is None
                assert cfg == CLUSTER_CONFIG  # the worker polls its monitors less
            else:
                assert env == {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": "65536"}
                assert cfg == {"distributed.worker.profile.interval": "10ms",
                               "distributed.admin.tick.interval": "20ms",
                               "distributed.admin.system-monitor.interval": "500ms"}
                assert "MALLOC_TRIM_THRESHOLD_=65536" in note
                assert "MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=67108864" in note
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert faults["globalflux"] < 0.05 and faults["dask"] > 0.5, faults


def _dask_config(keys):
    """Runs on a worker (pickled by value): its Dask settings of ``keys``."""
    import dask

    return {k: dask.config.get(k) for k in keys}


def test_users_own_malloc_and_dask_config_are_passed_on():
    import dask

    from globalflux.cluster import CLUSTER_CONFIG, WORKER_MALLOC, cluster_config, worker_malloc_env

    assert worker_malloc_env() == WORKER_MALLOC
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 2**20}):
        assert worker_malloc_env() == {"MALLOC_MMAP_THRESHOLD_": "1048576",
                                       "MALLOC_TRIM_THRESHOLD_": "65536"}
    assert cluster_config() == CLUSTER_CONFIG
    with dask.config.set({"distributed.worker.profile.interval": "5ms"}):  # the user's choice
        assert "distributed.worker.profile.interval" not in cluster_config()
        assert len(cluster_config()) == len(CLUSTER_CONFIG) - 1
