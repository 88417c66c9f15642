"""Validation schemes: record-level k-fold, leave-one-site-out, leave-one-location-out, blocks.

Three schemes are reported side by side by every forest workflow (:func:`validate_schemes`):

``record_kfold``
    Record-level K-fold (shuffled, seeded). Records of one site land in training and test folds,
    so it is optimistic; it is what most published annual-RH random forests report.
``loso``
    Leave-one-site-out: all records of a site are held out together.
``lolo``
    Leave-one-location-out, the headline: a *location* is a connected cluster of sites closer than
    ``location_km`` to one another (great-circle distance), optionally joined with every site of
    the same study (:func:`location_groups`). Co-located plots (paired trenching plots, chamber
    transects) are held out together, so none of them helps predict its neighbour.

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

__all__ = ["loso", "loso_folds", "spatial_block_folds", "cross_predict", "score",
           "location_groups", "record_kfold_folds", "scheme_folds", "validate_schemes",
           "SCHEMES", "SCHEME_LABELS", "EARTH_RADIUS_KM", "temporal_split"]

#: The validation schemes, most optimistic first; the last is the headline.
SCHEMES = ("record_kfold", "loso", "lolo")
#: How the report names each scheme.
SCHEME_LABELS = {
    "record_kfold": "record-level k-fold (optimistic; as most papers report it)",
    "loso": "leave-one-site-out",
    "lolo": "leave-one-location-out (headline)",
}
#: Mean Earth radius (km) for great-circle distances.
EARTH_RADIUS_KM = 6371.0088

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
    if hasattr(est, "predict_components"):
        out["components"] = {k: np.asarray(v, dtype="float64")
                             for k, v in est.predict_components(Xte).items()}
    if hasattr(est, "predict_zone"):
        out["zone"] = np.asarray(est.predict_zone(Xte))
    if isinstance(getattr(est, "decisions_", None), pd.DataFrame):
        out["decisions"] = est.decisions_.assign(fold=fold)
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
    fit_groups=None,
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
    fit_groups
        Groups handed to the estimator's ``fit`` (its inner validation and zones); default
        ``groups``. The leak guard always checks ``groups``: no group is in both the training
        and the test rows of a fold.

    Returns
    -------
    DataFrame indexed like X (one row per row of X that is in a test fold) with columns
    ``site_id, y_obs, y_pred, fold`` and ``zone`` / ``y_std`` where available, and
    ``y_pred_<name>`` for each component model of estimators with ``predict_components``.
    Estimators with a ``decisions_`` table (zone choice) leave each fold's decisions in
    ``attrs["fold_decisions"]``.
    """
    yv = np.asarray(y, dtype="float64").ravel()
    g = np.asarray(groups).astype(str).ravel()
    n = len(X)
    if yv.shape[0] != n or g.shape[0] != n:
        raise DataError(f"X has {n} rows, y {yv.shape[0]}, groups {g.shape[0]}",
                        where="validation", fix="Give y and groups with one entry per row of X.")
    fg = g if fit_groups is None else np.asarray(fit_groups).astype(str).ravel()
    if fg.shape[0] != n:
        raise DataError(f"{fg.shape[0]} fit groups for {n} rows", where="validation",
                        fix="Give fit_groups with one entry per row of X.")
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
            parts.append(_one_fold(estimator, X, yv, fg, tr, te, i, with_std))
            if (i + 1) % step == 0 and len(folds) >= 20:
                log.info("validation: %d of %d folds done", i + 1, len(folds))
    else:
        from joblib import Parallel, delayed

        from .progress import track

        gen = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_one_fold)(estimator, X, yv, fg, tr, te, i, with_std)
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
    if all("decisions" in p for p in parts):
        out.attrs["fold_decisions"] = pd.concat([p["decisions"] for p in parts], ignore_index=True)
    if all("components" in p for p in parts):
        for name in parts[0]["components"]:
            out[f"y_pred_{name}"] = np.concatenate([p["components"][name] for p in parts])
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


