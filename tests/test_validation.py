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


# ------------------------------------------------------------------- schemes and locations
from globalflux.validation import (  # noqa: E402
    SCHEMES,
    location_groups,
    record_kfold_folds,
    scheme_folds,
    validate_schemes,
)


def _offset(lat, lon, km_north=0.0, km_east=0.0):
    """A point km_north/km_east away (small distances, spherical Earth)."""
    dlat = km_north / 111.195
    dlon = km_east / (111.195 * np.cos(np.deg2rad(lat)))
    return lat + dlat, lon + dlon


def test_location_clustering_puts_sites_within_location_km_in_one_group():
    lat0, lon0 = 45.0, 10.0
    pts = [(lat0, lon0)]
    pts.append(_offset(lat0, lon0, km_east=4.0))       # 4 km: same location
    pts.append(_offset(lat0, lon0, km_east=8.0))       # 4 km from the 2nd: chained, same location
    pts.append(_offset(lat0, lon0, km_north=20.0))     # 20 km away: its own location
    pts.append((lat0, lon0))                           # repeated site: same location
    pts.append((-30.0, 179.99))                        # across the antimeridian ...
    pts.append(_offset(-30.0, -179.99, km_east=1.0))   # ... 2.9 km apart: one location
    lat, lon = np.array(pts).T
    loc = location_groups(lat, lon, location_km=5.0)
    assert loc[0] == loc[1] == loc[2] == loc[4]
    assert loc[3] != loc[0]
    assert loc[5] == loc[6] and loc[5] not in (loc[0], loc[3])
    # every pair within location_km shares a group, whatever the distance threshold
    rng = np.random.RandomState(3)
    la = 40 + rng.uniform(0, 0.5, 60)
    lo = 5 + rng.uniform(0, 0.5, 60)
    for km in (1.0, 3.0, 7.0):
        g = location_groups(la, lo, location_km=km)
        from sklearn.metrics.pairwise import haversine_distances

        d = haversine_distances(np.deg2rad(np.c_[la, lo])) * 6371.0088
        close = d <= km * 0.999
        assert (g[:, None] == g[None, :])[close].all()
    # a study joins its sites; a 0 km threshold keeps distinct points apart
    g = location_groups([0.0, 10.0, 20.0], [0.0, 0.0, 0.0], location_km=5.0, study=[7, 7, None])
    assert g[0] == g[1] != g[2]
    assert len(set(location_groups(lat, lon, location_km=0.0))) == 6
    with pytest.raises(DataError, match="location_km=-1"):
        location_groups(lat, lon, location_km=-1)


def _located_table():
    """leak_table with 14 sites in 7 locations (pairs of sites 1 km apart)."""
    table = leak_table(n_sites=14)
    site_no = table["site"].str[4:].astype(int).to_numpy()
    lat = 10.0 * (site_no // 2)
    lat, lon = _offset(lat, 0.0, km_east=1.0 * (site_no % 2))
    table["lat"], table["lon"] = lat, lon
    table["location"] = location_groups(lat, lon, location_km=5.0)
    assert table["location"].nunique() == 7
    return table


class LocationRecorder(Recorder):
    """Recorder that also knows the location-mean f0 of each location (zones are fitted on one
    row per location when fit gets location ids): such a row maps to all sites of the location."""

    def __init__(self, table: pd.DataFrame):
        super().__init__(table)
        means = table.groupby("location")["f0"].mean().round(9)
        sites = table.groupby("location")["site"].unique()
        self.site_of_f0.update({means[k]: tuple(sites[k]) for k in means.index})

    def _sites(self, mapping, values) -> set[str]:
        out: set[str] = set()
        for v in np.asarray(values, dtype="float64").round(9):
            if v not in mapping:
                raise AssertionError(f"row value {v} not found in the table: the recorder is broken")
            hit = mapping[v]
            out.update(hit if isinstance(hit, tuple) else (hit,))
        return out


def test_no_lolo_fold_trains_on_a_held_out_location(monkeypatch):
    table = _located_table()
    X = table[FACTORS + PREDICTORS]
    y, g, loc = table["y"].to_numpy(), table["site"].to_numpy(), table["location"].to_numpy()
    rec = LocationRecorder(table)
    rec.install(monkeypatch)
    guard, folds = scheme_folds("lolo", sites=g, locations=loc)
    assert len(folds) == 7
    site_loc = dict(zip(g, loc, strict=True))
    for train, test in folds:
        held_out_sites = set(g[test])
        assert len(held_out_sites) == 2 and len({site_loc[s] for s in held_out_sites}) == 1
        start = len(rec.calls)
        cross_predict(_zoned(), X, y, guard, [(train, test)], fit_groups=loc)
        calls = rec.calls[start:]
        assert {k for k, _ in calls} == {"scaler", "pca", "zones", "feature_selection", "forest"}
        for kind, sites in calls:
            assert not (sites & held_out_sites), f"{kind} was fitted on a held-out location"
    # leave-one-site-out, by contrast, trains on the held-out site's neighbour 1 km away
    _, loso_f = scheme_folds("loso", sites=g, locations=loc)
    train, test = loso_f[0]
    assert site_loc[g[test][0]] in {site_loc[s] for s in g[train]}


def test_validate_schemes_table_and_components():
    from globalflux.models.forest import ZoneChoiceForestRegressor, ZoneFeatureForestRegressor

    table = _located_table()
    X = table[FACTORS + PREDICTORS]
    y, g, loc = table["y"].to_numpy(), table["site"].to_numpy(), table["location"].to_numpy()
    zc = ZoneClassifier(n_zones=2, variance=1.0, n_particles=4, n_iter=3)
    models = {
        "zone_choice": ZoneChoiceForestRegressor(zone_factors=FACTORS, zone_classifier=zc,
                                                 n_estimators=8, eliminate=False,
                                                 min_zone_sites=2, choice_cv=2),
        "zone_feature": ZoneFeatureForestRegressor(zone_factors=FACTORS, zone_classifier=zc,
                                                   n_estimators=8, eliminate=False),
    }
    tab, preds = validate_schemes(models, X, y, sites=g, locations=loc, k=4)
    assert list(tab.columns) == ["scheme", "model", "n", "n_groups", "r2", "rmse", "bias"]
    assert set(tab["scheme"]) == set(SCHEMES)
    assert set(tab["model"]) == {"zone_choice", "zoned", "unified", "zone_feature"}
    assert (tab["n"] == len(table)).all()
    lolo = tab[tab["scheme"] == "lolo"]
    assert (lolo["n_groups"] == 7).all()
    assert (tab.loc[tab["scheme"] == "loso", "n_groups"] == 14).all()
    p = preds[("lolo", "zoned")]
    assert (p.groupby("location_id")["fold"].nunique() == 1).all()
    assert p["site_id"].nunique() == 14
    from globalflux.metrics import r2

    row = lolo[lolo["model"] == "zoned"].iloc[0]
    assert row["r2"] == pytest.approx(r2(p["y_obs"], p["y_pred"]))


def test_record_kfold_folds_are_seeded_and_balanced():
    f = record_kfold_folds(23, 5, random_state=2)
    assert np.bincount(f).tolist() == [5, 5, 5, 4, 4]
    np.testing.assert_array_equal(f, record_kfold_folds(23, 5, random_state=2))
    with pytest.raises(DataError, match="k=1 folds"):
        record_kfold_folds(10, 1)
    with pytest.raises(DataError, match="validation scheme 'x'"):
        scheme_folds("x", sites=["a"], locations=["a"])
