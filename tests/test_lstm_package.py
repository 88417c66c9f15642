"""LSTM model packages (to_package/from_package), masked drivers and seed ensembles."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import xarray as xr

from globalflux.errors import DataError, ModelError
from globalflux.mapping import apply_lstm_to_cube
from globalflux.models.lstm import LSTMEnsemble, LSTMRegressor, predict_cube
from globalflux.models.lstm.inference import model_inputs

torch = pytest.importorskip("torch")

from test_lstm import arrays, small  # noqa: E402


def test_package_round_trip_predicts_identically():
    X, y, s = arrays(n_sites=3, n_days=80)
    m = small().fit(X, y, static=s)
    section, payloads = m.to_package()
    # the section is plain JSON; the only payload is a tensors-only state dict
    section = json.loads(json.dumps(section))
    assert section["kind"] == "lstm" and section["time_step"] == "P1D"
    assert [d["name"] for d in section["inputs"]["drivers"]] == ["Ts", "SWC"]
    ts = section["inputs"]["drivers"][0]
    assert ts["units"] == "degC"
    assert ts["train_min"] == pytest.approx(np.nanmin(X[..., 0]), rel=1e-9)
    assert ts["train_max"] == pytest.approx(np.nanmax(X[..., 0]), rel=1e-9)
    assert set(payloads) == {"lstm_weights.pt"}
    state = torch.load(io.BytesIO(payloads["lstm_weights.pt"]), weights_only=True)
    assert "lstm.weight_ih_l0" in state
    m2 = LSTMRegressor.from_package(section, payloads)
    np.testing.assert_array_equal(m.predict(X, static=s), m2.predict(X, static=s))
    assert m2.get_params()["drivers"] == ("Ts", "SWC")


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", [
    pickle.dumps(_Evil()),
    pickle.dumps({"lstm.weight_ih_l0": np.zeros(3)}),  # numpy arrays are not tensors
    b"not a torch file",
], ids=["reduce-pickle", "numpy-pickle", "junk"])
def test_package_refuses_pickles_and_junk(payload, capsys):
    X, y, s = arrays(n_sites=2, n_days=60)
    section, _ = small().fit(X, y, static=s).to_package()
    with pytest.raises(ModelError, match="lstm_weights.pt"):
        LSTMRegressor.from_package(section, {"lstm_weights.pt": payload})
    assert "unpickled!" not in capsys.readouterr().out


def test_package_wrong_kind_or_missing_payload():
    X, y, s = arrays(n_sites=2, n_days=60)
    section, payloads = small().fit(X, y, static=s).to_package()
    with pytest.raises(ModelError, match="kind 'zoned_forest'"):
        LSTMRegressor.from_package({**section, "kind": "zoned_forest"}, payloads)
    with pytest.raises(ModelError, match="payload 'lstm_weights.pt' is missing"):
        LSTMRegressor.from_package(section, {})


def test_masked_driver_trains_and_predicts_at_sites_without_it():
    X, y, s = arrays(n_sites=4, n_days=120)
    X = X.copy()
    X[0, :, 1] = np.nan  # site 0 has no soil moisture at all
    with pytest.raises(DataError, match="driver 'SWC' is missing"):
        small().fit(X, y, static=s)
    m = small(masked_drivers=("SWC",)).fit(X, y, static=s)
    pred = m.predict(X, static=s)
    assert np.isfinite(pred[0]).all() and np.isfinite(pred).all()
    # one availability channel: 2 drivers + 1 channel + 2 statics into the LSTM
    assert m.module_.lstm.input_size == 5
    z = model_inputs(m.scaler_dyn_, X[:1, :3], m._available())
    np.testing.assert_array_equal(z[0, :, 2], 0.0)  # SWC unavailable
    np.testing.assert_allclose(z[0, :, 1], m.scaler_dyn_.mean[1], rtol=1e-6)  # training mean
    np.testing.assert_array_equal(model_inputs(m.scaler_dyn_, X[1:2, :3], (1,))[0, :, 2], 1.0)
    # the availability channel matters: the same site with SWC filled predicts differently
    X2 = X.copy()
    X2[0, :, 1] = 0.25
    assert not np.allclose(m.predict(X2, static=s)[0], pred[0])
    # packages and gridded inference carry the channel
    m2 = LSTMRegressor.from_package(*m.to_package())
    np.testing.assert_array_equal(m2.predict(X, static=s), pred)
    with pytest.raises(ModelError, match="masked_drivers"):
        small(masked_drivers=("Tair",)).fit(X, y, static=s)


def test_masked_driver_in_cube_equals_site_prediction():
    X, y, s = arrays(n_sites=3, n_days=90)
    X = X.copy()
    X[1, 40:, 1] = np.nan
    m = small(masked_drivers=("SWC",)).fit(X, y, static=s)
    ds = xr.Dataset({"Ts": (("time", "y", "x"), X[..., 0].T[:, None, :]),
                     "SWC": (("time", "y", "x"), X[..., 1].T[:, None, :]),
                     "base": (("y", "x"), s[None, :, 0]), "elev": (("y", "x"), s[None, :, 1])})
    # the one map path feeds the availability channel (lstm_block -> model_inputs)
    cube = apply_lstm_to_cube(m, ds, ["Ts", "SWC"], ["base", "elev"], time_chunk=25,
                              check_daily=False).compute()
    np.testing.assert_allclose(cube.values[:, 0, :].T, m.predict(X, static=s), rtol=2e-5,
                               atol=1e-6)
    assert np.isfinite(cube.values[40:, 0, 1]).all()  # SWC missing there: still mapped
    # without the channel the network would not even take the inputs
    from globalflux.mapping import lstm_block

    w = m.weights()
    assert w.available == (1,)
    y0, _ = lstm_block(w, np.ones((1, 3), bool), [s[None, :, 0], s[None, :, 1]], None,
                       X[..., 0].T[:, None, :], X[..., 1].T[:, None, :])
    np.testing.assert_array_equal(y0, cube.values)


def test_ensemble_mean_spread_and_package():
    X, y, s = arrays(n_sites=3, n_days=80)
    ens = LSTMEnsemble(small(), n_members=3).fit(X, y, static=s)
    assert [m.random_state for m in ens.members_] == [1, 2, 3]
    mean, std, members = ens.predict(X, static=s, return_std=True, return_members=True)
    np.testing.assert_allclose(mean, np.mean(members, axis=0))
    np.testing.assert_allclose(std, np.std(members, axis=0, ddof=1))
    assert (std > 0).any()
    # member 0 is the single-seed model
    np.testing.assert_array_equal(members[0], small().fit(X, y, static=s).predict(X, static=s))
    section, payloads = ens.to_package()
    section = json.loads(json.dumps(section))
    assert len(payloads) == 3 and len(section["members"]) == 3
    ens2 = LSTMRegressor.from_package(section, payloads)
    assert isinstance(ens2, LSTMEnsemble)
    m2, s2 = ens2.predict(X, static=s, return_std=True)
    np.testing.assert_array_equal(m2, mean)
    np.testing.assert_array_equal(s2, std)
    # the map path: mean and spread layers, lazy, equal to the site values
    ds = xr.Dataset({"Ts": (("time", "y", "x"), X[..., 0].T[:, None, :]),
                     "SWC": (("time", "y", "x"), X[..., 1].T[:, None, :]),
                     "base": (("y", "x"), s[None, :, 0]), "elev": (("y", "x"), s[None, :, 1])})
    maps = ens.predict_cube(ds, ["Ts", "SWC"], ["base", "elev"], time_chunk=30)
    assert set(maps.data_vars) == {"Rs", "Rs_sd"}
    assert maps["Rs"].chunks is not None
    np.testing.assert_allclose(maps["Rs"].values[:, 0, :].T, mean, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(maps["Rs_sd"].values[:, 0, :].T, std, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_ensemble_size_must_be_positive(n):
    X, y, s = arrays(n_sites=2, n_days=60)
    with pytest.raises(ModelError, match="ensemble size"):
        LSTMEnsemble(small(), n_members=n).fit(X, y, static=s)


def test_global_q10_learns_parameters_from_attributes():
    from globalflux.models.baselines import GlobalQ10Model

    rng = np.random.default_rng(0)
    n_sites, n_days = 12, 200
    attr = rng.uniform(-1, 1, (n_sites, 2))
    r10 = np.exp(0.5 + 0.4 * attr[:, 0])
    q10 = np.exp(0.8 - 0.2 * attr[:, 1])
    T = 10 + 8 * rng.normal(size=(n_sites, n_days))
    R = r10[:, None] * q10[:, None] ** ((T - 10) / 10)
    train = np.arange(n_sites) < 9
    Rt = np.where(train[:, None], R, np.nan)
    m = GlobalQ10Model(alpha=1e-6).fit(attr[train], T[train], Rt[train])
    assert m.n_sites_ == 9
    # unseen sites (never in fit) get their own parameters from their attributes
    np.testing.assert_allclose(m.predict_params(attr[~train]), np.c_[r10, q10][~train], rtol=1e-4)
    np.testing.assert_allclose(m.predict(attr[~train], T[~train]), R[~train], rtol=1e-3)
    with pytest.raises(ModelError, match="training site"):
        GlobalQ10Model().fit(attr[:3], np.full((3, 5), np.nan), np.full((3, 5), np.nan))


def test_predict_cube_device_auto_and_missing_cuda():
    X, y, s = arrays(n_sites=2, n_days=50)
    m = small().fit(X, y, static=s)
    ds = xr.Dataset({"Ts": (("time", "y", "x"), X[..., 0].T[:, None, :]),
                     "SWC": (("time", "y", "x"), X[..., 1].T[:, None, :]),
                     "base": (("y", "x"), s[None, :, 0]), "elev": (("y", "x"), s[None, :, 1])})
    kw = dict(time_chunk=20, check_daily=False)
    cpu = apply_lstm_to_cube(m, ds, ["Ts", "SWC"], ["base", "elev"], **kw).values
    auto = apply_lstm_to_cube(m, ds, ["Ts", "SWC"], ["base", "elev"], device="auto", **kw).values
    np.testing.assert_allclose(auto, cpu, rtol=1e-4, atol=1e-5)  # TF32 on a GPU: close, not equal
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="device 'cuda' requested"):
            apply_lstm_to_cube(m, ds, ["Ts", "SWC"], ["base", "elev"], device="cuda",
                               check_daily=False)
    # the deprecated predict_cube is the same path
    with pytest.deprecated_call():
        old = predict_cube(m, ds, ["Ts", "SWC"], ["base", "elev"], time_chunk=20)
    np.testing.assert_array_equal(old.values, cpu)


def test_column_constant_in_training_maps_to_zero():
    from globalflux.models.lstm import Scaler

    sc = Scaler.fit(np.array([[0.0, 1.0], [0.0, 3.0]]), ["igbp_X", "v"], "statics")
    z = sc.transform(np.array([[1.0, 2.0], [0.0, np.nan]]))
    assert z[0, 0] == 0.0 and z[1, 0] == 0.0  # a class never seen in training: no signal
    assert 0.0 < z[0, 1] < 1.0 and z[1, 1] == pytest.approx(sc.mean[1])


def test_ensemble_package_maps_mean_and_sd_through_map_cube(tmp_path):
    """An LSTMEnsemble model package: globalflux.map_cube gives the ensemble mean and its
    spread as <target>_sd (named like the forests' rh_sd), lazily; `globalflux map` writes
    both."""
    import pandas as pd
    import rioxarray  # noqa: F401

    import globalflux
    from globalflux.cli import main
    from globalflux.io.model_package import write_package
    from globalflux.io.store import write_dataset

    X, y, s = arrays(n_sites=3, n_days=80)
    ens = LSTMEnsemble(small(), n_members=2).fit(X, y, static=s)
    write_package(tmp_path / "model", ens, time_step="daily",
                  target={"name": "efflux", "units": "g C m-2 d-1"},
                  inputs=[{"name": "Ts", "units": "degC"}], synthetic=True)
    model = globalflux.load_model(tmp_path / "model")
    assert isinstance(model, LSTMEnsemble) and model.package_.kind == "lstm"
    ds = xr.Dataset({"Ts": (("time", "y", "x"), X[..., 0].T[:, None, :], {"units": "degC"}),
                     "SWC": (("time", "y", "x"), X[..., 1].T[:, None, :]),
                     "base": (("y", "x"), s[None, :, 0]), "elev": (("y", "x"), s[None, :, 1])},
                    coords={"time": pd.date_range("2020-01-01", periods=80), "y": [45.0],
                            "x": [10.0, 10.01, 10.02]}).rio.write_crs("EPSG:4326")
    out = globalflux.map_cube(model, ds.chunk({"time": 30}))
    assert set(out.data_vars) == {"efflux", "efflux_sd"} and out["efflux_sd"].chunks is not None
    assert out.attrs["lstm_members"] == 2 and out.attrs["model_kind"] == "lstm"
    mean, std = ens.predict(X, static=s, return_std=True)
    np.testing.assert_allclose(out["efflux"].values[:, 0, :].T, mean, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(out["efflux_sd"].values[:, 0, :].T, std, rtol=1e-3, atol=1e-5)
    with pytest.raises(ModelError, match="map_lstm"):
        apply_lstm_to_cube(model, ds, ["Ts", "SWC"], ["base", "elev"])
    # units are checked against the manifest
    with pytest.raises(DataError, match="cube variable Ts: has units 'K'"):
        globalflux.map_cube(model, ds.assign(Ts=ds["Ts"].assign_attrs(units="K")))
    write_dataset(ds.chunk({"time": 30}), tmp_path / "cube.zarr")
    assert main(["map", str(tmp_path / "model"), str(tmp_path / "cube.zarr"),
                 "--out", str(tmp_path / "m.zarr")]) == 0
    got = xr.open_zarr(tmp_path / "m.zarr")
    np.testing.assert_array_equal(got["efflux"].values, out["efflux"].values)
    np.testing.assert_array_equal(got["efflux_sd"].values, out["efflux_sd"].values)
    assert got.attrs["model_sha256"] == model.package_.checksum
