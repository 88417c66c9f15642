"""The global LSTM: learning a known response, masking, scalers, checkpoints, resume, cube inference."""

from __future__ import annotations

import json

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from globalflux.errors import CheckpointError, DataError, ModelError
from globalflux.metrics import nse
from globalflux.models.lstm import (
    EffluxLSTM,
    LSTMRegressor,
    Scaler,
    add_doy_features,
    hydrodl_batches,
)

torch = pytest.importorskip("torch")


def predict_cube(model, ds, drivers, statics, mask=None, time_chunk=365, **kw):
    """Gridded inference through the one LSTM map path."""
    from globalflux.mapping import apply_lstm_to_cube

    return apply_lstm_to_cube(model, ds, drivers, statics, mask=mask, time_chunk=time_chunk, **kw)


def synthetic_sites(n_sites=6, n_days=240, seed=0, gap_every=3):
    """Seeded synthetic sites: Rs = base * Q10^((Ts-10)/10) * moisture factor (known truth)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_days)
    ts = 12 + 9 * np.sin(2 * np.pi * (t - 100) / 365)[None, :] + rng.normal(0, 1.0, (n_sites, n_days))
    swc = np.clip(0.25 + 0.08 * rng.normal(size=(n_sites, n_days)), 0.02, 0.6)
    base = rng.uniform(0.8, 3.0, n_sites)
    elev = rng.uniform(0, 1500, n_sites)
    rs = base[:, None] * 2.0 ** ((ts - 10) / 10) * (swc / (swc + 0.1))
    if gap_every:
        rs[:, ::gap_every] = np.nan
    return ts, swc, base, elev, rs


def small(**kw):
    params = dict(drivers=("Ts", "SWC"), statics=("base", "elev"), hidden_size=16, epochs=3,
                  batches_per_epoch=4, batch_size=16, seq_len=20, num_threads=1, random_state=1)
    params.update(kw)
    return LSTMRegressor(**params)


def arrays(**kw):
    ts, swc, base, elev, rs = synthetic_sites(**kw)
    return np.stack([ts, swc], -1), rs, np.stack([base, elev], -1)


def test_network_shapes_and_static_concat():
    net = EffluxLSTM(3, 2, hidden_size=8, dropout=0.2)
    assert net.lstm.input_size == 5 and net.lstm.hidden_size == 8
    y, (h, c) = net(torch.zeros(4, 7, 3), torch.ones(4, 2))
    assert y.shape == (4, 7) and h.shape == (1, 4, 8) and c.shape == (1, 4, 8)
    # statics reach every step: changing them changes the output at the last step too
    net.eval()
    y1, _ = net(torch.zeros(1, 7, 3), torch.zeros(1, 2))
    y2, _ = net(torch.zeros(1, 7, 3), torch.ones(1, 2))
    assert not torch.allclose(y1[0, -1], y2[0, -1])


def test_scaler_uses_training_minmax_and_round_trips():
    x = np.array([[0.0], [1.0], [10.0], [np.nan]])
    sc = Scaler.fit(x, ["a"], "drivers")
    np.testing.assert_allclose(sc.lo, [0.0])
    np.testing.assert_allclose(sc.hi, [np.arcsinh(10.0)])
    z = sc.transform(np.array([[0.0], [10.0], [100.0], [np.nan]]))
    np.testing.assert_allclose(z[:2, 0], [0.0, 1.0], atol=1e-6)
    assert z[2, 0] > 1.0  # outside the training range: not clipped, not refitted
    np.testing.assert_allclose(z[3, 0], sc.mean[0], rtol=1e-6)  # imputed with the training mean
    np.testing.assert_allclose(sc.inverse(sc.transform(np.array([[3.0]]), impute=False)), [[3.0]],
                               rtol=1e-5)


def test_hydrodl_batches_rule():
    # each day drawn with prob 0.99: (1 - b*L/N)^n <= 0.01
    n = hydrodl_batches(10_000, 64, 30)
    assert (1 - 64 * 30 / 10_000) ** n <= 0.01 < (1 - 64 * 30 / 10_000) ** (n - 1)
    assert hydrodl_batches(100, 64, 30) == 1


def test_learns_known_response_on_masked_targets():
    X, y, s = arrays(n_sites=6, n_days=300)
    m = small(hidden_size=32, epochs=50, batches_per_epoch=12, batch_size=32).fit(X, y, static=s)
    pred = m.predict(X, static=s)
    assert pred.shape == y.shape
    assert nse(y, pred) > 0.8
    assert m.loss_history_[-1] < m.loss_history_[0] / 3
    assert m.epoch_ == 50 and m.n_batches_per_epoch_ == 12


def test_unobserved_days_do_not_enter_the_loss():
    X, y, s = arrays(n_sites=3, n_days=120, gap_every=2)
    m1 = small().fit(X, y, static=s)
    # half the days are NaN: an unmasked MSE would be NaN from the first batch on
    assert np.isfinite(m1.loss_history_).all()
    assert np.isfinite(m1.predict(X, static=s)).all()
    # observing those days (with other values) changes the fit: the mask is what kept them out
    y4 = y.copy()
    y4[:, ::2] = 50.0
    m3 = small().fit(X, y4, static=s)
    assert not np.allclose(m3.predict(X, static=s), m1.predict(X, static=s))


def test_seeded_and_deterministic():
    X, y, s = arrays(n_sites=3, n_days=100)
    p1 = small(random_state=5).fit(X, y, static=s).predict(X, static=s)
    p2 = small(random_state=5).fit(X, y, static=s).predict(X, static=s)
    p3 = small(random_state=6).fit(X, y, static=s).predict(X, static=s)
    np.testing.assert_array_equal(p1, p2)
    assert not np.allclose(p1, p3)


def test_sklearn_contract():
    from sklearn.base import clone

    m = small(hidden_size=7)
    assert clone(m).get_params() == m.get_params()
    assert not any(k.endswith("_") for k in vars(m))
    X, y, s = arrays(n_sites=2, n_days=60)
    assert m.fit(X, y, static=s) is m
    assert hasattr(m, "module_") and hasattr(m, "scaler_y_")
    with pytest.raises(ModelError, match="not fitted"):
        small().predict(X, static=s)


def test_dataset_interface_matches_arrays():
    ts, swc, base, elev, rs = synthetic_sites(n_sites=3, n_days=90)
    time = pd.date_range("2015-01-01", periods=90, freq="D")
    ds = xr.Dataset(
        {"Ts": (("site", "time"), ts), "SWC": (("site", "time"), swc),
         "Rs": (("site", "time"), rs), "base": ("site", base), "elev": ("site", elev)},
        coords={"site": ["A", "B", "C"], "time": time},
    )
    ds = add_doy_features(ds)
    assert ds["doy_sin"].dims == ("time",)
    m = small(drivers=("Ts", "SWC", "doy_sin")).fit(ds)
    pred = m.predict(ds)
    assert pred.dims == ("site", "time") and list(pred["site"].values) == ["A", "B", "C"]
    X = np.stack([ts, swc, np.broadcast_to(ds["doy_sin"].values, ts.shape)], -1)
    m2 = small(drivers=("Ts", "SWC", "doy_sin")).fit(X, rs, static=np.stack([base, elev], -1))
    np.testing.assert_allclose(pred.values, m2.predict(X, static=np.stack([base, elev], -1)),
                               rtol=1e-6)


# ---- bad inputs ---------------------------------------------------------------------------------
def test_bad_inputs_are_named():
    X, y, s = arrays(n_sites=3, n_days=80)
    with pytest.raises(DataError, match="all target values are NaN"):
        small().fit(X, np.full_like(y, np.nan), static=s)
    y1 = y.copy()
    y1[1] = np.nan
    with pytest.raises(DataError, match=r"site site1: all target values are NaN at this site"):
        small().fit(X, y1, static=s)
    y2 = y.copy()
    y2[2, 15:] = np.nan
    with pytest.raises(DataError, match=r"site site2: has \d+ days of data, fewer than the "
                                        r"sequence length 20"):
        small().fit(X, y2, static=s)
    X3 = X.copy()
    X3[0, :, 1] = np.nan
    with pytest.raises(DataError, match=r"site site0: driver 'SWC' is missing \(all NaN\)"):
        small().fit(X3, y, static=s)
    s4 = s.copy()
    s4[1, 0] = np.nan
    with pytest.raises(DataError, match="static attribute 'base' is missing"):
        small().fit(X, y, static=s4)
    with pytest.raises(DataError, match="driver columns"):
        small().fit(X[..., :1], y, static=s)


# ---- checkpoints --------------------------------------------------------------------------------
def test_checkpoint_round_trip_weights_only(tmp_path):
    X, y, s = arrays(n_sites=3, n_days=80)
    m = small().fit(X, y, static=s)
    m.save(tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert meta["config"]["drivers"] == ["Ts", "SWC"] and "scalers" in meta
    # weights are plain tensors: loadable with weights_only=True
    state = torch.load(tmp_path / "ck" / "weights.pt", weights_only=True)
    assert "lstm.weight_ih_l0" in state["model"]
    m2 = LSTMRegressor.load(tmp_path / "ck")
    np.testing.assert_array_equal(m.predict(X, static=s), m2.predict(X, static=s))
    assert m2.epoch_ == m.epoch_ and m2.loss_history_ == m.loss_history_


def test_checkpoint_from_other_configuration_names_keys(tmp_path):
    X, y, s = arrays(n_sites=3, n_days=80)
    small().fit(X, y, static=s).save(tmp_path / "ck")
    other = small(hidden_size=8, drivers=("Ts", "Tair"))
    with pytest.raises(CheckpointError, match=r"another configuration \(drivers: checkpoint "
                       r"\['Ts', 'SWC'\] vs now \['Ts', 'Tair'\]; hidden_size: checkpoint 16 vs now 8\)"):
        other.fit(X, y, static=s, init_from=tmp_path / "ck")
    with pytest.raises(CheckpointError, match="hidden_size"):
        LSTMRegressor.load(tmp_path / "ck", expect=other)


def test_corrupt_or_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        LSTMRegressor.load(tmp_path / "nothing")
    X, y, s = arrays(n_sites=2, n_days=60)
    small().fit(X, y, static=s).save(tmp_path / "ck")
    (tmp_path / "ck" / "weights.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="weights.pt cannot be read"):
        LSTMRegressor.load(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is corrupt"):
        LSTMRegressor.load(tmp_path / "ck")


def test_resume_equals_uninterrupted(tmp_path):
    X, y, s = arrays(n_sites=3, n_days=80)
    full = small(epochs=6).fit(X, y, static=s)
    part = small(epochs=3).fit(X, y, static=s, checkpoint=tmp_path / "ck", checkpoint_every=1)
    assert part.epoch_ == 3
    resumed = small(epochs=6).fit(X, y, static=s, checkpoint=tmp_path / "ck", resume=True)
    assert resumed.epoch_ == 6
    np.testing.assert_allclose(resumed.loss_history_, full.loss_history_, rtol=1e-6)
    np.testing.assert_allclose(resumed.predict(X, static=s), full.predict(X, static=s), rtol=1e-5)


# ---- gridded inference --------------------------------------------------------------------------
def _cube(model, nt=50, ny=5, nx=4, seed=3):
    rng = np.random.default_rng(seed)
    t = np.arange(nt)
    ts = 12 + 8 * np.sin(2 * np.pi * t / 365)[:, None, None] + rng.normal(0, 1, (nt, ny, nx))
    swc = rng.uniform(0.1, 0.4, (nt, ny, nx))
    base = rng.uniform(0.8, 3.0, (ny, nx))
    elev = rng.uniform(0, 1000, (ny, nx))
    base[0, 0] = np.nan  # no static there: not predicted
    ds = xr.Dataset(
        {"Ts": (("time", "y", "x"), ts), "SWC": (("time", "y", "x"), swc),
         "base": (("y", "x"), base), "elev": (("y", "x"), elev)},
        coords={"time": pd.date_range("2020-01-01", periods=nt), "y": np.arange(ny)[::-1] * 1.0,
                "x": np.arange(nx) * 1.0},
    )
    return ds


def test_predict_cube_equals_whole_series_per_pixel():
    X, y, s = arrays(n_sites=4, n_days=80)
    m = small().fit(X, y, static=s)
    ds = _cube(m).chunk({"y": 2, "x": 3})
    mask = xr.DataArray(np.ones((5, 4), bool), dims=("y", "x"))
    mask[4, 3] = False
    with dask.config.set(scheduler="sync"):
        lazy = predict_cube(m, ds, ["Ts", "SWC"], ["base", "elev"], mask=mask, time_chunk=7)
    assert lazy.chunks == ((7,) * 7 + (1,), (2, 2, 1), (3, 1))
    got = lazy.compute(scheduler="sync").values
    # reference: each pixel's whole series at once through predict()
    dyn = np.stack([ds["Ts"].values, ds["SWC"].values], -1)  # (t, y, x, 2)
    P = 5 * 4
    Xp = dyn.reshape(50, P, 2).transpose(1, 0, 2)
    Sp = np.stack([ds["base"].values.ravel(), ds["elev"].values.ravel()], -1)
    ref = m.predict(Xp, static=Sp).T.reshape(50, 5, 4)
    ref[:, 4, 3] = np.nan  # masked
    assert np.isnan(got[:, 0, 0]).all() and np.isnan(got[:, 4, 3]).all()
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-6)


def test_predict_cube_builds_lazily_and_checks_inputs():
    X, y, s = arrays(n_sites=2, n_days=60)
    m = small().fit(X, y, static=s)
    ds = _cube(m).chunk({"time": 10, "y": 5, "x": 4})
    calls = []

    def _count(*a, **k):  # a scheduler that records any compute while building the graph
        calls.append(1)
        return dask.get(*a, **k)

    with dask.config.set(scheduler=_count):
        out = predict_cube(m, ds, ["Ts", "SWC"], ["base", "elev"], time_chunk=20)
    assert not calls and out.dtype == np.float32 and out.dims == ("time", "y", "x")
    # the weights sit in the graph once, shared by every task (not embedded per task)
    from globalflux.models.lstm import LSTMWeights

    graph = dict(out.data.__dask_graph__())
    holders = [k for k, v in graph.items()
               if isinstance(v, LSTMWeights) or isinstance(getattr(v, "value", None), LSTMWeights)]
    assert len(holders) == 1
    with pytest.raises(ModelError, match="the model takes 2 and 2"):
        predict_cube(m, ds, ["Ts"], ["base", "elev"])
    with pytest.raises(DataError, match=r"cube lacks variable\(s\) \['nope'\]"):
        predict_cube(m, ds, ["Ts", "nope"], ["base", "elev"])


# ---- devices ------------------------------------------------------------------------------------
def test_device_auto_and_missing_cuda():
    X, y, s = arrays(n_sites=2, n_days=60)
    m = small(device="auto").fit(X, y, static=s)
    assert m.device_ == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="device 'cuda' requested but CUDA is not available"):
            small(device="cuda").fit(X, y, static=s)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_predicts_like_cpu_inference(tmp_path):
    X, y, s = arrays(n_sites=3, n_days=80)
    m = small(device="cuda").fit(X, y, static=s)
    p_gpu = m.predict(X, static=s)
    m.save(tmp_path / "ck")
    p_cpu = LSTMRegressor.load(tmp_path / "ck", device="cpu").predict(X, static=s)
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-4, atol=1e-5)


def test_predict_cube_with_day_of_year_drivers():
    X, y, s = arrays(n_sites=2, n_days=60)
    t = pd.date_range("2019-03-01", periods=60)
    doy = add_doy_features(xr.Dataset(coords={"time": t}))["doy_sin"].values
    X2 = np.concatenate([X[..., :1], np.broadcast_to(doy[None, :, None], X[..., :1].shape)], -1)
    m = small(drivers=("Ts", "doy_sin")).fit(X2, y, static=s)
    ds = add_doy_features(_cube(m, nt=40).assign_coords(time=t[:40]))
    assert ds["doy_sin"].dims == ("time",)
    got = predict_cube(m, ds.chunk({"y": 3}), ["Ts", "doy_sin"], ["base", "elev"],
                       time_chunk=15).compute(scheduler="threads").values
    dyn = np.stack([ds["Ts"].values, np.broadcast_to(ds["doy_sin"].values[:, None, None],
                                                     ds["Ts"].shape)], -1)
    ref = m.predict(dyn.reshape(40, 20, 2).transpose(1, 0, 2),
                    static=np.stack([ds["base"].values.ravel(), ds["elev"].values.ravel()], -1))
    np.testing.assert_allclose(got, ref.T.reshape(40, 5, 4), rtol=2e-5, atol=1e-6)


@pytest.fixture(scope="module")
def fitted_small():
    X, y, s = arrays(n_sites=3, n_days=70)
    return small().fit(X, y, static=s)


def test_property_any_chunking_equals_whole_series(fitted_small):
    """Chunked, state-carrying cube inference equals eager whole-series prediction for any
    time chunk and spatial chunking (Hypothesis)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    m = fitted_small
    ds0 = _cube(m, nt=23, ny=4, nx=3)
    dyn = np.stack([ds0["Ts"].values, ds0["SWC"].values], -1).reshape(23, 12, 2).transpose(1, 0, 2)
    stat = np.stack([ds0["base"].values.ravel(), ds0["elev"].values.ravel()], -1)
    ref = m.predict(dyn, static=stat).T.reshape(23, 4, 3)

    @settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(tc=st.integers(1, 30), cy=st.integers(1, 4), cx=st.integers(1, 3),
           bp=st.integers(1, 16))
    def check(tc, cy, cx, bp):
        got = predict_cube(m, ds0.chunk({"y": cy, "x": cx}), ["Ts", "SWC"], ["base", "elev"],
                           time_chunk=tc, batch_pixels=bp).compute(scheduler="sync").values
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-6)

    check()
