"""Site-grouped validation: leave-one-site-out and spatially blocked folds.

Every preprocessing step lives inside the estimator (scaler, PCA, zones, feature selection,
forest), and each fold fits a fresh clone on the training sites only, so a held-out site is
never seen by any fitted step (tested by recording the rows every step is fitted on).

Scores (R2, RMSE, bias; :mod:`globalflux.metrics`) are computed on the pooled held-out
predictions, overall and per group (zone).

References
----------
Roberts, D. R. et al. (2017), Cross-validation strategies for data with temporal, spatial,
hierarchical, or phylogenetic structure, Ecography 40, 913-929 (blocked cross-validation).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError, ModelError

__all__ = ["loso", "loso_folds", "spatial_block_folds", "cross_predict", "score"]

log = logging.getLogger("globalflux.validation")


def loso_folds(groups) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-site-out folds: (train rows, test rows) for each site, in order of appearance."""
    g = np.asarray(groups).astype(str)
    sites = pd.unique(g)
    if len(sites) < 2:
        raise DataError(f"{len(sites)} site(s)", where="validation",
                        fix="Leave-one-site-out needs at least 2 sites.")
    return [(np.flatnonzero(g != s), np.flatnonzero(g == s)) for s in sites]


def spatial_block_folds(lat, lon, block_deg: float, *, n_folds: int | None = None,
                        random_state: int = 0) -> np.ndarray:
    """Fold number of each row from square lat/lon blocks of ``block_deg`` degrees.

    Rows in the same block share a fold, so a test site's neighbours within the block are held
    out with it (Roberts et al. 2017). With ``n_folds`` the occupied blocks are shuffled
    (seeded) and dealt into that many folds; otherwise every block is its own fold.

    Parameters
    ----------
    lat, lon
        Coordinates of each row (degrees, EPSG:4326).
    block_deg
        Block edge in degrees (> 0).
    n_folds
        Number of folds to deal blocks into (None: one fold per block).
    random_state
        Seed of the dealing.

    Returns
    -------
    ndarray of int, one fold number per row (0 .. n_folds-1).
    """
    la = np.asarray(lat, dtype="float64")
    lo = np.asarray(lon, dtype="float64")
    if la.shape != lo.shape:
        raise DataError(f"{la.size} latitudes for {lo.size} longitudes", where="spatial_block_folds",
                        fix="Give one latitude and longitude per row.")
    if not (np.isfinite(block_deg) and block_deg > 0):
        raise DataError(f"block_deg={block_deg!r}", where="spatial_block_folds",
                        fix="Give a positive block size in degrees, e.g. 5.")
    if not (np.isfinite(la).all() and np.isfinite(lo).all()):
        raise DataError("missing coordinates", where="spatial_block_folds",
                        fix="Drop rows without latitude/longitude first.")
    iy = np.floor((la + 90.0) / block_deg).astype("int64")
    ix = np.floor((((lo + 180.0) % 360.0)) / block_deg).astype("int64")
    block = iy * 100_000 + ix
    uniq, inv = np.unique(block, return_inverse=True)
    if n_folds is None:
        return inv.astype("int64")
    if n_folds < 2 or n_folds > len(uniq):
        raise DataError(f"n_folds={n_folds} with {len(uniq)} occupied blocks",
                        where="spatial_block_folds",
                        fix="Use 2 <= n_folds <= the number of blocks, or smaller blocks.")
    rng = np.random.RandomState(random_state)
    order = rng.permutation(len(uniq))
    fold_of_block = np.empty(len(uniq), dtype="int64")
    fold_of_block[order] = np.arange(len(uniq)) % n_folds
    return fold_of_block[inv]


def _fit_accepts_groups(est: Any) -> bool:
    try:
        return "groups" in inspect.signature(est.fit).parameters
    except (TypeError, ValueError):
        return False


def _new_estimator(estimator: Any) -> Any:
    if callable(estimator) and not hasattr(estimator, "fit"):
        return estimator()
    from sklearn.base import clone

    return clone(estimator)


def _one_fold(estimator, X, y, groups, train, test, fold, with_std):
    est = _new_estimator(estimator)
    Xtr = X.iloc[train] if isinstance(X, pd.DataFrame) else X[train]
    Xte = X.iloc[test] if isinstance(X, pd.DataFrame) else X[test]
    if _fit_accepts_groups(est):
        est.fit(Xtr, y[train], groups=groups[train])
    else:
        est.fit(Xtr, y[train])
    out = {"row": test, "y_pred": np.asarray(est.predict(Xte), dtype="float64"), "fold": fold}
    if hasattr(est, "predict_zone"):
        out["zone"] = np.asarray(est.predict_zone(Xte))
    if with_std and hasattr(est, "predict_std"):
        out["y_std"] = np.asarray(est.predict_std(Xte), dtype="float64")
    return out


