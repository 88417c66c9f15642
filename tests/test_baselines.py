"""Baselines recover known temperature responses and day-of-year cycles."""

from __future__ import annotations

import numpy as np
import pytest

from globalflux.errors import ModelError
from globalflux.models.baselines import (
    DoyClimatology,
    LloydTaylorModel,
    Q10Model,
    fit_predict_site,
)


def test_q10_recovers_parameters():
    rng = np.random.default_rng(0)
    t = rng.uniform(-2, 28, 400)
    r = 1.7 * 2.3 ** ((t - 10) / 10) * np.exp(rng.normal(0, 0.02, t.size))
    t[::17] = np.nan
    m = Q10Model().fit(t, r)
    assert m.R10_ == pytest.approx(1.7, rel=0.03)
    assert m.Q10_ == pytest.approx(2.3, rel=0.03)
    np.testing.assert_allclose(m.predict([10.0]), [m.R10_])


def test_lloyd_taylor_recovers_parameters():
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 30, 400)
    e0, rref = 308.56, 2.0
    r = rref * np.exp(e0 * (1 / (283.15 - 227.13) - 1 / (t + 273.15 - 227.13)))
    r = r * np.exp(rng.normal(0, 0.02, t.size))
    m = LloydTaylorModel().fit(t, r)
    assert m.E0_ == pytest.approx(e0, rel=0.05)
    assert m.Rref_ == pytest.approx(rref, rel=0.03)
    np.testing.assert_allclose(m.predict([10.0]), [m.Rref_], rtol=1e-12)


def test_temperature_models_need_data():
    with pytest.raises(ModelError, match="Q10Model: 2 valid .* pairs, fewer than 5"):
        Q10Model().fit([1.0, 2.0, np.nan], [1.0, 2.0, 3.0])
    with pytest.raises(ModelError, match="not fitted"):
        LloydTaylorModel().predict([1.0])


def test_doy_climatology_smooths_and_wraps():
    doy = np.tile(np.arange(1, 366), 2).astype(float)
    truth = 2 + np.cos(2 * np.pi * (doy - 1) / 365)
    r = truth.copy()
    r[(doy > 100) & (doy < 120)] = np.nan  # a gap shorter than the window is bridged
    m = DoyClimatology(window=31).fit(doy, r)
    pred = m.predict(doy)
    assert np.isfinite(pred).all()
    gap = (doy > 84) & (doy < 136)  # the gap plus half a window each side
    np.testing.assert_allclose(pred[~gap], truth[~gap], atol=0.05)
    np.testing.assert_allclose(pred[gap], truth[gap], atol=0.2)  # bridged from the gap's edges
    # wrap-around: 31 Dec and 1 Jan are neighbours
    assert m.predict([1.0])[0] == pytest.approx(m.predict([365.0])[0], abs=0.01)
    # a day far from any training value gets the overall training mean
    m2 = DoyClimatology(window=5).fit([10.0, 11.0], [1.0, 3.0])
    assert m2.predict([200.0])[0] == pytest.approx(2.0)


def test_fit_predict_site_uses_training_days_only():
    rng = np.random.default_rng(2)
    n = 300
    doy = (np.arange(n) % 365) + 1.0
    t = 10 + 8 * np.sin(2 * np.pi * doy / 365) + rng.normal(0, 0.5, n)
    obs = 1.5 * 2.0 ** ((t - 10) / 10)
    train = np.arange(n) < 240
    obs_test_poisoned = obs.copy()
    obs_test_poisoned[~train] = 1e6  # test values must not leak into the fit
    a = fit_predict_site(t, doy, obs, train)
    b = fit_predict_site(t, doy, obs_test_poisoned, train)
    for k in ("q10", "lt", "clim"):
        np.testing.assert_allclose(a[k], b[k])
    assert a["params"]["q10"][1] == pytest.approx(2.0, rel=0.02)
    # too few pairs: NaN prediction rather than a crash
    few = fit_predict_site(t, doy, obs, np.arange(n) < 3)
    assert np.isnan(few["q10"]).all() and np.isfinite(few["clim"]).all()
