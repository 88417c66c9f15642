"""Zoned and unified random forests: feature steps, zones, fallback, uncertainty, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from globalflux.errors import DataError, ModelError
from globalflux.models.forest import (
    ForestFitError,
    UnifiedForestRegressor,
    ZonedForestRegressor,
    correlation_filter,
    selection_table,
)
from globalflux.validation import loso, score
from globalflux.zones import ZoneClassifier


def two_zone_table(n_sites=36, per_site=4, seed=0, noise=0.1):
    """Two well separated zones (by factors F1, F2) with opposite responses:
    zone A: y = 2 p0, zone B: y = -2 p1; p2, p3 are noise, p4 ~ p0 (r > 0.99)."""
    rng = np.random.RandomState(seed)
    rows = []
    for s in range(n_sites):
        zone = s % 2
        f = rng.normal([-3.0, -3.0] if zone == 0 else [3.0, 3.0], 0.5)
        for _ in range(per_site):
            p = rng.normal(size=4)
            y = (2 * p[0] if zone == 0 else -2 * p[1]) + noise * rng.normal()
            rows.append({"site": f"s{s:02d}", "zone_true": zone, "F1": f[0], "F2": f[1],
                         "p0": p[0], "p1": p[1], "p2": p[2], "p3": p[3],
                         "p4": p[0] + 0.01 * rng.normal(), "y": y})
    return pd.DataFrame(rows)


def small_zoned(**kw):
    params = dict(zone_factors=["F1", "F2"], predictors=["p0", "p1", "p2", "p3", "p4"],
                  zone_classifier=ZoneClassifier(n_zones=2, n_particles=5, n_iter=5),
                  n_estimators=25, inner_cv=4, min_features=2, random_state=0)
    params.update(kw)
    return ZonedForestRegressor(**params)


def test_correlation_filter_drops_one_of_a_correlated_pair_and_constants():
    rng = np.random.RandomState(0)
    a = rng.normal(size=200)
    X = pd.DataFrame({"a": a, "a2": a + 0.01 * rng.normal(size=200), "b": rng.normal(size=200),
                      "const": np.ones(200), "empty": np.nan})
    kept = correlation_filter(X, 0.9)
    assert "b" in kept and "const" not in kept and "empty" not in kept
    assert len({"a", "a2"} & set(kept)) == 1
    assert correlation_filter(X, 1.0) == ["a", "a2", "b"]


def test_zoned_forest_recovers_zones_and_per_zone_drivers():
    df = two_zone_table()
    X = df[["F1", "F2", "p0", "p1", "p2", "p3", "p4"]]
    m = small_zoned().fit(X, df["y"], groups=df["site"])
    # zones = the true zones (up to label order)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(df["zone_true"], m.predict_zone(X)) == 1.0
    # each zone's most important predictor is its own driver (p0 or its twin p4 / p1)
    top = {m.site_zones_[f"s{s:02d}"]: m.selected_features_[m.site_zones_[f"s{s:02d}"]][0] for s in (0, 1)}
    zone_a, zone_b = m.site_zones_["s00"], m.site_zones_["s01"]
    assert top[zone_a] in ("p0", "p4") and top[zone_b] == "p1"
    # the |r| > 0.9 filter keeps only one of p0/p4
    for feats in m.selected_features_.values():
        assert len({"p0", "p4"} & set(feats)) <= 1
    # Table I: candidates x zones, rank where chosen
    t = m.table_selected_
    assert list(t.index) == ["p0", "p1", "p2", "p3", "p4"]
    assert list(t.columns) == ["zone 0", "zone 1", "n_models"]
    assert t.loc["p1", f"zone {zone_b}"] == 1
    assert set(m.feature_importances_) == {0, 1}
    assert m.selection_history_[0]["n_features"].iloc[0] == 4  # after the correlation filter


def test_zoned_beats_unified_in_loso_when_responses_differ_by_zone():
    df = two_zone_table(n_sites=24, per_site=3)
    X = df[["F1", "F2", "p0", "p1", "p2", "p3", "p4"]]
    zoned = loso(small_zoned(eliminate=False), X, df["y"].to_numpy(), df["site"].to_numpy())
    unified = loso(UnifiedForestRegressor(predictors=["p0", "p1", "p2", "p3", "p4"], n_estimators=25,
                                          eliminate=False), X, df["y"].to_numpy(), df["site"].to_numpy())
    sz, su = score(zoned), score(unified)
    assert "zone" in zoned.columns and "zone" not in unified.columns
    assert sz.iloc[0]["r2"] > 0.5
    assert sz.iloc[0]["r2"] > su.iloc[0]["r2"] + 0.1


def test_elimination_drops_noise_and_keeps_drivers():
    rng = np.random.RandomState(1)
    n = 240
    X = pd.DataFrame(rng.normal(size=(n, 7)), columns=[f"v{i}" for i in range(7)])
    y = 3 * X["v0"] + 2 * X["v1"] + 0.1 * rng.normal(size=n)
    groups = np.repeat(np.arange(60), 4)
    m = UnifiedForestRegressor(n_estimators=40, max_features=1.0, inner_cv=4, min_features=2,
                               random_state=0).fit(X, y, groups=groups)
    hist = m.selection_history_
    assert {"v0", "v1"} <= set(m.selected_features_)
    assert len(m.selected_features_) < 7
    # every accepted step kept (or raised) the inner score; the last step is a rejection or the floor
    acc = hist[hist["accepted"]]
    assert (np.diff(acc["score"]) >= 0).all()
    assert (not hist["accepted"].iloc[-1]) or len(m.selected_features_) == 2


def test_no_elimination_keeps_the_filtered_set():
    df = two_zone_table(n_sites=12, per_site=3)
    X = df[["F1", "F2", "p0", "p1", "p2", "p3", "p4"]]
    m = UnifiedForestRegressor(eliminate=False, n_estimators=10).fit(X, df["y"], groups=df["site"])
    # F1 ~ F2 (|r| > 0.9: both separate the zones) and p0 ~ p4: one of each pair goes
    assert len(m.selected_features_) == 5 and m.selection_history_.empty
    assert len({"F1", "F2"} & set(m.selected_features_)) == 1


def test_small_zone_falls_back_to_the_all_sites_forest():
    df = two_zone_table(n_sites=12, per_site=3)
    X = df[["F1", "F2", "p0", "p1", "p2", "p3", "p4"]]
    m = small_zoned(min_zone_sites=7, eliminate=False).fit(X, df["y"], groups=df["site"])
    assert m.fallback_zones_ == [0, 1] and m.zones_ == []
    assert "predicted by the all-sites forest" in m.notes_[0]
    assert np.isfinite(m.predict(X)).all()


def test_uncertainty_from_tree_spread():
    df = two_zone_table(n_sites=12, per_site=3)
    X = df[["F1", "F2", "p0", "p1", "p2", "p3", "p4"]]
    for m in (small_zoned(eliminate=False), UnifiedForestRegressor(n_estimators=25, eliminate=False)):
        m.fit(X, df["y"], groups=df["site"])
        mean, sd = m.predict(X), m.predict_std(X)
        q = m.predict_quantiles(X, (0.05, 0.5, 0.95))
        assert q.shape == (len(X), 3) and (sd >= 0).all() and sd.max() > 0
        assert (q[:, 0] <= q[:, 1]).all() and (q[:, 1] <= q[:, 2]).all()
        assert ((mean >= q[:, 0] - 1e-9) & (mean <= q[:, 2] + 1e-9)).mean() > 0.9
        with pytest.raises(ModelError, match="predict_quantiles: quantiles \\[1.5\\]"):
            m.predict_quantiles(X, [1.5])


def test_rows_without_zone_factors_predict_nan_and_fit_rejects_them():
    df = two_zone_table(n_sites=12, per_site=3)
    X = df[["F1", "F2", "p0", "p1", "p2", "p3", "p4"]].copy()
    m = small_zoned(eliminate=False).fit(X, df["y"], groups=df["site"])
    X2 = X.copy()
    X2.loc[0, "F1"] = np.nan
    pred = m.predict(X2)
    assert np.isnan(pred[0]) and np.isfinite(pred[1:]).all()
    with pytest.raises(DataError, match=r"zone factors: zone factor\(s\) \['F1'\] are missing in 1 row"):
        small_zoned().fit(X2, df["y"], groups=df["site"])


def test_bad_inputs_have_clear_messages():
    df = two_zone_table(n_sites=12, per_site=3)
    X = df[["F1", "F2", "p0", "p1"]]
    with pytest.raises(DataError, match="forest.zone_factors: column 'TEM' is not in the training table"):
        small_zoned(zone_factors=["TEM"], predictors=None).fit(X, df["y"])
    with pytest.raises(DataError, match="groups: 3 site ids for 36 rows"):
        small_zoned(predictors=None).fit(X, df["y"], groups=["a", "b", "c"])
    with pytest.raises(ModelError, match="forest.engine: forest engine 'nope' is not available. Choose one of: sklearn"):
        UnifiedForestRegressor(engine="nope").fit(X, df["y"])
    with pytest.raises(ModelError, match="forest.inner_cv"):
        UnifiedForestRegressor(inner_cv=1).fit(X, df["y"])
    with pytest.raises(ForestFitError, match="n_samples = 1"):
        UnifiedForestRegressor().fit(X.iloc[:1], df["y"].iloc[:1])
    with pytest.raises(ModelError, match="2 samples \\(sites\\) for 3 zones"):
        small_zoned(zone_classifier=ZoneClassifier(n_zones=3), predictors=None).fit(
            X.iloc[:6], df["y"].iloc[:6], groups=df["site"].iloc[:6])


def test_pickle_round_trip_predicts_the_same():
    df = two_zone_table(n_sites=12, per_site=3)
    X = df[["F1", "F2", "p0", "p1", "p2", "p3", "p4"]]
    m = small_zoned(eliminate=False).fit(X, df["y"], groups=df["site"])
    m2 = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(m.predict(X), m2.predict(X))


def test_selection_table_layout():
    t = selection_table({"zone 0": pd.Series([0.7, 0.3], index=["b", "a"]),
                         "unified": pd.Series([1.0], index=["c"])}, ["a", "b", "c", "d"])
    assert t.loc["b", "zone 0"] == 1 and t.loc["a", "zone 0"] == 2 and pd.isna(t.loc["c", "zone 0"])
    assert list(t["n_models"]) == [1, 1, 1, 0]


def test_lightgbm_engine_routes_through_models_fast():
    pytest.importorskip("lightgbm")
    df = two_zone_table(n_sites=12, per_site=3)
    X = df[["F1", "F2", "p0", "p1", "p2", "p3", "p4"]]
    m = UnifiedForestRegressor(engine="lightgbm", n_estimators=10, inner_cv=3).fit(
        X, df["y"], groups=df["site"])
    assert type(m.model_.forest).__name__ == "FastForestRegressor"
    assert np.isfinite(m.predict(X)).all()
    assert m.feature_importances_.sum() == pytest.approx(1.0)
    with pytest.raises(ModelError, match="exposes no per-tree predictions.*Use engine 'sklearn'"):
        m.predict_std(X)


def test_synthetic_world_zones_and_per_zone_responses_recovered():
    """The demo's synthetic world, with the same estimators: the zones come back and the zoned
    forest recovers the per-zone RH response better than the unified one (SYNTHETIC data)."""
    from sklearn.metrics import adjusted_rand_score
    from sklearn.model_selection import GroupKFold

    from globalflux.metrics import r2
    from globalflux.testing import FACTORS, PREDICTORS, make_world
    from globalflux.validation import cross_predict

    world = make_world(ny=96, nx=96, n_sites=40, min_sites_per_zone=6)
    tt = world.training_table()
    X = tt[list(PREDICTORS) + list(FACTORS)]
    g = tt["site_id"].to_numpy()
    k = int(tt["zone_true"].nunique())
    zoned = ZonedForestRegressor(zone_factors=list(FACTORS), zone_classifier=ZoneClassifier(n_zones=k),
                                 n_estimators=40, eliminate=False, min_zone_sites=3, random_state=0)
    zoned.fit(X, tt["rh"], groups=g)
    truth = tt.groupby("site_id")["zone_true"].first()
    assert adjusted_rand_score(truth.loc[zoned.site_zones_.index], zoned.site_zones_) >= 0.8
    folds = list(GroupKFold(n_splits=5).split(X, groups=g))
    pz = cross_predict(zoned, X, tt["rh"], g, folds)
    pu = cross_predict(UnifiedForestRegressor(n_estimators=40, eliminate=False, random_state=0),
                       X, tt["rh"], g, folds)
    true = tt.loc[pz.index, "rh_true"]
    assert r2(true, pz["y_pred"]) > 0.6
    assert r2(true, pz["y_pred"]) > r2(tt.loc[pu.index, "rh_true"], pu["y_pred"])