def cross_predict(
    estimator: Any,
    X,
    y,
    groups,
    folds: Iterable[tuple[np.ndarray, np.ndarray]] | np.ndarray,
    *,
    n_jobs: int = 1,
    with_std: bool = False,
) -> pd.DataFrame:
    """Held-out predictions of every row over the given folds.

    Parameters
    ----------
    estimator
        An unfitted estimator (cloned per fold) or a callable returning a fresh one. Its ``fit``
        gets ``groups=`` (site of each training row) when it accepts it.
    X, y, groups
        Table (DataFrame or array), target and site of each row.
    folds
        (train rows, test rows) pairs, or an array of fold numbers per row.
    n_jobs
        Folds run in parallel with joblib (1: sequentially in this process).
    with_std
        Also return ``y_std`` (per-tree spread) where the estimator has ``predict_std``.

    Returns
    -------
    DataFrame indexed like X (one row per row of X that is in a test fold) with columns
    ``site_id, y_obs, y_pred, fold`` and ``zone`` / ``y_std`` where available.
    """
    yv = np.asarray(y, dtype="float64").ravel()
    g = np.asarray(groups).astype(str).ravel()
    n = len(X)
    if yv.shape[0] != n or g.shape[0] != n:
        raise DataError(f"X has {n} rows, y {yv.shape[0]}, groups {g.shape[0]}",
                        where="validation", fix="Give y and groups with one entry per row of X.")
    if isinstance(folds, np.ndarray) and folds.ndim == 1 and np.issubdtype(folds.dtype, np.integer):
        ids = folds
        if ids.shape[0] != n:
            raise DataError(f"{ids.shape[0]} fold numbers for {n} rows", where="validation",
                            fix="Give one fold number per row.")
        folds = [(np.flatnonzero(ids != f), np.flatnonzero(ids == f)) for f in np.unique(ids)]
    folds = list(folds)
    for train, test in folds:
        leak = np.intersect1d(g[train], g[test])
        if leak.size:
            raise ModelError(f"site(s) {list(leak[:5])} are in both the training and test rows of "
                             "a fold", where="validation folds",
                             fix="Build folds by site (loso_folds, spatial_block_folds).")
    if n_jobs == 1:
        parts = []
        step = max(len(folds) // 10, 1)
        from .progress import track

        for i, (tr, te) in enumerate(track(folds, "validation folds", unit="fold")):
            parts.append(_one_fold(estimator, X, yv, g, tr, te, i, with_std))
            if (i + 1) % step == 0 and len(folds) >= 20:
                log.info("validation: %d of %d folds done", i + 1, len(folds))
    else:
        from joblib import Parallel, delayed

        from .progress import track

        gen = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_one_fold)(estimator, X, yv, g, tr, te, i, with_std)
            for i, (tr, te) in enumerate(folds))
        parts = list(track(gen, "validation folds", total=len(folds), unit="fold"))
    rows = np.concatenate([p["row"] for p in parts])
    index = X.index[rows] if isinstance(X, pd.DataFrame) else pd.RangeIndex(n)[rows]
    out = pd.DataFrame({
        "site_id": g[rows],
        "y_obs": yv[rows],
        "y_pred": np.concatenate([p["y_pred"] for p in parts]),
        "fold": np.concatenate([np.full(len(p["row"]), p["fold"]) for p in parts]).astype("int64"),
    }, index=index)
    if all("zone" in p for p in parts):
        out["zone"] = np.concatenate([p["zone"] for p in parts]).astype("int64")
    if with_std and all("y_std" in p for p in parts):
        out["y_std"] = np.concatenate([p["y_std"] for p in parts])
    order = np.argsort(rows, kind="stable")
    return out.iloc[order]


def loso(estimator: Any | Callable[[], Any], X, y, groups, *, n_jobs: int = 1,
         with_std: bool = False) -> pd.DataFrame:
    """Leave-one-site-out predictions: each site is predicted by a model fitted without it.

    See :func:`cross_predict` for the arguments and the returned table (columns
    ``site_id, y_obs, y_pred, fold`` and ``zone`` where the estimator has ``predict_zone``).
    """
    return cross_predict(estimator, X, y, groups, loso_folds(groups), n_jobs=n_jobs,
                         with_std=with_std)


def score(pred_table: pd.DataFrame, by: str | Sequence[str] | None = "zone") -> pd.DataFrame:
    """R2, RMSE and bias of held-out predictions, overall (group ``"all"``) and per ``by`` group.

    Parameters
    ----------
    pred_table
        Output of :func:`loso` / :func:`cross_predict` (``y_obs, y_pred, site_id``).
    by
        Column(s) to group by (skipped when absent or None).

    Returns
    -------
    DataFrame with columns ``group, n, n_sites, r2, rmse, bias``.
    """
    from .metrics import bias, r2, rmse

    for col in ("y_obs", "y_pred"):
        if col not in pred_table.columns:
            raise DataError(f"column {col!r} is missing", where="validation.score",
                            fix="Pass the table returned by loso() or cross_predict().")
    parts: list[tuple[str, pd.DataFrame]] = [("all", pred_table)]
    if by is not None and all(b in pred_table.columns for b in ([by] if isinstance(by, str) else by)):
        for key, grp in pred_table.groupby(by, sort=True):
            key = key if not isinstance(key, tuple) or len(key) > 1 else key[0]
            parts.append((str(key), grp))
    rows = []
    for name, grp in parts:
        o, p = grp["y_obs"].to_numpy(dtype="float64"), grp["y_pred"].to_numpy(dtype="float64")
        rows.append({"group": name, "n": int((np.isfinite(o) & np.isfinite(p)).sum()),
                     "n_sites": int(grp["site_id"].nunique()) if "site_id" in grp else np.nan,
                     "r2": r2(o, p), "rmse": rmse(o, p), "bias": bias(o, p)})
    return pd.DataFrame(rows, columns=["group", "n", "n_sites", "r2", "rmse", "bias"])
