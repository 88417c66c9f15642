"""Area of applicability (AOA) of a spatial prediction model (Meyer and Pebesma 2021).

A map is only as trustworthy as the training data are similar to the pixel being predicted.
The dissimilarity index (DI) of a pixel measures that, after CAST's ``trainDI()``/``aoa()``:

1. Standardise every predictor by the training mean and SD, then multiply each by its weight
   (the model's importance of that predictor; weights sum to 1).
2. ``d(x)`` = Euclidean distance, in that weighted space, from ``x`` to its nearest training
   point; ``d_mean`` = the mean distance between all pairs of training points.
3. ``DI(x) = d(x) / d_mean``.
4. The DI of each *training* point is taken to the nearest training point outside its own
   cross-validation fold (e.g. its site under leave-one-site-out), so it measures how far the
   validation had to extrapolate. The threshold is the upper whisker of those training DIs: the
   largest training DI not above ``Q3 + 1.5 IQR`` (R's ``boxplot.stats``; quartiles here by
   linear interpolation).
5. ``aoa = 1`` where ``DI <= threshold``, else 0.

Nearest neighbours come from :class:`scipy.spatial.cKDTree`. ``d_mean`` over more than
``max_pairs_points`` training points is estimated on a seeded random subset of that size.

References
----------
Meyer, H. and Pebesma, E. (2021), Predicting into unknown space? Estimating the area of
applicability of spatial prediction models, Methods in Ecology and Evolution 12, 1620-1633.
CAST (R package), functions ``trainDI`` and ``aoa``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist

from .errors import DataError, ModelError

__all__ = ["AreaOfApplicability", "upper_whisker"]


def upper_whisker(values: np.ndarray) -> float:
    """Largest value not above ``Q3 + 1.5 IQR`` (the end of a boxplot's upper whisker)."""
    v = np.asarray(values, dtype="float64")
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    q1, q3 = np.quantile(v, [0.25, 0.75])
    limit = q3 + 1.5 * (q3 - q1)
    return float(v[v <= limit].max())


class AreaOfApplicability:
    """Dissimilarity index and area of applicability of a model (see the module docstring).

    Parameters
    ----------
    max_pairs_points
        Training points used for the mean pairwise distance (a seeded subset above this).
    random_state
        Seed of that subset.

    Attributes
    ----------
    features_ : list of str
    mean_, sd_, weights_ : ndarray
        Training mean and SD of each predictor and its weight.
    train_ : ndarray (n, k)
        Standardised, weighted training points.
    d_mean_ : float
        Mean pairwise distance of the training points.
    train_di_ : ndarray (n,)
        Cross-validated DI of each training point.
    threshold_ : float
    """

    def __init__(self, max_pairs_points: int = 4000, random_state: int = 0):
        self.max_pairs_points = max_pairs_points
        self.random_state = random_state

    # ---------------------------------------------------------------------------------- fit
    def fit(self, X: pd.DataFrame, weights: pd.Series | None = None,
            folds: Sequence[Any] | np.ndarray | None = None) -> AreaOfApplicability:
        """Fit on the training table.

        Parameters
        ----------
        X
            Training predictors (one column per predictor).
        weights
            Importance of each predictor (its index names the predictors used); None: equal.
        folds
            Cross-validation fold (or site, for leave-one-site-out) of each training row;
            None: every row is its own fold.
        """
        if weights is None:
            weights = pd.Series(1.0, index=[str(c) for c in X.columns])
        weights = weights[weights > 0]
        feats = [str(c) for c in weights.index]
        missing = [c for c in feats if c not in X.columns]
        if missing:
            raise DataError(f"training table lacks predictor(s) {missing}", where="applicability",
                            fix="Pass the table the model was fitted on.")
        A = X[feats].to_numpy(dtype="float64")
        f = np.arange(len(A)) if folds is None else np.asarray(folds).astype(str)
        ok = np.isfinite(A).all(axis=1)
        A, f = A[ok], f[ok]
        if len(A) < 2:
            raise ModelError(f"{len(A)} complete training row(s)", where="applicability",
                             fix="The area of applicability needs at least 2 training rows.")
        self.features_ = feats
        self.mean_ = A.mean(axis=0)
        sd = A.std(axis=0, ddof=1)
        self.sd_ = np.where(sd > 0, sd, 1.0)
        w = weights.to_numpy(dtype="float64")
        self.weights_ = w / w.sum()
        self.train_ = (A - self.mean_) / self.sd_ * self.weights_
        self.folds_ = f
        P = self.train_
        if len(P) > int(self.max_pairs_points):
            rng = np.random.default_rng(self.random_state)
            P = P[rng.choice(len(P), int(self.max_pairs_points), replace=False)]
        self.d_mean_ = float(pdist(P).mean())
        if not self.d_mean_ > 0:
            raise ModelError("all training points coincide", where="applicability",
                             fix="Train on predictors that vary.")
        di = np.full(len(self.train_), np.nan)
        for fold in np.unique(f):
            inside = f == fold
            if inside.all():
                continue
            d, _ = cKDTree(self.train_[~inside]).query(self.train_[inside], k=1)
            di[inside] = d / self.d_mean_
        self.train_di_ = di
        self.threshold_ = upper_whisker(di)
        self._tree = None
        return self

    # ------------------------------------------------------------------------------ predict
    def _kdtree(self) -> cKDTree:
        if getattr(self, "_tree", None) is None:
            self._tree = cKDTree(self.train_)
        return self._tree

    def predict(self, X) -> np.ndarray:
        """Dissimilarity index of each row (NaN where a predictor is missing)."""
        A = (X[self.features_].to_numpy(dtype="float64") if isinstance(X, pd.DataFrame)
             else np.asarray(X, dtype="float64"))
        out = np.full(len(A), np.nan)
        ok = np.isfinite(A).all(axis=1)
        if ok.any():
            Z = (A[ok] - self.mean_) / self.sd_ * self.weights_
            d, _ = self._kdtree().query(Z, k=1)
            out[ok] = d / self.d_mean_
        return out

    def predict_aoa(self, X) -> np.ndarray:
        """1 inside the area of applicability (DI <= threshold), 0 outside, -1 missing."""
        di = self.predict(X)
        out = np.where(di <= self.threshold_, 1, 0).astype("int8")
        out[~np.isfinite(di)] = -1
        return out

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tree"] = None  # rebuilt on first use
        return state

    # ------------------------------------------------------------------------------ package
    def to_package(self, name: str = "aoa.npz") -> tuple[dict[str, Any], dict[str, bytes]]:
        """Section (JSON) and the training points as ``.npz`` (no object arrays)."""
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean_, sd=self.sd_, weights=self.weights_, train=self.train_,
                 train_di=self.train_di_)
        section = {"method": "Meyer and Pebesma 2021 (CAST trainDI/aoa)", "payload": name,
                   "features": list(self.features_), "d_mean": self.d_mean_,
                   "threshold": self.threshold_, "n_train": int(len(self.train_)),
                   "max_pairs_points": int(self.max_pairs_points),
                   "random_state": int(self.random_state)}
        return section, {name: buf.getvalue()}

    @classmethod
    def from_package(cls, section: dict[str, Any], payloads: dict[str, bytes]) -> AreaOfApplicability:
        """Inverse of :meth:`to_package` (``allow_pickle=False``)."""
        name = section["payload"]
        try:
            with np.load(io.BytesIO(payloads[name]), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in ("mean", "sd", "weights", "train", "train_di")}
        except (ValueError, KeyError, OSError) as exc:
            raise ModelError(f"applicability arrays are unreadable ({exc})", where=name,
                             fix="Rebuild the model package with globalflux.") from None
        obj = cls(max_pairs_points=int(section.get("max_pairs_points", 4000)),
                  random_state=int(section.get("random_state", 0)))
        obj.features_ = list(section["features"])
        obj.mean_, obj.sd_, obj.weights_ = arrays["mean"], arrays["sd"], arrays["weights"]
        obj.train_, obj.train_di_ = arrays["train"], arrays["train_di"]
        obj.d_mean_ = float(section["d_mean"])
        obj.threshold_ = float(section["threshold"])
        obj._tree = None
        return obj
