"""globalflux.mapping: chunked = eager, laziness, model held once, empty blocks skipped."""

from __future__ import annotations

import pickle

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import RandomForestRegressor

from globalflux.errors import DataError, StoreError
from globalflux.io.store import completed_blocks, is_complete, open_dataset
from globalflux.mapping import apply_to_cube, graph_tasks, map_to_store, predict_block


def make_cube(nt=5, ny=13, nx=17, seed=0):
    rng = np.random.default_rng(seed)
    ds = xr.Dataset(
        {
            "a": (("time", "y", "x"), rng.normal(size=(nt, ny, nx))),
            "b": (("y", "x"), rng.normal(size=(ny, nx))),
            "c": (("time",), rng.normal(size=nt)),
        },
        coords={"time": np.arange(nt), "y": 50.0 - np.arange(ny), "x": np.arange(nx) * 1.0},
    )
    a = ds["a"].values
    a[0, :3, :4] = np.nan  # missing inputs
    land = xr.DataArray(rng.random((ny, nx)) > 0.25, dims=("y", "x"),
                        coords={"y": ds.y, "x": ds.x})
    land[:6, :8] = False  # a no-land corner
    return ds, land


@pytest.fixture(scope="module")
def forest():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + np.sin(3 * X[:, 0])
    return RandomForestRegressor(n_estimators=12, random_state=0, n_jobs=1).fit(X, y)


def eager_prediction(est, ds, land):
    """Plain numpy: predict every valid pixel (the reference)."""
    a = ds["a"].values
    b = np.broadcast_to(ds["b"].values, a.shape)
    c = np.broadcast_to(ds["c"].values[:, None, None], a.shape)
    X = np.stack([a.ravel(), b.ravel(), c.ravel()], axis=1)
    ok = np.broadcast_to(land.values, a.shape).ravel() & np.isfinite(X).all(axis=1)
    out = np.full(a.size, np.nan, dtype="float32")
    out[ok] = est.predict(X[ok]).astype("float32")
    return out.reshape(a.shape)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ct=st.integers(1, 5), cy=st.integers(1, 13), cx=st.integers(1, 17))
def test_chunked_equals_eager_over_random_chunkings(forest, ct, cy, cx):
    ds, land = make_cube()
    ref = eager_prediction(forest, ds, land)
    out = apply_to_cube(forest, ds.chunk({"time": ct, "y": cy, "x": cx}), ["a", "b", "c"],
                        mask=land, as_frame=False)
    assert out.chunks is not None
    got = out.compute(scheduler="synchronous").values
    np.testing.assert_array_equal(got, ref)  # exactly, NaN in the same places


def test_apply_to_cube_builds_without_computing(forest):
    ds, land = make_cube()
    with dask.config.set(scheduler=_raise_if_computed):
        out = apply_to_cube(forest, ds.chunk({"time": 2, "y": 5, "x": 5}), ["a", "b", "c"],
                            mask=land.chunk({"y": 5, "x": 5}))
    assert out.chunks is not None and out.dtype == np.float32
    assert out.dims == ("time", "y", "x")


def _raise_if_computed(*args, **kwargs):
    raise AssertionError("something was computed while building the graph")


