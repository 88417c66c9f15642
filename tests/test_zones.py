"""ZoneClassifier (PSO k-means), k-selection report, Tamhane's T2, lazy cube labelling."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from globalflux.errors import DataError, ModelError
from globalflux.zones import (
    ZoneClassifier,
    ZoneFitError,
    k_selection_report,
    lloyd,
    pso_kmeans,
    tamhane_t2,
    wcss,
)


def _sklearn_wcss(S: np.ndarray, k: int, seed: int) -> float:
    return float(KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=seed).fit(S).inertia_)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [3, 5, 8])
def test_pso_wcss_no_worse_than_kmeanspp_synthetic(seed, k):
    X, _ = make_blobs(n_samples=300, centers=7, n_features=5, cluster_std=2.5, random_state=seed)
    zc = ZoneClassifier(n_zones=k, variance=1.0, random_state=seed).fit(X)
    S = zc.transform(X)
    assert zc.inertia_ == pytest.approx(wcss(S, zc.cluster_centers_))
    assert zc.inertia_ <= _sklearn_wcss(S, k, seed) * (1 + 1e-9)


def test_pso_kmeans_function_matches_definition():
    X, _ = make_blobs(n_samples=120, centers=4, n_features=2, random_state=3)
    C, labels, f = pso_kmeans(X, 4, n_particles=8, n_iter=10, random_state=0)
    assert C.shape == (4, 2) and labels.shape == (120,)
    # the answer is a Lloyd fixed point: each centre is the mean of its members
    for j in range(4):
        np.testing.assert_allclose(C[j], X[labels == j].mean(0))
    assert f == pytest.approx(((X - C[labels]) ** 2).sum())


def test_lloyd_keeps_every_cluster_non_empty():
    X = np.r_[np.zeros((10, 2)), np.ones((10, 2)) * 5, [[10.0, 10.0]]]
    C, labels = lloyd(X, np.array([[0.0, 0.0], [100.0, 100.0], [200.0, 200.0]]))
    assert set(labels) == {0, 1, 2}


def test_seeded_and_reproducible():
    X, _ = make_blobs(n_samples=200, centers=5, n_features=4, random_state=0)
    a = ZoneClassifier(n_zones=5, random_state=7).fit(X)
    b = ZoneClassifier(n_zones=5, random_state=7).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.inertia_ == b.inertia_
    np.testing.assert_array_equal(a.predict(X), a.labels_)
    # zones are numbered by the first PCA coordinate of their centre
    assert np.all(np.diff(a.cluster_centers_[:, 0]) >= 0)


def test_pca_keeps_fewest_components_reaching_variance():
    rng = np.random.RandomState(0)
    # 6 observed columns driven by 3 latent factors of decreasing strength, plus a little noise
    latent = rng.normal(size=(500, 3)) * np.array([3.0, 1.5, 0.3])
    X = latent @ rng.normal(size=(3, 6)) + 0.05 * rng.normal(size=(500, 6))
    full = ZoneClassifier(n_zones=2, variance=1.0).fit(X)
    cum = np.cumsum(full.explained_variance_ratio_)
    for share in (0.5, 0.8, 0.95):
        zc = ZoneClassifier(n_zones=2, variance=share, n_iter=5).fit(X)
        m = zc.n_components_
        assert cum[m - 1] >= share - 1e-12
        assert m == 1 or cum[m - 2] < share
        assert zc.transform(X).shape == (500, m)


def test_recovers_well_separated_zones():
    from sklearn.metrics import adjusted_rand_score

    X, y = make_blobs(n_samples=240, centers=4, n_features=6, cluster_std=0.8, random_state=5)
    zc = ZoneClassifier(n_zones=4, n_iter=20, random_state=0).fit(X)
    assert adjusted_rand_score(y, zc.labels_) > 0.95


def test_too_few_sites_is_a_clear_error():
    X = np.random.RandomState(0).normal(size=(3, 4))
    with pytest.raises(ZoneFitError, match=r"zone factors: 3 samples \(sites\) for 4 zones.*Use fewer zones"):
        ZoneClassifier(n_zones=4).fit(X)
    assert issubclass(ZoneFitError, ModelError) and issubclass(ZoneFitError, ValueError)
    with pytest.raises(ModelError, match="zones.variance"):
        ZoneClassifier(variance=1.5).fit(np.ones((10, 2)))


def test_predict_requires_fitted_feature_count():
    X = np.random.RandomState(0).normal(size=(40, 3))
    zc = ZoneClassifier(n_zones=2, n_iter=5).fit(X)
    with pytest.raises(ValueError, match="3 features"):
        zc.predict(X[:, :2])


# ---------------------------------------------------------------------- lazy cube labelling
class _NoCompute:
    """A dask scheduler that fails: building the graph must not compute anything."""

    def __call__(self, dsk, keys, **kwargs):
        raise AssertionError("a dask computation was triggered while building the graph")


def _factor_cube(ny=60, nx=80, chunks=(16, 24)):
    rng = np.random.RandomState(1)
    yy, xx = np.mgrid[0:ny, 0:nx]
    fields = {
        "TEM": 20 - 0.3 * yy + rng.normal(0, 1, (ny, nx)),
        "PRE": 300 + 10 * xx + rng.normal(0, 50, (ny, nx)),
        "SOC": rng.gamma(2.0, 20.0, (ny, nx)),
    }
    land = np.hypot(yy - ny / 2, xx - nx / 2) < min(ny, nx) * 0.45
    fields["PRE"][3, 5] = np.nan  # a land pixel without a factor -> -1
    land[3, 5] = True
    ds = xr.Dataset(
        {k: (("y", "x"), da.from_array(v.astype("float32"), chunks=chunks)) for k, v in fields.items()},
        coords={"y": np.arange(ny)[::-1] + 0.5, "x": np.arange(nx) + 0.5},
    )
    mask = xr.DataArray(da.from_array(land, chunks=chunks), dims=("y", "x"), coords=ds.coords)
    return ds, mask, fields, land


def test_predict_cube_is_lazy_and_equals_eager_labelling():
    ds, mask, fields, land = _factor_cube()
    names = ["TEM", "PRE", "SOC"]
    rng = np.random.RandomState(0)
    iy, ix = rng.randint(0, 60, 150), rng.randint(0, 80, 150)
    table = pd.DataFrame({n: fields[n][iy, ix].astype("float32") for n in names}).dropna()
    zc = ZoneClassifier(n_zones=4, n_iter=10).fit(table)
    with dask.config.set(scheduler=_NoCompute()):
        lab = zc.predict_cube(ds, mask=mask)
    assert isinstance(lab.data, da.Array)
    assert lab.dtype == np.int16 and lab.name == "zone"
    assert lab.data.chunks == ds["TEM"].data.chunks
    got = lab.compute().values
    # eager: every land pixel with finite factors through predict(); others -1
    flat = pd.DataFrame({n: fields[n].astype("float32").ravel() for n in names})
    ok = land.ravel() & np.isfinite(flat.to_numpy()).all(1)
    want = np.full(flat.shape[0], -1, dtype="int16")
    want[ok] = zc.predict(flat[ok])
    np.testing.assert_array_equal(got.ravel(), want)
    assert got[3, 5] == -1 and (got[~land] == -1).all()
    assert set(np.unique(got[land])) - {-1} == set(range(4))


def test_predict_cube_rejects_other_factor_order():
    ds, mask, fields, _ = _factor_cube(20, 20, (10, 10))
    table = pd.DataFrame({n: fields[n].ravel() for n in ["TEM", "PRE", "SOC"]}).dropna()
    zc = ZoneClassifier(n_zones=2, n_iter=3).fit(table)
    with pytest.raises(DataError, match="differ from the fitted factors"):
        zc.predict_cube(ds, ["PRE", "TEM", "SOC"], mask=mask)


# ---------------------------------------------------------------------- k selection, T2
def test_k_selection_report_columns_and_site_counts():
    X, _ = make_blobs(n_samples=90, centers=3, n_features=4, random_state=2)
    sites = np.repeat([f"s{i}" for i in range(45)], 2)  # two rows per site
    rep = k_selection_report(X, sites, k_range=range(2, 6), n_particles=6, n_iter=5)
    assert list(rep.columns) == ["k", "n_components", "inertia", "silhouette", "calinski_harabasz",
                                 "min_zone_sites", "max_zone_sites"]
    assert list(rep["k"]) == [2, 3, 4, 5]
    assert (np.diff(rep["inertia"]) < 0).all()  # more zones, less WCSS
    assert rep["silhouette"].between(-1, 1).all()
    assert (rep["max_zone_sites"] <= 45).all() and (rep["min_zone_sites"] >= 1).all()
    assert rep.loc[rep["k"] == 3, "silhouette"].item() == rep["silhouette"].max()
    with pytest.raises(DataError, match="site ids for 90 rows"):
        k_selection_report(X, sites[:10])


def test_tamhane_t2_against_scipy_welch_and_sidak():
    from scipy import stats

    rng = np.random.RandomState(4)
    groups = np.repeat([0, 1, 2, 3], [12, 30, 7, 20])
    values = rng.normal(loc=np.array([0.0, 0.5, 2.0, 0.2])[groups], scale=np.array([1, 3, 0.5, 1])[groups])
    res = tamhane_t2(pd.Series(values, name="TEM"), groups)
    assert len(res) == 6 and set(res["factor"]) == {"TEM"}
    m = 6
    for row in res.itertuples():
        a = values[groups == row.group_a]
        b = values[groups == row.group_b]
        ref = stats.ttest_ind(a, b, equal_var=False)
        assert row.t == pytest.approx(ref.statistic, rel=1e-10)
        assert row.p_raw == pytest.approx(ref.pvalue, rel=1e-9)
        assert row.p_adj == pytest.approx(1 - (1 - ref.pvalue) ** m, rel=1e-9, abs=1e-15)
        assert row.significant == (row.p_adj < 0.05)
        # Welch-Satterthwaite degrees of freedom, by hand
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        assert row.df == pytest.approx((va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)))
    # the clearly shifted group 2 differs from group 0
    assert res.query("group_a == 0 and group_b == 2")["significant"].item()


def test_tamhane_t2_dataframe_and_small_groups():
    df = pd.DataFrame({"a": [1.0, 2, 3, 4, 5], "b": [5.0, 4, 3, 2, 1]})
    res = tamhane_t2(df, ["x", "x", "y", "y", "z"])
    assert set(res["factor"]) == {"a", "b"} and len(res) == 6
    z_rows = res[(res["group_b"] == "z")]
    assert z_rows["p_adj"].isna().all() and not z_rows["significant"].any()
    with pytest.raises(DataError, match="group labels for 5 values"):
        tamhane_t2(df, ["x"])


@pytest.mark.slow
@pytest.mark.realdata
def test_pso_no_worse_than_kmeanspp_on_real_static_factors_at_srdb_sites(shared_data):
    from globalflux.workflows.srdb_rh_annual import srdb_site_table

    sites, _ = srdb_site_table(shared_data / "srdb", shared_data / "grids", resolution=0.5,
                               min_midyear=None)
    factors = ["mat", "map", "soc", "ndvi_max", "ndvi_min", "elevation"]
    X = sites[factors].dropna()
    assert len(X) > 200
    for k in (3, 4, 6):
        zc = ZoneClassifier(n_zones=k, random_state=0).fit(X)
        S = zc.transform(X)
        assert zc.inertia_ <= _sklearn_wcss(S, k, 0) * (1 + 1e-9)
