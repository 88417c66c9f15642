"""The synthetic world: seeded, realistic in range and structure, and with the known answer
(zones and a different RH response per zone) that the demo and recovery tests rely on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from globalflux.config import SyntheticConfig
from globalflux.errors import DataError
from globalflux.provenance import SYNTHETIC_NOTE
from globalflux.testing import FACTORS, PREDICTORS, PROTOTYPES, RH_UNITS, make_world

LONG_COLUMNS = ["site_id", "lat", "lon", "igbp", "time", "variable", "value", "units", "n"]


@pytest.fixture(scope="module")
def world():
    return make_world(ny=96, nx=96, n_sites=40, min_sites_per_zone=6)


@pytest.fixture(scope="module")
def world_default():
    return make_world()


def test_default_world_is_at_least_256_pixels_at_500m(world_default):
    w = world_default
    assert w.cube.sizes["y"] >= 256 and w.cube.sizes["x"] >= 256
    assert w.grid.resolution == pytest.approx(0.0045)  # ~500 m
    assert w.cube.sizes["time"] == 46  # one year of MODIS 8-day periods
    assert w.cube["period_days"].values[-1] == 6  # 2020 is a leap year: last period 6 days
    assert len(w.sites) == 60 and w.zones["n_sites"].min() >= 6


def test_same_seed_same_world_other_seed_other_world():
    a = make_world(ny=32, nx=32, n_sites=12, min_sites_per_zone=2)
    b = make_world(ny=32, nx=32, n_sites=12, min_sites_per_zone=2)
    c = make_world(ny=32, nx=32, n_sites=12, min_sites_per_zone=2, seed=7)
    assert a.cube.identical(b.cube) and a.truth.identical(b.truth)
    pd.testing.assert_frame_equal(a.long, b.long)
    assert not np.array_equal(a.truth["zone_true"].values, c.truth["zone_true"].values)


def test_config_object_and_overrides_agree():
    cfg = SyntheticConfig(ny=32, nx=32, n_sites=12, min_sites_per_zone=2, seed=3)
    a = make_world(cfg)
    b = make_world(seed=3, ny=32, nx=32, n_sites=12, min_sites_per_zone=2)
    assert a.config == b.config and a.cube.identical(b.cube)


def test_everything_is_marked_synthetic(world):
    for obj in (world.cube, world.truth):
        assert obj.attrs["synthetic"] == "true" and obj.attrs["comment"] == SYNTHETIC_NOTE
    for df in (world.long, world.sites, world.zones, world.training_table()):
        assert df.attrs["synthetic"] == "true" and df.attrs["comment"] == SYNTHETIC_NOTE


def test_crs_grid_and_cf_attributes(world):
    cube = world.cube
    assert cube.rio.crs.to_epsg() == 4326
    assert cube.rio.transform().almost_equals(world.grid.transform, precision=1e-9)
    np.testing.assert_allclose(cube["x"].values, world.grid.x)
    np.testing.assert_allclose(cube["y"].values, world.grid.y)
    assert (np.diff(cube["y"].values) < 0).all()  # north first
    for name in list(PREDICTORS) + list(FACTORS) + ["land_mask"]:
        assert "units" in cube[name].attrs and "long_name" in cube[name].attrs, name
    for name in PREDICTORS:
        assert cube[name].dims == ("time", "y", "x") and cube[name].dtype == np.float32
    for name in FACTORS:
        assert cube[name].dims == ("y", "x")
    assert world.truth["rh_true"].attrs["units"] == RH_UNITS


def test_land_and_sea(world):
    land = world.cube["land_mask"].values
    assert land.dtype == bool
    share_sea = 1 - land.mean()
    assert 0.1 < share_sea < 0.35  # sea_fraction 0.2 on the east side
    assert land[:, 0].all() and not land[:, -1].any()
    for name in list(PREDICTORS[:-1]) + list(FACTORS):
        v = world.cube[name].values
        assert np.isnan(v[..., ~land]).all(), name
        assert np.isfinite(v[..., land]).all(), name
    z = world.truth["zone_true"].values
    assert (z[~land] == -1).all() and (z[land] >= 0).all()
    assert set(np.unique(z[land])) == set(range(world.config.n_zones))


def test_static_factors_have_realistic_ranges_and_structure(world):
    c = world.cube
    land = c["land_mask"].values
    tem, pre, dem = c["tem"].values[land], c["pre"].values[land], c["dem"].values[land]
    assert -10 < tem.min() and tem.max() < 30
    assert 150 < pre.min() and pre.max() < 3500
    assert dem.min() >= 0 and dem.max() < 4000
    assert 0 < c["ndvi"].values[land].min() and c["ndvi"].values[land].max() < 1
    assert -1 < c["lswi"].values[land].min() and c["lswi"].values[land].max() < 1
    assert (c["soc"].values[land] > 0).all()
    # lapse rate: within a zone, higher ground is colder
    z = world.truth["zone_true"].values[land]
    for k in range(world.config.n_zones):
        sel = z == k
        assert np.corrcoef(dem[sel], tem[sel])[0, 1] < -0.5
    # spatial structure: neighbours are alike (smooth fields, not white noise)
    t = c["tem"].values
    both = land[:, 1:] & land[:, :-1]
    assert np.corrcoef(t[:, 1:][both], t[:, :-1][both])[0, 1] > 0.9


def test_predictors_have_realistic_seasonality(world):
    c = world.cube
    land = c["land_mask"].values
    month = pd.DatetimeIndex(c["time"].values).month
    summer = np.isin(month, [6, 7, 8])
    winter = np.isin(month, [12, 1, 2])

    def mean(name, sel):
        return float(np.nanmean(c[name].values[sel][:, land]))

    for name in ("lst_day", "lst_night", "gpp", "ndvi_8d", "fpar", "lai", "et"):
        assert mean(name, summer) > mean(name, winter), name
    assert mean("lst_day", summer) > mean("lst_night", summer)
    assert np.nanmin(c["gpp"].values) >= 0 and np.nanmax(c["gpp"].values) < 25
    assert np.nanmax(c["fpar"].values) <= 0.95 and np.nanmin(c["et"].values) >= 0
    assert 0.8 < np.corrcoef(c["ndvi_8d"].values[:, land].ravel(), c["evi"].values[:, land].ravel())[0, 1]


def test_rh_true_is_the_documented_per_zone_response(world):
    """Recompute RH from the latent drivers and the zone table, independently of the module."""
    t = world.truth
    land = world.cube["land_mask"].values
    z = t["zone_true"].values
    p = PROTOTYPES.iloc[: world.config.n_zones]
    ts, w = t["tsoil"].values[:, land], t["soil_water"].values[:, land]
    gpp = world.cube["gpp"].values[:, land]
    soc = world.cube["soc"].values[land]
    zl = z[land]
    a, b = p["moist_a"].to_numpy()[zl], p["moist_b"].to_numpy()[zl]
    wopt = a / (a + b)
    fm = w ** a * (1 - w) ** b / (wopt ** a * (1 - wopt) ** b)
    soc_mean = np.array([soc[zl == k].mean() for k in range(len(p))])[zl]
    expect = (p["r_ref"].to_numpy()[zl] * p["q10"].to_numpy()[zl] ** ((ts - 10) / 10) * fm
              * (1 + p["gpp_gain"].to_numpy()[zl] * gpp / 10) * (soc / soc_mean) ** 0.3)
    np.testing.assert_allclose(t["rh_true"].values[:, land], expect, rtol=2e-3)
    rh = t["rh_true"].values[:, land]
    assert (rh > 0).all() and 0.1 < np.median(rh) < 5  # g C m-2 d-1


def test_zones_respond_differently(world):
    """The zones' true temperature sensitivities differ: fit log RH ~ Ts per zone."""
    t = world.truth
    land = world.cube["land_mask"].values
    z = t["zone_true"].values[land]
    slopes = []
    for k in range(world.config.n_zones):
        ts = t["tsoil"].values[:, land][:, z == k].ravel()
        rh = t["rh_true"].values[:, land][:, z == k].ravel()
        slopes.append(np.polyfit(ts, np.log(rh), 1)[0])
    q10 = np.exp(10 * np.array(slopes))
    assert q10.max() / q10.min() > 1.3  # clearly different apparent Q10


