"""Environmentally similar zones: standardise -> PCA -> k-means with PSO-searched centres.

Zhu et al. (2024) delineate "environmentally similar zones" from a handful of zone factors
(climate, soil, vegetation): the factors are standardised, reduced by principal component
analysis to the fewest components explaining at least 80% of the variance (they kept four of
six), and clustered by k-means whose centres are searched by particle swarm optimisation
(PSO; Kennedy and Eberhart 1995). This module implements that classifier as a scikit-learn
estimator (:class:`ZoneClassifier`), a k-selection report (:func:`k_selection_report`) and
Tamhane's T2 multiple comparisons of factor means between zones (:func:`tamhane_t2`).

PSO k-means
-----------
A particle is a candidate set of ``k`` centres in PCA space (a vector of ``k * d`` numbers);
its fitness is the within-cluster sum of squares (WCSS) of the data assigned to the nearest
centre after a local search by Lloyd iterations from the particle's position (to convergence or
``n_lloyd``). Personal bests hold those refined centres (the PSO + k-means hybrids of van der
Merwe and Engelbrecht 2003 and Kao et al. 2008), while the particles keep flying from where the
swarm update puts them, which keeps the swarm diverse. Particles start at greedy k-means++
seeds (Arthur and Vassilvitskii 2007) and move with the inertia-weight update of Shi and
Eberhart (1998),

.. math:: v \\leftarrow w v + c_1 r_1 (p_{best} - x) + c_2 r_2 (g_{best} - x),\\quad x \\leftarrow x + v

(:math:`r_1, r_2 \\sim U(0, 1)` per coordinate; velocities clamped to the data's extent;
defaults :math:`w = 0.72`, :math:`c_1 = c_2 = 1.49`, the constriction-equivalent values of Clerc
and Kennedy 2002). The swarm stops after ``n_iter`` iterations, or earlier when its best WCSS
has not improved for ``patience`` iterations; the global best is the answer. The initial swarm
alone is ``n_particles`` k-means++ restarts, so the result is never worse than the best of them.
Zones are numbered by the first PCA coordinate of their centre, so labels are reproducible.

References
----------
Zhu et al. (2024), heterotrophic respiration from environmentally similar zones and zoned random
forests. Kennedy, J. and Eberhart, R. (1995), Particle swarm optimization, Proc. ICNN'95,
1942-1948. Shi, Y. and Eberhart, R. (1998), A modified particle swarm optimizer, IEEE ICEC.
van der Merwe, D. W. and Engelbrecht, A. P. (2003), Data clustering using particle swarm
optimization, CEC 2003. Kao, Y.-T., Zahara, E. and Kao, I.-W. (2008), A hybridized approach to
data clustering, Expert Systems with Applications 34, 1754-1762. Clerc, M. and Kennedy, J.
(2002), The particle swarm, IEEE TEC 6(1), 58-73. Tamhane, A. C. (1979), A comparison of
procedures for multiple comparisons of means with unequal variances, JASA 74(366), 471-480.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import DataError, ModelError

__all__ = [
    "ZoneClassifier",
    "zone_factors",
    "ZoneFitError",
    "pso_kmeans",
    "lloyd",
    "wcss",
    "k_selection_report",
    "tamhane_t2",
]

log = logging.getLogger("globalflux.zones")


class ZoneFitError(ModelError, ValueError):
    """Too few samples (sites) to form the requested zones.

    A :class:`~globalflux.errors.ModelError` (exit code 2 in the CLI) that is also a
    ``ValueError``, as scikit-learn expects of an estimator given too few samples.
    """


# --------------------------------------------------------------------------------------------
# k-means pieces (pure numpy)
# --------------------------------------------------------------------------------------------
def _sq_dist(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n, k) between rows of ``X`` and rows of ``C``."""
    d = (X * X).sum(1)[:, None] - 2.0 * X @ C.T + (C * C).sum(1)[None, :]
    return np.maximum(d, 0.0)


def wcss(X: np.ndarray, centers: np.ndarray) -> float:
    r"""Within-cluster sum of squares :math:`\sum_i \min_j \lVert x_i - c_j \rVert^2`."""
    return float(_sq_dist(X, centers).min(1).sum())