def test_model_is_one_key_not_pickled_per_chunk(forest):
    ds, land = make_cube(nt=4, ny=40, nx=40)
    out = apply_to_cube(forest, ds.chunk({"time": 1, "y": 10, "x": 10}), ["a", "b", "c"],
                        mask=land)
    graph = dict(out.data.__dask_graph__())
    model_size = len(pickle.dumps(forest))
    sizes = {k: len(pickle.dumps(v)) for k, v in graph.items()}
    big = [k for k, s in sizes.items() if s >= model_size // 2]
    assert len(big) == 1, f"the model is serialised in {len(big)} tasks"
    n_predict = sum(1 for k in graph if isinstance(k, tuple) and "predict" in str(k[0]))
    assert n_predict == 4 * 4 * 4
    assert max(s for k, s in sizes.items() if k not in big) < model_size // 10


def test_no_land_block_never_calls_the_estimator():
    class Exploding:
        def predict(self, X):  # a real object whose predict must not be reached
            raise RuntimeError("called on an empty block")

    feats = [np.ones((2, 3)), np.ones((2, 3))]
    out = predict_block(*feats, np.zeros((2, 3), bool), estimator=Exploding(), method="predict",
                        dtype="float32", fill=-9.0)
    assert (out == -9.0).all()
    nan_feats = [np.full((2, 3), np.nan), np.ones((2, 3))]
    out = predict_block(*nan_feats, np.ones((2, 3), bool), estimator=Exploding(),
                        method="predict", dtype="int16", fill=-1)
    assert (out == -1).all() and out.dtype == np.int16


def test_missing_feature_is_named(forest):
    ds, land = make_cube()
    with pytest.raises(DataError, match=r"cube: cube lacks predictor\(s\) \['zz'\]"):
        apply_to_cube(forest, ds, ["a", "zz", "c"])


def test_map_to_store_matches_eager_and_skips_sea(tmp_path, forest):
    ds, land = make_cube(nt=4, ny=20, nx=24)
    lazy = ds.chunk({"time": 2, "y": 6, "x": 8})
    rh = apply_to_cube(forest, lazy, ["a", "b", "c"], mask=land, name="rh", as_frame=False)
    zone = (lazy["b"] > 0).astype("int16").where(land, -1).astype("int16").rename("zone")
    path = map_to_store(None, {"rh": rh, "zone": zone}, tmp_path / "m.zarr",
                        attrs={"title": "t", "recipe": "name: t\n"}, mask=land, progress=False)
    assert is_complete(path)
    out = open_dataset(path)
    np.testing.assert_array_equal(out["rh"].values, eager_prediction(forest, ds, land))
    z = out["zone"].values  # integer layers keep their dtype: -1 is the fill (encoding)
    assert out["zone"].dtype == np.int16 and out["zone"].encoding["_FillValue"] == -1
    expected = np.where(land.values, (ds["b"].values > 0).astype("int16"), -1)
    np.testing.assert_array_equal(z, expected)
    # chunks are the Zarr chunks; every block recorded
    assert out.attrs["globalflux_complete"] == "true"
    assert len(completed_blocks(path)) == 2 * 4 * 3
    # the no-land corner tile (y 0-5, x 0-7) holds no chunk file: skipped, reads as fill
    assert not (path / "rh" / "c" / "0" / "0" / "0").exists()
    assert (path / "rh" / "c" / "0" / "1" / "1").exists()


def test_map_to_store_refuses_existing_store(tmp_path, forest):
    ds, land = make_cube()
    rh = apply_to_cube(forest, ds.chunk({"y": 7}), ["a", "b", "c"], name="rh", as_frame=False)
    map_to_store(None, {"rh": rh}, tmp_path / "m.zarr", progress=False)
    with pytest.raises(StoreError, match=r"m\.zarr: store exists\. Use --resume"):
        map_to_store(None, {"rh": rh}, tmp_path / "m.zarr", progress=False)


def test_graph_of_a_global_year_is_under_100k_tasks(forest):
    # global 0.05 deg, 46 8-day steps, default chunks (whole time axis x 128 x 128), 16
    # predictors: the graph is built (never computed) and counted
    import dask.array as dsa

    ny, nx, nt = 3600, 7200, 46
    names = [f"p{i}" for i in range(16)]
    data = {n: (("time", "y", "x"), dsa.zeros((nt, ny, nx), chunks=(nt, 128, 128), dtype="f4"))
            for n in names[:10]}
    data.update({n: (("y", "x"), dsa.zeros((ny, nx), chunks=(128, 128), dtype="f4"))
                 for n in names[10:]})
    cube = xr.Dataset(data, coords={"time": np.arange(nt), "y": np.arange(ny),
                                    "x": np.arange(nx)})
    est = RandomForestRegressor(n_estimators=2, random_state=0).fit(np.zeros((4, 16)), np.zeros(4))
    land = xr.DataArray(dsa.ones((ny, nx), chunks=128, dtype=bool), dims=("y", "x"),
                        coords={"y": cube.y, "x": cube.x})
    rh = apply_to_cube(est, cube, names, mask=land, as_frame=False, name="rh")
    n = graph_tasks(rh)
    tiles = 29 * 57
    assert n < 100_000, n
    assert n <= tiles * 20  # inputs + mask + prediction per tile, one model key


@pytest.mark.slow
def test_bench_quick_prints_a_table_with_context(tmp_path, capsys):
    import warnings

    from globalflux.cli import main

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["--quiet", "bench", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # no zarr warning about v3 consolidated metadata (write_dataset's is deliberate)
    assert not [w for w in caught if "Consolidated metadata" in str(w.message)]
    assert "| benchmark | what | value | unit | notes |" in out
    for row in ("sklearn RF default (100 trees)", "fast forest lleaves", "ZoneClassifier.predict",
                "predict_cube", "read predictor cube", "end-to-end / model-only",
                "load + verify zoned forest package", "first chunk predict, empty cache",
                "pipeline synchronous", "cluster 1 worker", "cluster 2 workers",
                "cluster 1 worker / synchronous", "cluster 2 / 1 workers", "cold start per worker",
                "cluster 1 worker, Dask's defaults", "page_faults_per_map=",
                "idle cluster CPU, 1 worker",
                "global year: tasks", "global year: projected core-hours (forest)",
                "global year: projected core-hours (LSTM, daily)"):
        assert row in out
    assert "chunks=8x128x128" in out and "dask=" in out and "cpu_count=" in out
    import json

    ctx = json.loads((tmp_path / "bench_context.json").read_text())
    assert ctx["mode"] == "quick" and ctx["cluster"]["scheduler"] == "threads"
    assert ctx["local_worker_malloc"]["MALLOC_MMAP_THRESHOLD_"] == str(32 * 2**20)
    assert ctx["local_cluster_config"]["distributed.admin.tick.interval"] == "500ms"
    assert (tmp_path / "bench.csv").read_text().startswith("benchmark,what,value,unit,notes")
