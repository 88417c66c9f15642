"""Site-grouped validation: no fold ever sees its held-out site in any fitted step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestRegressor
from sklearn.preprocessing import StandardScaler

import globalflux.models.forest as forest_mod
import globalflux.zones as zones_mod
from globalflux.errors import DataError, ModelError
from globalflux.models.forest import UnifiedForestRegressor, ZonedForestRegressor
from globalflux.validation import cross_predict, loso, loso_folds, score, spatial_block_folds
from globalflux.zones import ZoneClassifier

FACTORS = ["f0", "f1", "f2"]
PREDICTORS = ["p0", "p1", "p2", "p3"]


def leak_table(n_sites=14, per_site=3, seed=0):
    """Every site has unique factor values (constant within the site); every row a unique y."""
    rng = np.random.RandomState(seed)
    rows = []
    for s in range(n_sites):
        f = rng.normal(size=3) * [1.0, 2.0, 3.0] + [0.0, 10.0 * (s % 2), 0.0]
        for _ in range(per_site):
            p = rng.normal(size=4)
            rows.append({"site": f"site{s:02d}", "f0": f[0], "f1": f[1], "f2": f[2],
                         "p0": p[0], "p1": p[1], "p2": p[2], "p3": p[3],
                         "y": p[0] + (f[1] > 5) * p[1] + 0.01 * rng.normal()})
    return pd.DataFrame(rows)


class Recorder:
    """Wraps every fitted step and maps the rows it was fitted on back to their sites.

    * StandardScaler.fit sees zone-factor rows: site from the f0 value.
    * PCA.fit sees scaled factor rows: undo the last scaler -> f0 -> site.
    * pso_kmeans sees PCA scores: undo the last PCA and scaler -> f0 -> site.
    * correlation_filter sees predictor rows; RandomForestRegressor.fit sees (X, y): rows from the
      unique y values (forests) or the predictor values (filter) -> site.
    """

    def __init__(self, table: pd.DataFrame):
        self.site_of_f0 = dict(zip(table["f0"].round(9), table["site"], strict=True))
        self.site_of_y = dict(zip(table["y"].round(9), table["site"], strict=True))
        self.site_of_p0 = dict(zip(table["p0"].round(9), table["site"], strict=True))
        self.calls: list[tuple[str, set[str]]] = []
        self.last_scaler = None
        self.last_pca = None

    def _sites(self, mapping, values) -> set[str]:
        out = set()
        for v in np.asarray(values, dtype="float64").round(9):
            if v not in mapping:
                raise AssertionError(f"row value {v} not found in the table: the recorder is broken")
            out.add(mapping[v])
        return out

    def install(self, monkeypatch):
        rec = self
        scaler_fit, pca_fit, rf_fit = StandardScaler.fit, PCA.fit, RandomForestRegressor.fit
        pso, corr = zones_mod.pso_kmeans, forest_mod.correlation_filter

        def scaler(self_, X, y=None, sample_weight=None):
            out = scaler_fit(self_, X, y, sample_weight)
            rec.last_scaler = self_
            rec.calls.append(("scaler", rec._sites(rec.site_of_f0, np.asarray(X)[:, 0])))
            return out

        def pca(self_, X, y=None):
            Xr = rec.last_scaler.inverse_transform(np.asarray(X))
            out = pca_fit(self_, X, y)
            rec.last_pca = self_
            rec.calls.append(("pca", rec._sites(rec.site_of_f0, Xr[:, 0])))
            return out

        def zones(X, k, **kw):
            Xr = rec.last_scaler.inverse_transform(rec.last_pca.inverse_transform(X))
            rec.calls.append(("zones", rec._sites(rec.site_of_f0, Xr[:, 0])))
            return pso(X, k, **kw)

        def corr_filter(X, threshold=0.9):
            rec.calls.append(("feature_selection", rec._sites(rec.site_of_p0, X["p0"])))
            return corr(X, threshold)

        def rf(self_, X, y, sample_weight=None):
            rec.calls.append(("forest", rec._sites(rec.site_of_y, y)))
            return rf_fit(self_, X, y, sample_weight)

        monkeypatch.setattr(StandardScaler, "fit", scaler)
        monkeypatch.setattr(PCA, "fit", pca)
        monkeypatch.setattr(RandomForestRegressor, "fit", rf)
        monkeypatch.setattr(zones_mod, "pso_kmeans", zones)
        monkeypatch.setattr(forest_mod, "correlation_filter", corr_filter)


def _zoned():
    return ZonedForestRegressor(
        zone_factors=FACTORS, predictors=["p0", "p1", "p2", "p3", "f1"],
        zone_classifier=ZoneClassifier(n_zones=2, variance=1.0, n_particles=4, n_iter=3),
        n_estimators=5, eliminate=True, min_features=2, inner_cv="loso", min_zone_sites=3,
        random_state=0)


def test_no_loso_fold_sees_its_held_out_site_in_any_fitted_step(monkeypatch):
    table = leak_table()
    X = table[FACTORS + PREDICTORS]
    y = table["y"].to_numpy()
    g = table["site"].to_numpy()
    rec = Recorder(table)
    rec.install(monkeypatch)
    folds = loso_folds(g)
    for i, (train, test) in enumerate(folds):
        held_out = set(g[test])
        assert len(held_out) == 1
        start = len(rec.calls)
        pred = cross_predict(_zoned(), X, y, g, [(train, test)])
        calls = rec.calls[start:]
        kinds = {k for k, _ in calls}
        # every step was fitted (the recorder saw it) ...
        assert kinds == {"scaler", "pca", "zones", "feature_selection", "forest"}, kinds
        # ... and none of them on a row of the held-out site
        for kind, sites in calls:
            assert not (sites & held_out), f"fold {i}: {kind} was fitted on {held_out}"
        # the training steps saw all the other sites (the recorder is not blind)
        assert set().union(*(s for k, s in calls if k == "scaler")) == set(g[train])
        assert len(pred) == len(test)


def test_the_recorder_catches_a_leaky_split(monkeypatch):
    table = leak_table(n_sites=8)
    X = table[FACTORS + PREDICTORS]
    y, g = table["y"].to_numpy(), table["site"].to_numpy()
    rec = Recorder(table)
    rec.install(monkeypatch)
    # preprocessing on all data before the split (the trap): the fitted steps see every site
    _zoned().fit(X, y, groups=g)
    seen = set().union(*(s for _, s in rec.calls))
    assert seen == set(g)
    assert {"scaler", "pca", "zones", "feature_selection", "forest"} == {k for k, _ in rec.calls}


def test_loso_table_and_scores():
    table = leak_table(n_sites=10)
    X = table[FACTORS + PREDICTORS]
    X.index = X.index + 100  # the result keeps the table's index
    res = loso(_zoned(), X, table["y"], table["site"], with_std=True)
    assert list(res.columns) == ["site_id", "y_obs", "y_pred", "fold", "zone", "y_std"]
    assert res.index.equals(X.index)
    assert res["fold"].nunique() == 10
    assert (res.groupby("site_id")["fold"].nunique() == 1).all()
    s = score(res)
    assert list(s.columns) == ["group", "n", "n_sites", "r2", "rmse", "bias"]
    assert s.iloc[0]["group"] == "all" and s.iloc[0]["n"] == len(table)
    assert set(s["group"][1:]) <= {"0", "1"}
    from globalflux.metrics import r2

    assert s.iloc[0]["r2"] == pytest.approx(r2(res["y_obs"], res["y_pred"]))
    # a factory works like an estimator
    res2 = loso(_zoned, X, table["y"], table["site"])
    np.testing.assert_allclose(res2["y_pred"], res["y_pred"])
    # the unified forest has no zone column
    assert "zone" not in loso(UnifiedForestRegressor(n_estimators=5, eliminate=False), X,
                              table["y"], table["site"]).columns


def test_spatial_block_folds():
    lat = np.array([10.1, 10.2, 14.9, 30.0, -10.0, -10.0, 89.9])
    lon = np.array([20.1, 24.0, 20.0, 20.0, 179.9, -179.9, 0.0])
    f = spatial_block_folds(lat, lon, 5.0)
    assert f[0] == f[1] == f[2] and len(set(f[[0, 3, 4, 5, 6]])) == 5
    f3 = spatial_block_folds(lat, lon, 5.0, n_folds=3, random_state=1)
    assert set(f3) == {0, 1, 2} and f3[0] == f3[1] == f3[2]
    np.testing.assert_array_equal(f3, spatial_block_folds(lat, lon, 5.0, n_folds=3, random_state=1))
    with pytest.raises(DataError, match="block_deg=0"):
        spatial_block_folds(lat, lon, 0)
    with pytest.raises(DataError, match="n_folds=9 with 5 occupied blocks"):
        spatial_block_folds(lat, lon, 5.0, n_folds=9)
    with pytest.raises(DataError, match="missing coordinates"):
        spatial_block_folds([np.nan], [0.0], 1.0)


def test_cross_predict_with_fold_numbers_and_leak_guard():
    table = leak_table(n_sites=8)
    X = table[FACTORS + PREDICTORS]
    y, g = table["y"].to_numpy(), table["site"].to_numpy()
    folds = np.arange(len(table)) // 6 % 4  # whole sites (3 rows each, 2 sites per block)
    res = cross_predict(UnifiedForestRegressor(n_estimators=5, eliminate=False), X, y, g, folds)
    assert len(res) == len(table) and res["fold"].nunique() == 4
    bad = np.arange(len(table)) % 2  # splits sites across folds
    with pytest.raises(ModelError, match="are in both the training and test rows"):
        cross_predict(UnifiedForestRegressor(n_estimators=5), X, y, g, bad)
    with pytest.raises(DataError, match="X has 24 rows, y 3"):
        loso(UnifiedForestRegressor(), X, y[:3], g)
    with pytest.raises(DataError, match="Leave-one-site-out needs at least 2 sites"):
        loso_folds(["a", "a"])