def _kmeanspp(X: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur and Vassilvitskii 2007): each new centre is the best of
    ``2 + log(k)`` candidates drawn with probability proportional to squared distance."""
    n = X.shape[0]
    trials = 2 + int(np.log(k))
    centers = np.empty((k, X.shape[1]))
    centers[0] = X[rng.randint(n)]
    d2 = _sq_dist(X, centers[:1]).ravel()
    for j in range(1, k):
        total = d2.sum()
        if total <= 0:  # all points coincide with chosen centres
            cand = rng.randint(n, size=trials)
        else:
            cand = np.searchsorted(np.cumsum(d2), rng.uniform(size=trials) * total)
            cand = np.minimum(cand, n - 1)
        d_cand = np.minimum(d2[None, :], _sq_dist(X, X[cand]).T)
        best = int(np.argmin(d_cand.sum(1)))
        centers[j] = X[cand[best]]
        d2 = d_cand[best]
    return centers


def lloyd(X: np.ndarray, centers: np.ndarray, max_iter: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations from ``centers`` until the labels stop changing (or ``max_iter``).

    An emptied cluster is moved to the point farthest from its centre, so every cluster keeps
    at least one point (needs at least ``k`` distinct points).

    Returns
    -------
    centers, labels
    """
    C = np.array(centers, dtype="float64", copy=True)
    n, k = X.shape[0], C.shape[0]
    xx = (X * X).sum(1)[:, None]
    labels = np.full(n, -1)
    for _ in range(max(int(max_iter), 1)):
        d = np.maximum(xx - 2.0 * X @ C.T + (C * C).sum(1)[None, :], 0.0)
        new = d.argmin(1)
        counts = np.bincount(new, minlength=k)
        if (counts == 0).any():  # move each empty centre to the farthest point
            far = np.argsort(d[np.arange(n), new])[::-1]
            for j, idx in zip(np.flatnonzero(counts == 0), far, strict=False):
                C[j] = X[idx]
            continue
        if np.array_equal(new, labels):
            break
        labels = new
        onehot = np.zeros((n, k))
        onehot[np.arange(n), labels] = 1.0
        C = (onehot.T @ X) / counts[:, None]
    else:
        labels = _sq_dist(X, C).argmin(1)
    return C, labels