def test_zone_factors_separate_the_zones(world):
    """Standardise + PCA + k-means on the six factors recovers the true zones (sklearn)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score
    from sklearn.preprocessing import StandardScaler

    land = world.cube["land_mask"].values
    X = np.stack([world.cube[f].values[land] for f in FACTORS], axis=1)
    S = PCA(0.8).fit_transform(StandardScaler().fit_transform(X))
    lab = KMeans(world.config.n_zones, n_init=10, random_state=0).fit_predict(S)
    assert adjusted_rand_score(world.truth["zone_true"].values[land], lab) >= 0.8


def test_zone_table(world):
    zt = world.zones
    assert list(zt["zone"]) == list(range(world.config.n_zones))
    assert zt["pixels"].sum() == int(world.cube["land_mask"].sum())
    assert zt["n_sites"].sum() == len(world.sites)
    assert zt["q10"].nunique() == len(zt) and zt["r_ref"].nunique() == len(zt)


def test_long_table_contract(world):
    long = world.long
    assert list(long.columns) == LONG_COLUMNS
    assert (long["variable"] == "Rh").all() and (long["units"] == RH_UNITS).all()
    assert (long["value"] > 0).all()
    assert long["n"].between(1, 8).all()
    assert pd.api.types.is_datetime64_any_dtype(long["time"])
    assert set(long["time"]) <= set(pd.DatetimeIndex(world.cube["time"].values))
    assert not long.duplicated(["site_id", "time"]).any()
    s = world.sites.set_index("site_id")
    assert (long["lat"].to_numpy() == s.loc[long["site_id"], "lat"].to_numpy()).all()


def test_sites_on_land_uneven_records_and_min_per_zone(world):
    sites = world.sites
    land = world.cube["land_mask"].values
    assert land[sites["iy"], sites["ix"]].all()
    # the pixel holding each site's coordinates is the recorded pixel
    g = world.grid
    ix = np.floor((sites["lon"] - g.bbox.west) / g.resolution).astype(int)
    iy = np.floor((g.bbox.north - sites["lat"]) / g.resolution).astype(int)
    assert (ix.to_numpy() == sites["ix"].to_numpy()).all() and (iy.to_numpy() == sites["iy"].to_numpy()).all()
    assert sites["site_id"].is_unique
    assert sites.groupby("zone_true").size().min() >= world.config.min_sites_per_zone
    n = sites["n_obs"]
    assert n.min() >= 3 and n.max() >= 3 * n.min()  # uneven record lengths
    counts = world.long.groupby("site_id").size()
    assert (counts.reindex(sites["site_id"]).to_numpy() == n.to_numpy()).all()
    assert sites["automated"].any() and (~sites["automated"]).any()


def test_warm_season_bias(world_default):
    """Warm periods are observed more often than cold ones, as in real networks."""
    w = world_default
    tt = w.training_table()
    months = pd.DatetimeIndex(tt["time"]).month
    warm = np.isin(months, [5, 6, 7, 8, 9]).sum()
    cold = np.isin(months, [11, 12, 1, 2, 3]).sum()
    assert warm > 1.5 * cold


def test_observation_noise(world_default):
    tt = world_default.training_table()
    ratio = np.log(tt["rh"] / tt["rh_true"])
    assert abs(ratio.mean()) < 0.03
    assert 0.03 < ratio.std() < 0.2  # noise_sd 0.15 for one-day campaigns, less for automated
    assert not np.allclose(tt["rh"], tt["rh_true"])


def test_training_table_matches_cube_at_site_pixels(world):
    tt = world.training_table()
    assert len(tt) == len(world.long)
    assert set(PREDICTORS) <= set(tt.columns) and set(FACTORS) <= set(tt.columns)
    assert np.isfinite(tt[list(PREDICTORS) + list(FACTORS)].to_numpy()).all()
    row = tt.iloc[0]
    s = world.sites.set_index("site_id").loc[row["site_id"]]
    v = world.cube["gpp"].sel(time=row["time"]).values[s["iy"], s["ix"]]
    assert row["gpp"] == pytest.approx(float(v))


def test_zoned_forest_beats_unified_on_true_zones(world):
    """The world's built-in claim, checked with plain sklearn forests: a forest per true zone
    beats one forest on the same predictors under leave-one-site-out."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.metrics import r2_score
    from sklearn.model_selection import LeaveOneGroupOut

    tt = world.training_table()
    X = tt[list(PREDICTORS)].to_numpy()
    y = tt["rh"].to_numpy()
    g = tt["site_id"].astype(str).to_numpy()
    z = tt["zone_true"].to_numpy()
    pu, pz = np.empty_like(y), np.empty_like(y)
    for tr, te in LeaveOneGroupOut().split(X, y, g):
        rf = RandomForestRegressor(30, min_samples_leaf=2, random_state=0, n_jobs=1)
        pu[te] = rf.fit(X[tr], y[tr]).predict(X[te])
        same = tr[z[tr] == z[te][0]]
        pz[te] = rf.fit(X[same], y[same]).predict(X[te])
    assert r2_score(y, pz) > r2_score(y, pu)


def test_site_locations(world):
    pts = pd.DataFrame({
        "site_id": ["on-land", "at-sea", "far-away"],
        "lat": [float(world.grid.y[10]), float(world.grid.y[10]), -30.0],
        "lon": [float(world.grid.x[5]), float(world.grid.x[-1]), 100.0],
    })
    w = make_world(world.config, site_locations=pts)
    assert list(w.sites["site_id"]) == ["on-land"]
    assert w.sites.attrs["dropped_sites"] == ["at-sea", "far-away"]
    assert (w.sites["iy"] == 10).all() and (w.sites["ix"] == 5).all()
    with pytest.raises(DataError, match="none of the 2 site locations lies on the world's land"):
        make_world(world.config, site_locations=pts.iloc[1:])
    with pytest.raises(DataError, match=r"site locations lack columns \['lon'\]"):
        make_world(world.config, site_locations=pts[["site_id", "lat"]])


def test_too_many_sites_for_the_land():
    with pytest.raises(DataError, match="land pixels for 4000 sites"):
        make_world(ny=16, nx=16, n_sites=4000)
