"""globalflux.metrics cross-checked against hydroeval, scipy, scikit-learn and hand formulas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from globalflux import metrics

he = pytest.importorskip("hydroeval")


def _pair(seed=0, n=200, nan_frac=0.1):
    rng = np.random.default_rng(seed)
    obs = 2.0 + np.sin(np.linspace(0, 12, n)) + rng.normal(0, 0.3, n)
    sim = 0.8 * obs + 0.5 + rng.normal(0, 0.4, n)
    obs[rng.random(n) < nan_frac] = np.nan
    sim[rng.random(n) < nan_frac] = np.nan
    return obs, sim


def _he(fn, obs, sim):
    """hydroeval on the complete pairs (its evaluator does not drop NaN simulations)."""
    o, s = np.asarray(obs, float), np.asarray(sim, float)
    ok = np.isfinite(o) & np.isfinite(s)
    return np.asarray(fn(s[ok], o[ok]), dtype=float).ravel()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_nse_matches_hydroeval(seed):
    obs, sim = _pair(seed)
    assert metrics.nse(obs, sim) == pytest.approx(_he(he.nse, obs, sim)[0], rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_kge_and_components_match_hydroeval(seed):
    obs, sim = _pair(seed)
    k, r, a, b = _he(he.kge, obs, sim)
    ours = metrics.kge_components(obs, sim)
    np.testing.assert_allclose(ours, (k, r, a, b), rtol=1e-10)
    assert metrics.kge(obs, sim) == pytest.approx(k, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_rmse_matches_hydroeval_and_r_matches_scipy(seed):
    from scipy.stats import pearsonr

    obs, sim = _pair(seed)
    assert metrics.rmse(obs, sim) == pytest.approx(_he(he.rmse, obs, sim)[0], rel=1e-12)
    ok = np.isfinite(obs) & np.isfinite(sim)
    assert metrics.pearson_r(obs, sim) == pytest.approx(pearsonr(obs[ok], sim[ok])[0], rel=1e-10)


def test_hand_formulas_on_a_tiny_example():
    obs = np.array([1.0, 2.0, 3.0, 4.0])
    sim = np.array([1.5, 2.0, 2.5, 5.0])
    # NSE = 1 - sum((s-o)^2)/sum((o-mean)^2) = 1 - (0.25+0+0.25+1)/5 = 0.7
    assert metrics.nse(obs, sim) == pytest.approx(0.7)
    # KGE by hand: r, alpha = sd_s/sd_o (ddof 0), beta = mean_s/mean_o
    r = np.corrcoef(obs, sim)[0, 1]
    alpha = sim.std() / obs.std()
    beta = sim.mean() / obs.mean()
    assert metrics.kge(obs, sim) == pytest.approx(
        1 - np.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2))
    assert metrics.rmse(obs, sim) == pytest.approx(np.sqrt(1.5 / 4))
    assert metrics.bias(obs, sim) == pytest.approx(0.25)
    # the mean of the observations scores NSE 0; a perfect simulation 1 on both
    assert metrics.nse(obs, np.full(4, obs.mean())) == pytest.approx(0.0)
    assert metrics.nse(obs, obs) == 1.0 and metrics.kge(obs, obs) == pytest.approx(1.0)


def test_r2_equals_sklearn_r2_score():
    from sklearn.metrics import r2_score

    obs, sim = _pair(5, nan_frac=0.0)
    assert metrics.r2(obs, sim) == pytest.approx(r2_score(obs, sim), rel=1e-12)


def test_degenerate_inputs_give_nan():
    assert np.isnan(metrics.nse([1.0], [1.0]))
    assert np.isnan(metrics.nse([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))  # no variance in obs
    assert np.isnan(metrics.kge([np.nan, 1.0], [1.0, np.nan]))
    with pytest.raises(ValueError, match="differ in length"):
        metrics.nse([1.0, 2.0], [1.0])


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_subnormal=False)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(3, 40), elements=finite),
       arrays(np.float64, 40, elements=finite))
def test_property_nse_kge_agree_with_hydroeval(obs, sim_full):
    sim = sim_full[: obs.size]
    if obs.std() < 1e-6 or sim.std() < 1e-6 or abs(obs.mean()) < 1e-3:
        return  # degenerate: hydroeval divides by zero there, ours returns nan
    assert metrics.nse(obs, sim) == pytest.approx(_he(he.nse, obs, sim)[0], rel=1e-9, abs=1e-9)
    k_he = _he(he.kge, obs, sim)
    np.testing.assert_allclose(metrics.kge_components(obs, sim), k_he, rtol=1e-8, atol=1e-8)
    # NSE <= 1 and KGE <= 1 always
    assert metrics.nse(obs, sim) <= 1.0 + 1e-12
    assert metrics.kge(obs, sim) <= 1.0 + 1e-12