def pso_kmeans(
    X: np.ndarray,
    k: int,
    *,
    n_particles: int = 30,
    n_iter: int = 100,
    inertia: float = 0.72,
    c1: float = 1.49,
    c2: float = 1.49,
    n_lloyd: int = 300,
    patience: int | None = 20,
    random_state: Any = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """k-means whose centres are searched by particle swarm optimisation, finished by Lloyd.

    Parameters
    ----------
    X
        Data (n, d), already standardised / projected.
    k
        Number of clusters.
    n_particles, n_iter
        Swarm size and PSO iterations (0 iterations: k-means++ seeds finished by Lloyd).
    inertia, c1, c2
        Inertia weight and cognitive / social acceleration coefficients.
    n_lloyd
        Maximum Lloyd iterations of the local search refining each particle's position.
    patience
        Stop early when the swarm's best WCSS has not improved for this many iterations
        (None: always run ``n_iter`` iterations).
    random_state
        Seed or RandomState.

    Returns
    -------
    centers (k, d), labels (n,), wcss
    """
    X = np.asarray(X, dtype="float64")
    n, d = X.shape
    if n < k:
        raise ZoneFitError(
            f"{n} samples for {k} zones (n_samples = {n})",
            where="zone factors",
            fix="Use fewer zones or more sites.",
        )
    rng = check_random_state(random_state)
    P = max(int(n_particles), 1)
    pos = np.stack([_kmeanspp(X, k, rng).ravel() for _ in range(P)])
    span = X.max(0) - X.min(0)
    vmax = np.tile(np.where(span > 0, span, 1.0), k)  # velocity clamp: the data's extent
    vel = rng.uniform(-0.1, 0.1, size=pos.shape) * vmax

    def refine(p: np.ndarray) -> tuple[np.ndarray, float]:
        C, _ = lloyd(X, p.reshape(k, d), max_iter=n_lloyd)
        return C.ravel(), wcss(X, C)

    # personal bests hold Lloyd-refined centres (local search; Kao et al. 2008), while the
    # particles themselves keep flying from where the swarm update puts them (diversity).
    pbest = np.empty_like(pos)
    pbest_f = np.empty(P)
    for i, p in enumerate(pos):
        pbest[i], pbest_f[i] = refine(p)
    g = int(np.argmin(pbest_f))
    best_f = float(pbest_f[g])
    stale = 0
    for _ in range(int(n_iter)):
        r1 = rng.uniform(size=pos.shape)
        r2 = rng.uniform(size=pos.shape)
        vel = inertia * vel + c1 * r1 * (pbest - pos) + c2 * r2 * (pbest[g] - pos)
        vel = np.clip(vel, -vmax, vmax)
        pos = pos + vel
        for i, p in enumerate(pos):
            c, f = refine(p)
            if f < pbest_f[i]:
                pbest[i], pbest_f[i] = c, f
        g_new = int(np.argmin(pbest_f))
        stale = 0 if pbest_f[g_new] < best_f - 1e-12 * max(abs(best_f), 1.0) else stale + 1
        g, best_f = g_new, min(best_f, float(pbest_f[g_new]))
        if patience is not None and stale >= patience:
            break
    C = pbest[g].reshape(k, d)
    labels = _sq_dist(X, C).argmin(1)
    return C, labels, float(pbest_f[g])


# --------------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------------
class ZoneClassifier(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """Environmentally similar zones (Zhu et al. 2024): scaler -> PCA -> PSO k-means.

    Parameters
    ----------
    n_zones
        Number of zones k.
    variance
        Keep the fewest principal components whose cumulative explained variance ratio is at
        least this share (0-1]; 1.0 keeps every component.
    n_particles, n_iter, inertia, c1, c2
        Particle swarm: swarm size, iterations, inertia weight, acceleration coefficients.
    n_lloyd
        Maximum Lloyd iterations of the local search refining each particle.
    patience
        Stop the swarm when its best WCSS has not improved for this many iterations (None: never).
    random_state
        Seed of the swarm (k-means++ seeds and velocity draws).

    Attributes
    ----------
    scaler_ : StandardScaler
    pca_ : PCA
        Fitted with ``n_components_`` components.
    n_components_ : int
    explained_variance_ratio_ : ndarray
        Of every component of the full PCA (for the report).
    cluster_centers_ : ndarray (n_zones, n_components_)
        Zone centres in PCA space, ordered by their first coordinate.
    inertia_ : float
        Within-cluster sum of squares in PCA space.
    labels_ : ndarray of int
        Zone of each training row.
    """

    def __init__(
        self,
        n_zones: int = 4,
        variance: float = 0.8,
        n_particles: int = 30,
        n_iter: int = 100,
        inertia: float = 0.72,
        c1: float = 1.49,
        c2: float = 1.49,
        n_lloyd: int = 300,
        patience: int | None = 20,
        random_state: Any = 0,
    ):
        self.n_zones = n_zones
        self.variance = variance
        self.n_particles = n_particles
        self.n_iter = n_iter
        self.inertia = inertia
        self.c1 = c1
        self.c2 = c2
        self.n_lloyd = n_lloyd
        self.patience = patience
        self.random_state = random_state

    def _check_params(self) -> None:
        if not isinstance(self.n_zones, int | np.integer) or self.n_zones < 1:
            raise ModelError(f"n_zones={self.n_zones!r}", where="zones.n_zones",
                             fix="Give a whole number of zones >= 1.")
        if not (0.0 < float(self.variance) <= 1.0):
            raise ModelError(f"variance={self.variance!r}", where="zones.variance",
                             fix="Give a share of explained variance in (0, 1].")

    def fit(self, X, y=None):
        """Fit scaler, PCA and the PSO k-means on a table of zone factors (one row per site)."""
        self._check_params()
        X = validate_data(self, X, dtype="float64", ensure_min_samples=1)
        n = X.shape[0]
        k = int(self.n_zones)
        if n < k:
            raise ZoneFitError(
                f"{n} samples (sites) for {k} zones (n_samples = {n})",
                where="zone factors",
                fix="Use fewer zones (zones.n_zones) or more sites.",
            )
        self.scaler_ = StandardScaler().fit(X)
        Z = self.scaler_.transform(X)
        max_comp = min(Z.shape)
        full = PCA(n_components=max_comp, svd_solver="full").fit(Z)
        ratio = full.explained_variance_ratio_
        self.explained_variance_ratio_ = ratio
        if not np.isfinite(ratio).all() or ratio.sum() <= 0:  # constant factors
            m = 1
        else:
            cum = np.cumsum(ratio) / ratio.sum()
            m = int(np.searchsorted(cum, float(self.variance) - 1e-12) + 1)
        self.n_components_ = int(min(max(m, 1), max_comp))
        self.pca_ = PCA(n_components=self.n_components_, svd_solver="full").fit(Z)
        S = self.pca_.transform(Z)
        centers, _, _ = pso_kmeans(
            S, k, n_particles=self.n_particles, n_iter=self.n_iter, inertia=self.inertia,
            c1=self.c1, c2=self.c2, n_lloyd=self.n_lloyd, patience=self.patience,
            random_state=self.random_state,
        )
        order = np.lexsort(centers.T[::-1])  # by first PCA coordinate, ties by the next
        self.cluster_centers_ = centers[order]
        self.labels_ = _sq_dist(S, self.cluster_centers_).argmin(1).astype("int64")
        self.inertia_ = wcss(S, self.cluster_centers_)
        self._n_features_out = self.n_components_
        return self

    def transform(self, X) -> np.ndarray:
        """Scores of ``X`` in the retained PCA space."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype="float64", reset=False)
        return self.pca_.transform(self.scaler_.transform(X))

    def predict(self, X) -> np.ndarray:
        """Zone (0 .. n_zones-1) of each row: the nearest centre in PCA space."""
        S = self.transform(X)
        return _sq_dist(S, self.cluster_centers_).argmin(1).astype("int64")

    def predict_cube(self, ds: xr.Dataset, features: Sequence[str] | None = None,
                     mask: xr.DataArray | None = None) -> xr.DataArray:
        """Zone of every (land) pixel of a chunked cube, lazily.

        Parameters
        ----------
        ds
            Dataset holding the zone factors as variables (chunked with Dask for lazy output).
        features
            Variable names in the order the classifier was fitted with; default the fitted
            feature names.
        mask
            Boolean DataArray, True where to label (land); other pixels and pixels with a
            non-finite factor get -1.

        Returns
        -------
        xr.DataArray of int16 named ``zone`` (-1 off land), lazy when ``ds`` is chunked.
        """
        from .mapping import apply_to_cube

        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", None)
        if features is None:
            if names is None:
                raise ModelError("the classifier was fitted without feature names",
                                 where="ZoneClassifier.predict_cube",
                                 fix="Pass features=[...] in the fitted column order.")
            features = list(names)
        features = list(features)
        if names is not None and list(names) != features:
            raise DataError(f"features {features} differ from the fitted factors {list(names)}",
                            where="ZoneClassifier.predict_cube",
                            fix="Pass the zone factors in the order used to fit.")
        out = apply_to_cube(self, ds, features, mask=mask, method="predict", dtype="int16",
                            fill=-1, as_frame=names is not None, name="zone")
        out.attrs.update(long_name="environmentally similar zone", flag_values="-1 = not labelled",
                         n_zones=int(self.n_zones))
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    # ---- model package (see globalflux.io.model_package) -------------------------------------
    _ARRAYS = ("scaler_mean", "scaler_scale", "scaler_var", "pca_components", "pca_mean",
               "pca_explained_variance", "pca_explained_variance_ratio", "pca_singular_values",
               "cluster_centers", "explained_variance_ratio", "labels")

    def to_package(self, name: str = "zones.npz") -> tuple[dict[str, Any], dict[str, bytes]]:
        """Parameters (JSON) and fitted arrays (``.npz``, no object arrays) of the classifier."""
        import io

        check_is_fitted(self)
        arrays = {
            "scaler_mean": self.scaler_.mean_, "scaler_scale": self.scaler_.scale_,
            "scaler_var": self.scaler_.var_, "pca_components": self.pca_.components_,
            "pca_mean": self.pca_.mean_, "pca_explained_variance": self.pca_.explained_variance_,
            "pca_explained_variance_ratio": self.pca_.explained_variance_ratio_,
            "pca_singular_values": self.pca_.singular_values_,
            "cluster_centers": self.cluster_centers_,
            "explained_variance_ratio": self.explained_variance_ratio_,
            "labels": self.labels_,
        }
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        params = {k: (int(v) if isinstance(v, np.integer) else
                      float(v) if isinstance(v, np.floating) else v)
                  for k, v in self.get_params().items()}
        names = getattr(self, "feature_names_in_", None)
        section = {
            "class": "ZoneClassifier", "params": params, "payload": name,
            "feature_names_in": None if names is None else [str(c) for c in names],
            "n_features_in": int(self.n_features_in_), "n_components": int(self.n_components_),
            "inertia": float(self.inertia_), "n_samples_seen": int(self.scaler_.n_samples_seen_),
            "pca_noise_variance": float(self.pca_.noise_variance_),
            "pca_n_samples": int(self.pca_.n_samples_),
        }
        return section, {name: buf.getvalue()}

    @classmethod
    def from_package(cls, section: dict[str, Any], payloads: dict[str, bytes]) -> ZoneClassifier:
        """Rebuild a fitted classifier from :meth:`to_package` output (``allow_pickle=False``)."""
        import io

        name = section["payload"]
        try:
            with np.load(io.BytesIO(payloads[name]), allow_pickle=False) as npz:
                a = {k: npz[k] for k in cls._ARRAYS}
        except (ValueError, KeyError, OSError) as exc:
            raise ModelError(f"zone classifier arrays are unreadable ({exc})", where=name,
                             fix="Rebuild the model package with globalflux.") from None
        zc = cls(**section["params"])
        n = int(section["n_features_in"])
        zc.n_features_in_ = n
        if section.get("feature_names_in") is not None:
            zc.feature_names_in_ = np.asarray(section["feature_names_in"], dtype=object)
        sc = StandardScaler()
        sc.mean_, sc.scale_, sc.var_ = a["scaler_mean"], a["scaler_scale"], a["scaler_var"]
        sc.n_features_in_ = n
        sc.n_samples_seen_ = int(section["n_samples_seen"])
        pca = PCA(n_components=int(section["n_components"]), svd_solver="full")
        pca.components_, pca.mean_ = a["pca_components"], a["pca_mean"]
        pca.explained_variance_ = a["pca_explained_variance"]
        pca.explained_variance_ratio_ = a["pca_explained_variance_ratio"]
        pca.singular_values_ = a["pca_singular_values"]
        pca.n_components_ = int(section["n_components"])
        pca.n_features_in_ = n
        pca.n_samples_ = int(section["pca_n_samples"])
        pca.noise_variance_ = float(section["pca_noise_variance"])
        zc.scaler_, zc.pca_ = sc, pca
        zc.n_components_ = int(section["n_components"])
        zc.explained_variance_ratio_ = a["explained_variance_ratio"]
        zc.cluster_centers_ = a["cluster_centers"]
        zc.labels_ = a["labels"].astype("int64")
        zc.inertia_ = float(section["inertia"])
        zc._n_features_out = zc.n_components_
        return zc


# --------------------------------------------------------------------------------------------
# choosing k with evidence
# --------------------------------------------------------------------------------------------
def k_selection_report(
    X,
    site_ids: Iterable | None = None,
    k_range: Iterable[int] = range(2, 9),
    **zone_params: Any,
) -> pd.DataFrame:
    """Inertia, silhouette, Calinski-Harabasz and the smallest zone's site count for each k.

    Parameters
    ----------
    X
        Zone factors, one row per site (or per record; ``site_ids`` then counts sites).
    site_ids
        Site of each row; default every row is its own site.
    k_range
        The numbers of zones to try.
    **zone_params
        Passed to :class:`ZoneClassifier` (``variance``, ``n_particles``, ...).

    Returns
    -------
    DataFrame with one row per k: ``k, n_components, inertia, silhouette, calinski_harabasz,
    min_zone_sites, max_zone_sites``. Silhouette and Calinski-Harabasz (higher is better) are
    computed in the PCA space that is clustered.
    """
    from sklearn.metrics import calinski_harabasz_score, silhouette_score

    n = len(X)
    sites = np.arange(n) if site_ids is None else np.asarray(list(site_ids))
    if len(sites) != n:
        raise DataError(f"{len(sites)} site ids for {n} rows", where="k_selection_report",
                        fix="Give one site id per row of X.")
    rows = []
    for k in k_range:
        k = int(k)
        if k > n:
            break
        zc = ZoneClassifier(n_zones=k, **zone_params).fit(X)
        S = zc.transform(X)
        lab = zc.labels_
        ok = len(np.unique(lab)) > 1 and len(np.unique(lab)) < n
        per_zone = pd.Series(sites).groupby(lab).nunique()
        rows.append({
            "k": k,
            "n_components": zc.n_components_,
            "inertia": zc.inertia_,
            "silhouette": float(silhouette_score(S, lab)) if ok else float("nan"),
            "calinski_harabasz": float(calinski_harabasz_score(S, lab)) if ok else float("nan"),
            "min_zone_sites": int(per_zone.min()),
            "max_zone_sites": int(per_zone.max()),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Tamhane's T2
# --------------------------------------------------------------------------------------------
def tamhane_t2(values, groups, *, alpha: float = 0.05) -> pd.DataFrame:
    r"""Tamhane's T2 pairwise comparisons of means with unequal variances and sizes.

    For groups :math:`i, j` with means :math:`\bar x`, variances :math:`s^2` (ddof 1) and sizes
    :math:`n`, Welch's statistic and Welch-Satterthwaite degrees of freedom are

    .. math:: t = \frac{\bar x_i - \bar x_j}{\sqrt{s_i^2/n_i + s_j^2/n_j}},\quad
              \nu = \frac{(s_i^2/n_i + s_j^2/n_j)^2}{\frac{(s_i^2/n_i)^2}{n_i-1} +
              \frac{(s_j^2/n_j)^2}{n_j-1}}

    and the two-sided p value :math:`p = 2\,P(T_\nu > |t|)` is Sidak-adjusted for the
    :math:`m = k(k-1)/2` comparisons, :math:`p_{adj} = 1 - (1 - p)^m` (Tamhane 1979).

    Parameters
    ----------
    values
        A Series / 1-D array (one factor) or a DataFrame (one comparison table per column).
    groups
        Group (zone) of each row.
    alpha
        Family-wise level for the ``significant`` column.

    Returns
    -------
    DataFrame with columns ``factor, group_a, group_b, n_a, n_b, mean_a, mean_b, diff, t, df,
    p_raw, p_adj, significant``. Pairs where a group has fewer than 2 values get NaN statistics.
    """
    from scipy import stats

    if isinstance(values, pd.DataFrame):
        frame = values.reset_index(drop=True)
    else:
        name = getattr(values, "name", None) or "value"
        frame = pd.DataFrame({name: np.asarray(values, dtype="float64")})
    g = np.asarray(list(groups) if not isinstance(groups, np.ndarray | pd.Series) else groups)
    if len(g) != len(frame):
        raise DataError(f"{len(g)} group labels for {len(frame)} values", where="tamhane_t2",
                        fix="Give one group label per value.")
    levels = sorted(pd.unique(g))
    m = len(levels) * (len(levels) - 1) // 2
    rows = []
    for col in frame.columns:
        x = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype="float64")
        for a_i, a in enumerate(levels):
            for b in levels[a_i + 1 :]:
                xa = x[(g == a) & np.isfinite(x)]
                xb = x[(g == b) & np.isfinite(x)]
                na, nb = len(xa), len(xb)
                row = {"factor": str(col), "group_a": a, "group_b": b, "n_a": na, "n_b": nb,
                       "mean_a": xa.mean() if na else np.nan, "mean_b": xb.mean() if nb else np.nan}
                row["diff"] = row["mean_a"] - row["mean_b"]
                if na >= 2 and nb >= 2:
                    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
                    se2 = va + vb
                    if se2 > 0:
                        t = row["diff"] / np.sqrt(se2)
                        df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
                        p = float(2.0 * stats.t.sf(abs(t), df))
                    else:  # both groups constant
                        t = np.inf if row["diff"] != 0 else np.nan
                        df = float(na + nb - 2)
                        p = 0.0 if row["diff"] != 0 else 1.0
                    p_adj = float(-np.expm1(m * np.log1p(-p))) if (m > 0 and p < 1) else p
                else:
                    t = df = p = p_adj = np.nan
                row.update(t=float(t), df=float(df), p_raw=float(p), p_adj=min(float(p_adj), 1.0),
                           significant=bool(np.isfinite(p_adj) and p_adj < alpha))
                rows.append(row)
    return pd.DataFrame(rows, columns=["factor", "group_a", "group_b", "n_a", "n_b", "mean_a",
                                       "mean_b", "diff", "t", "df", "p_raw", "p_adj", "significant"])


def zone_factors(requested, allowed, default) -> list[str]:
    """The zone factors: ``requested`` (recipe ``zones.factors``) or ``default`` when empty, each
    checked to be one of ``allowed`` (the static layers a workflow has); DataError otherwise."""
    from .errors import DataError

    factors = list(requested) or list(default)
    bad = [f for f in factors if f not in allowed]
    if bad:
        raise DataError(f"unknown zone factor(s) {bad}", where="zones.factors",
                        fix=f"Use static grid layers: {', '.join(allowed)}.")
    return factors
