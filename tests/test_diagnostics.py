"""Autocorrelation features, spikes and value classes on series with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from globalflux.diagnostics import (
    autocorrelation,
    correlate_features,
    score_by_class,
    site_autocorrelation,
    spike_mask,
    value_classes,
)


def test_autocorrelation_of_a_seasonal_cycle():
    t = np.arange(365 * 3)
    x = np.sin(2 * np.pi * t / 365.0)
    assert autocorrelation(x, 1) > 0.99  # smooth
    assert autocorrelation(x, 182) < -0.99  # half a year: anti-correlated
    assert autocorrelation(x, 365) > 0.99  # yearly cycle
    rng = np.random.default_rng(0)
    noise = rng.normal(size=2000)
    assert abs(autocorrelation(noise, 1)) < 0.1


def test_autocorrelation_with_gaps_uses_complete_pairs_only():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0] * 5)
    # by hand: pairs (x[t], x[t+1]) both finite
    u, v = x[:-1], x[1:]
    ok = np.isfinite(u) & np.isfinite(v)
    assert autocorrelation(x, 1, min_pairs=2) == pytest.approx(np.corrcoef(u[ok], v[ok])[0, 1])
    assert np.isnan(autocorrelation(x, 1, min_pairs=100))
    assert np.isnan(autocorrelation(x, 400))


def test_site_autocorrelation_and_feature_correlation():
    t = np.arange(800)
    rng = np.random.default_rng(1)
    series = {f"s{i}": np.sin(2 * np.pi * t / 365) + rng.normal(0, 0.2 * i, t.size) for i in range(8)}
    feats = site_autocorrelation(series)
    assert list(feats.columns) == ["acf_1", "acf_182", "acf_365"]
    assert feats.index.name == "site_id" and len(feats) == 8
    # noisier sites are less smooth; a score that falls with noise correlates positively
    scores = pd.DataFrame({"nse_test": [1 - 0.1 * i for i in range(8)]},
                          index=pd.Index([f"s{i}" for i in range(8)], name="site_id"))
    cor = correlate_features(feats, scores)
    row = cor[(cor.feature == "acf_1") & (cor.score == "nse_test")].iloc[0]
    assert row.n == 8 and row.rho > 0.9


def test_spike_mask_finds_injected_spikes():
    rng = np.random.default_rng(2)
    x = 5 + np.sin(np.arange(200) / 20) + rng.normal(0, 0.1, 200)
    x[[50, 120]] += 3.0
    x[80] = np.nan
    m = spike_mask(x, window=30, z=3.0)
    assert set(np.flatnonzero(m)) == {50, 120}
    assert not m[80]


def test_value_classes_and_scores():
    obs = np.arange(100, dtype=float)
    obs[0] = np.nan
    lab = value_classes(obs)
    assert lab[0] == ""
    assert (lab == "top5").sum() == 5 and (lab == "bottom5").sum() == 5
    assert (lab == "middle90").sum() == 89
    sim = obs.copy()
    sim[lab == "top5"] -= 10  # the model misses the peaks
    sc = score_by_class(obs, sim, lab, extra_masks={"all": np.isfinite(obs)}).set_index("class")
    assert sc.loc["top5", "bias"] == pytest.approx(-10)
    assert sc.loc["middle90", "rmse"] == 0.0
    assert sc.loc["all", "n"] == 99


def test_temporal_split_at_80_percent_of_own_observed_days():
    from globalflux.diagnostics import temporal_split

    obs = np.full(30, np.nan)
    obs[[2, 3, 5, 8, 9, 10, 20, 21, 22, 29]] = 1.0  # 10 observed days
    tr = temporal_split(obs, 0.8)
    # the 8th observed day is index 21: train up to and including it
    assert tr[:22].all() and not tr[22:].any()
    assert np.isfinite(obs[tr]).sum() == 8 and np.isfinite(obs[~tr]).sum() == 2
    assert temporal_split([1.0], 0.8).all()


def test_site_scores_and_skill_classes():
    from globalflux.diagnostics import site_scores, skill_class
    from globalflux.metrics import kge, nse

    rng = np.random.default_rng(3)
    obs = rng.normal(5, 1, 100)
    sim = obs + rng.normal(0, 0.5, 100)
    tr = np.arange(100) < 80
    sc = site_scores(obs, sim, tr, prefix="lstm_")
    assert sc["lstm_nse_test"] == pytest.approx(nse(obs[80:], sim[80:]))
    assert sc["lstm_kge_train"] == pytest.approx(kge(obs[:80], sim[:80]))
    cls = skill_class([0.6, 0.6, 0.4, 0.2, 0.9, np.nan], [0.5, 0.2, 0.5, 0.9, -0.1, 0.5])
    assert list(cls) == ["good", "fair", "fair", "poor", "poor", "n/a"]