# ------------------------------------------------------------------------------- schemes
def location_groups(lat, lon, *, location_km: float = 5.0, study=None) -> np.ndarray:
    """Location id of each row: connected clusters of points closer than ``location_km``.

    Two rows are linked when their great-circle (haversine) distance is <= ``location_km``, or,
    with ``study``, when they share a study id; a location is a connected component of these
    links (single linkage, so a chain of plots 4 km apart forms one location). Rows with the
    same coordinates are always one location.

    Parameters
    ----------
    lat, lon
        Coordinates of each row (degrees, EPSG:4326); the same site may repeat.
    location_km
        Linking distance in km (>= 0).
    study
        Optional study id of each row (e.g. SRDB ``Study_number``); NaN/empty links nothing.

    Returns
    -------
    ndarray of str: ``"L0000"``, ``"L0001"`` ... in order of first appearance.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import BallTree

    la = np.asarray(lat, dtype="float64").ravel()
    lo = np.asarray(lon, dtype="float64").ravel()
    if la.shape != lo.shape:
        raise DataError(f"{la.size} latitudes for {lo.size} longitudes", where="location_groups",
                        fix="Give one latitude and longitude per row.")
    if not (np.isfinite(la).all() and np.isfinite(lo).all()):
        raise DataError("missing coordinates", where="location_groups",
                        fix="Drop rows without latitude/longitude first.")
    if not (np.isfinite(location_km) and location_km >= 0):
        raise DataError(f"location_km={location_km!r}", where="validation.location_km",
                        fix="Give a distance in km >= 0, e.g. 5.")
    n = la.size
    if n == 0:
        return np.array([], dtype=str)
    pts = np.unique(np.column_stack([la, lo]), axis=0, return_inverse=True)
    uniq, inv = pts[0], np.asarray(pts[1]).ravel()
    tree = BallTree(np.deg2rad(uniq), metric="haversine")
    nbrs = tree.query_radius(np.deg2rad(uniq), r=float(location_km) / EARTH_RADIUS_KM)
    rows = np.concatenate([np.full(len(nb), i) for i, nb in enumerate(nbrs)])
    cols = np.concatenate(nbrs)
    edges_r, edges_c = [rows], [cols]
    if study is not None:
        st = pd.Series(np.asarray(study, dtype=object).ravel())
        if len(st) != n:
            raise DataError(f"{len(st)} study ids for {n} rows", where="location_groups",
                            fix="Give one study id per row.")
        ok = st.notna() & (st.astype(str).str.strip() != "")
        for _, idx in st[ok].groupby(st[ok].astype(str)).groups.items():
            pts_of = np.unique(inv[np.asarray(idx)])
            edges_r.append(np.full(len(pts_of) - 1, pts_of[0]))
            edges_c.append(pts_of[1:])
    r, c = np.concatenate(edges_r), np.concatenate(edges_c)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(len(uniq), len(uniq)))
    _, comp = connected_components(graph, directed=False)
    row_comp = comp[inv]
    # number the locations in order of first appearance (stable ids)
    order = {c: i for i, c in enumerate(pd.unique(row_comp))}
    return np.array([f"L{order[c]:04d}" for c in row_comp])


def record_kfold_folds(n: int, k: int = 10, *, random_state: int = 0) -> np.ndarray:
    """Fold number of each of ``n`` records, shuffled (seeded) into ``k`` folds.

    Records of one site can land in different folds: optimistic, as most papers report.
    """
    if not (isinstance(k, int | np.integer) and 2 <= k <= n):
        raise DataError(f"k={k!r} folds for {n} records", where="validation.k_folds",
                        fix="Use 2 <= k <= the number of records, e.g. 10.")
    rng = np.random.RandomState(random_state)
    fold = np.empty(n, dtype="int64")
    fold[rng.permutation(n)] = np.arange(n) % int(k)
    return fold


def scheme_folds(scheme: str, *, sites, locations, k: int = 10,
                 random_state: int = 0) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """(leak-guard groups, folds) of one validation scheme.

    ``record_kfold`` guards records (each row its own group), ``loso`` sites and ``lolo``
    locations: no guarded group is ever in both the training and the test rows of a fold.
    """
    s = np.asarray(sites).astype(str)
    loc = np.asarray(locations).astype(str)
    if s.shape != loc.shape:
        raise DataError(f"{s.size} site ids for {loc.size} location ids", where="validation",
                        fix="Give one site and one location per row.")
    if scheme == "record_kfold":
        ids = record_kfold_folds(len(s), int(k), random_state=random_state)
        guard = np.arange(len(s)).astype(str)
        return guard, [(np.flatnonzero(ids != f), np.flatnonzero(ids == f)) for f in range(int(k))]
    if scheme == "loso":
        return s, loso_folds(s)
    if scheme == "lolo":
        return loc, loso_folds(loc)
    raise DataError(f"validation scheme {scheme!r}", where="validation.schemes",
                    fix=f"Use some of: {', '.join(SCHEMES)}.")


def _scheme_predictions(est, X, y, guard, folds, *, n_jobs, with_std, fit_groups, ctx):
    """:func:`cross_predict` of one model under one scheme, inside ``ctx`` when given."""
    if ctx is None:
        return cross_predict(est, X, y, guard, folds, n_jobs=n_jobs, with_std=with_std,
                             fit_groups=fit_groups)
    with ctx:
        return cross_predict(est, X, y, guard, folds, n_jobs=n_jobs, with_std=with_std,
                             fit_groups=fit_groups)


def validate_schemes(
    models: dict[str, Any],
    X,
    y,
    *,
    sites,
    locations,
    schemes: Sequence[str] = SCHEMES,
    k: int = 10,
    random_state: int = 0,
    n_jobs: int = 1,
    with_std: bool = False,
    on_fold: Callable[[str, str], Any] | None = None,
) -> tuple[pd.DataFrame, dict[tuple[str, str], pd.DataFrame]]:
    """Every model under every scheme: the ``validation_schemes`` table and the predictions.

    Parameters
    ----------
    models
        Name -> unfitted estimator (cloned per fold). An estimator with ``predict_components``
        (e.g. :class:`~globalflux.models.forest.ZoneChoiceForestRegressor`) also yields one
        table per component (``<name>`` of each ``y_pred_<name>`` column), from the same fits.
    X, y
        Predictor table and target.
    sites, locations
        Site and location id of each row (:func:`location_groups`). The estimators' ``fit``
        gets ``groups=locations`` in every scheme, so inner validation (feature elimination,
        zone choice) never splits a location either.
    schemes
        Some of :data:`SCHEMES`.
    k, random_state
        Folds and seed of ``record_kfold``.
    on_fold
        Called as ``on_fold(scheme, model)`` before each run (e.g. a logging step context).

    Returns
    -------
    table
        Columns ``scheme, model, n, n_groups, r2, rmse, bias`` (``n_groups``: sites for
        ``record_kfold`` and ``loso``, locations for ``lolo``).
    predictions
        (scheme, model) -> held-out predictions (:func:`cross_predict` columns plus
        ``location_id``; ``site_id`` is the site in every scheme).
    """
    from .metrics import bias, r2, rmse

    s = np.asarray(sites).astype(str)
    loc = np.asarray(locations).astype(str)
    rows, preds = [], {}
    done: dict[tuple, dict[str, pd.DataFrame]] = {}  # held-out partition -> predictions per model
    for scheme in schemes:
        guard, folds = scheme_folds(scheme, sites=s, locations=loc, k=k, random_state=random_state)
        # two schemes with the same held-out sets (every location one site: lolo == loso) give
        # the same fits: compute them once
        key = tuple(sorted(tuple(np.sort(np.asarray(te)).tolist()) for _, te in folds))
        for name, est in models.items():
            if name in done.get(key, {}):
                pred = done[key][name].copy()
                log.info("%s / %s: the same held-out sets as an earlier scheme; reused", scheme,
                         name)
            else:
                pred = _scheme_predictions(est, X, y, guard, folds, n_jobs=n_jobs,
                                           with_std=with_std, fit_groups=loc,
                                           ctx=on_fold(scheme, name) if on_fold else None)
                done.setdefault(key, {})[name] = pred.copy()
            row_pos = (X.index.get_indexer(pred.index) if isinstance(X, pd.DataFrame)
                       else pred.index.to_numpy())
            pred["site_id"] = s[row_pos]
            pred["location_id"] = loc[row_pos]
            outputs = {name: pred}
            for col in [c for c in pred.columns if c.startswith("y_pred_")]:
                comp = pred.drop(columns=[c for c in pred.columns if c.startswith("y_pred")])
                comp["y_pred"] = pred[col].to_numpy()
                outputs[col[len("y_pred_"):]] = comp
            for mname, p in outputs.items():
                preds[(scheme, mname)] = p
                o, q = p["y_obs"].to_numpy(), p["y_pred"].to_numpy()
                unit = p["location_id"] if scheme == "lolo" else p["site_id"]
                rows.append({"scheme": scheme, "model": mname, "n": int((np.isfinite(o)
                                                                         & np.isfinite(q)).sum()),
                             "n_groups": int(unit.nunique()), "r2": r2(o, q), "rmse": rmse(o, q),
                             "bias": bias(o, q)})
    table = pd.DataFrame(rows, columns=["scheme", "model", "n", "n_groups", "r2", "rmse", "bias"])
    return table, preds


def temporal_split(obs, fraction: float = 0.8) -> np.ndarray:
    """True for the training part of one site's daily series: days up to and including the
    observed day at position ``round(fraction * n_obs)`` (in time); the rest is the test part.

    ``obs`` is the site's daily target (NaN = not observed). The split is by the site's own
    observed days, so gaps do not shift it. With fewer than 2 observed days everything trains.
    """
    o = np.asarray(obs, dtype="float64").ravel()
    idx = np.flatnonzero(np.isfinite(o))
    train = np.zeros(o.shape, dtype=bool)
    if idx.size < 2:
        train[:] = True
        return train
    n_train = int(round(fraction * idx.size))
    n_train = min(max(n_train, 1), idx.size - 1)
    train[: idx[n_train - 1] + 1] = True
    return train
