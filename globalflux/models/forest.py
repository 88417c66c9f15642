"""Zoned random forests (Zhu et al. 2024) and the unified baseline, as scikit-learn estimators.

:class:`ZonedForestRegressor` labels every site with an environmentally similar zone
(:class:`globalflux.zones.ZoneClassifier`, fitted on one row of zone factors per site) and fits
one random forest per zone; :class:`UnifiedForestRegressor` applies the same feature steps to
all sites with one forest, the baseline always reported beside the zoned model.

Feature steps, per zone (or once for the unified forest), on the training rows only:

1. Drop constant predictors, then predictors correlated above ``corr_threshold`` in absolute
   Pearson r (pairwise complete observations): of the most correlated pair, the predictor with
   the larger mean |r| to the others goes first, and the search repeats (as caret's
   ``findCorrelation``; Zhu et al. 2024 used |r| > 0.9).
2. Importance-based backward elimination (``eliminate=True``): fit a forest, drop the predictor
   with the lowest impurity importance (mean decrease in squared error), and keep the smaller
   set while the inner cross-validated R2 does not drop. The inner validation is grouped by
   site on the training sites only: leave-one-site-out (``inner_cv="loso"``) or grouped
   K-fold (``inner_cv=K``). Elimination stops at ``min_features`` predictors.
3. A final forest on the chosen predictors.

Too few sites in a zone: a zone with fewer than ``min_zone_sites`` training sites gets no
forest of its own; its rows are predicted by a forest fitted (with the same feature steps) on
all training sites, the zone is listed in ``fallback_zones_`` and the decision is logged and
recorded in ``notes_``. Fewer sites than zones is a :class:`~globalflux.zones.ZoneFitError`.

Uncertainty: the spread of the individual trees' predictions (:meth:`predict_std`,
:meth:`predict_quantiles`). This is the forest's own sampling spread (bootstrap and feature
subsampling), not a calibrated prediction interval.

References
----------
Breiman, L. (2001), Random forests, Machine Learning 45, 5-32. Zhu et al. (2024), zoned random
forests for heterotrophic respiration (zones, |r| > 0.9 filter, per-zone variable selection,
their Table I). Kuhn, M., caret ``findCorrelation``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import DataError, ModelError

__all__ = [
    "ZonedForestRegressor",
    "UnifiedForestRegressor",
    "ZoneChoiceForestRegressor",
    "ZoneFeatureForestRegressor",
    "ForestFitError",
    "correlation_filter",
    "select_features",
    "make_forest",
    "available_engines",
    "importances_of",
    "tree_predictions",
    "selection_table",
    "table_i",
    "forest_to_payload",
    "forest_from_payload",
]

log = logging.getLogger("globalflux.forest")

ENGINES = ("sklearn",)


class ForestFitError(ModelError, ValueError):
    """Too few rows to fit a forest: a ModelError (CLI exit code 2) that is also a ValueError,
    as scikit-learn expects of an estimator given too few samples."""


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
def make_forest(engine: str = "sklearn", *, n_estimators: int = 100, max_features: float = 1 / 3,
                min_samples_leaf: int = 1, random_state: Any = 0, n_jobs: int = 1):
    """A random forest regressor of the given engine.

    ``"sklearn"`` is :class:`sklearn.ensemble.RandomForestRegressor`. Any other engine is routed
    to ``globalflux.models.fast.make_forest`` when that module exists.
    """
    if engine == "sklearn":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=n_estimators, max_features=max_features,
                                     min_samples_leaf=min_samples_leaf, random_state=random_state,
                                     n_jobs=n_jobs)
    try:
        from . import fast  # type: ignore[attr-defined]
    except ImportError:
        raise ModelError(f"forest engine {engine!r} is not available", where="forest.engine",
                         fix="Use engine 'sklearn'.") from None
    return fast.make_forest(engine, n_estimators=n_estimators, max_features=max_features,
                            min_samples_leaf=min_samples_leaf, random_state=random_state,
                            n_jobs=n_jobs)


def available_engines() -> tuple[str, ...]:
    """Forest engines usable here: ``sklearn``, plus those of ``globalflux.models.fast``."""
    try:
        from . import fast  # type: ignore[attr-defined]
    except ImportError:
        return ENGINES
    return tuple(dict.fromkeys(ENGINES + tuple(fast.ENGINES)))


def importances_of(forest) -> np.ndarray:
    """Impurity importances of a fitted forest, normalised to sum 1.

    sklearn forests: ``feature_importances_`` (mean decrease in squared error). LightGBM-based
    forests of :mod:`globalflux.models.fast`: the booster's total split gain per feature.
    """
    imp = getattr(forest, "feature_importances_", None)
    if imp is None and hasattr(forest, "_booster"):
        imp = forest._booster().feature_importance(importance_type="gain")
    if imp is None:
        raise ModelError(f"{type(forest).__name__} exposes no feature importances",
                         where="forest.engine", fix="Use engine 'sklearn'.")
    imp = np.asarray(imp, dtype="float64")
    total = imp.sum()
    return imp / total if total > 0 else imp


def tree_predictions(forest, X: np.ndarray) -> np.ndarray:
    """Predictions of every tree, shape (n_trees, n_samples)."""
    trees = getattr(forest, "estimators_", None)
    if trees is not None:
        return np.stack([t.predict(X) for t in trees])
    per_tree = getattr(forest, "predict_trees", None)
    if callable(per_tree):
        return np.asarray(per_tree(X))
    raise ModelError(f"{type(forest).__name__} exposes no per-tree predictions",
                     where="forest.engine", fix="Use engine 'sklearn' for uncertainty bands.")


def correlation_filter(X: pd.DataFrame, threshold: float = 0.9) -> list[str]:
    """Predictors kept after dropping constant ones and those correlated above ``threshold``.

    Of the pair with the largest |r| (Pearson, pairwise complete), the one with the larger mean
    |r| to all others is dropped (ties: the later column); repeat until no |r| > threshold.
    """
    cols = [c for c in X.columns if X[c].notna().sum() >= 2 and X[c].nunique(dropna=True) > 1]
    if len(cols) < 2:
        return cols
    r = X[cols].astype("float64").corr().abs().to_numpy().copy()
    np.fill_diagonal(r, 0.0)
    r = np.nan_to_num(r, nan=0.0)
    keep = list(range(len(cols)))
    while len(keep) > 1:
        sub = r[np.ix_(keep, keep)]
        i, j = np.unravel_index(np.argmax(sub), sub.shape)
        if sub[i, j] <= threshold:
            break
        mean_i, mean_j = sub[i].mean(), sub[j].mean()
        drop = i if mean_i > mean_j else (j if mean_j > mean_i else max(i, j))
        keep.pop(int(drop))
    return [cols[k] for k in keep]


def _site_folds(groups: np.ndarray, inner_cv: str | int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped folds over sites: leave-one-site-out or grouped K-fold."""
    from ..validation import loso_folds

    if inner_cv == "loso" or int(inner_cv) >= len(pd.unique(groups)):
        return loso_folds(groups)
    from sklearn.model_selection import GroupKFold

    return list(GroupKFold(n_splits=int(inner_cv)).split(np.zeros(len(groups)), groups=groups))


def _cv_r2(factory: Callable[[], Any], X: np.ndarray, y: np.ndarray, groups: np.ndarray,
           inner_cv: str | int) -> float:
    """Pooled out-of-fold R2 over grouped folds."""
    from ..metrics import r2

    pred = np.full(len(y), np.nan)
    for tr, te in _site_folds(groups, inner_cv):
        pred[te] = factory().fit(X[tr], y[tr]).predict(X[te])
    return r2(y, pred)


def select_features(
    X: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    factory: Callable[[], Any],
    corr_threshold: float = 0.9,
    eliminate: bool = True,
    min_features: int = 3,
    inner_cv: str | int = "loso",
) -> tuple[list[str], pd.DataFrame]:
    """Correlation filter, then importance-based backward elimination while the inner
    grouped-CV R2 does not drop.

    Parameters
    ----------
    X, y, groups
        Training rows of one zone (predictor table, target, site of each row).
    factory
        Returns a fresh, unfitted forest (with ``feature_importances_`` after fit).
    corr_threshold, eliminate, min_features, inner_cv
        See :class:`ZonedForestRegressor`.

    Returns
    -------
    features
        The chosen predictors, most important first.
    history
        One row per elimination step: ``n_features, dropped, score, accepted``.
    """
    feats = correlation_filter(X, corr_threshold)
    if not feats:
        raise DataError("no usable predictor (all constant or empty)", where="forest predictors",
                        fix="Give predictors that vary between the training rows.")
    history: list[dict[str, Any]] = []
    n_sites = len(pd.unique(groups))

    def fit_importance(cols: list[str]) -> pd.Series:
        f = factory().fit(X[cols].to_numpy(dtype="float64"), y)
        return pd.Series(importances_of(f), index=cols)

    if eliminate and len(feats) > min_features and n_sites >= 3:
        score = _cv_r2(factory, X[feats].to_numpy(dtype="float64"), y, groups, inner_cv)
        history.append({"n_features": len(feats), "dropped": "", "score": score, "accepted": True})
        while len(feats) > min_features and np.isfinite(score):
            imp = fit_importance(feats)
            weakest = str(imp.idxmin())
            trial = [c for c in feats if c != weakest]
            new = _cv_r2(factory, X[trial].to_numpy(dtype="float64"), y, groups, inner_cv)
            ok = bool(np.isfinite(new) and new >= score)
            history.append({"n_features": len(trial), "dropped": weakest, "score": new,
                            "accepted": ok})
            if not ok:
                break
            feats, score = trial, new
    imp = fit_importance(feats)
    feats = list(imp.sort_values(ascending=False, kind="mergesort").index)
    return feats, pd.DataFrame(history, columns=["n_features", "dropped", "score", "accepted"])


class _FittedForest:
    """One forest with its chosen predictors (internal)."""

    def __init__(self, features: list[str], forest: Any, importances: pd.Series,
                 history: pd.DataFrame, n_sites: int, n_rows: int):
        self.features = features
        self.forest = forest
        self.importances = importances
        self.history = history
        self.n_sites = n_sites
        self.n_rows = n_rows

    def matrix(self, X: pd.DataFrame) -> np.ndarray:
        return X[self.features].to_numpy(dtype="float64")


# --------------------------------------------------------------------------------------------
# shared estimator machinery
# --------------------------------------------------------------------------------------------
class _ForestBase(RegressorMixin, BaseEstimator):
    """Input handling, feature steps and per-tree spread shared by both estimators."""

    # ---- input -----------------------------------------------------------------------------
    def _frame(self, X, y=None, *, reset: bool):
        if reset:
            X, y = validate_data(self, X, y, reset=True, ensure_all_finite="allow-nan",
                                 y_numeric=True)
        else:
            X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        if reset and X.shape[0] < 2:
            raise ForestFitError(f"{X.shape[0]} training row (n_samples = {X.shape[0]})",
                                 where="forest training table",
                                 fix="A forest needs at least 2 rows; add sites or records.")
        names = getattr(self, "feature_names_in_", None)
        cols = [str(c) for c in names] if names is not None else [f"x{i}" for i in range(X.shape[1])]
        frame = pd.DataFrame(np.asarray(X, dtype="float64"), columns=cols)
        return (frame, None if y is None else np.asarray(y, dtype="float64"))

    def _resolve(self, spec, columns: list[str], key: str) -> list[str]:
        if spec is None:
            return list(columns)
        if isinstance(spec, str):
            spec = [spec]
        out = []
        for item in spec:
            if isinstance(item, int | np.integer) and not isinstance(item, bool):
                if not 0 <= int(item) < len(columns):
                    raise DataError(f"column index {item} is out of range ({len(columns)} columns)",
                                    where=f"forest.{key}", fix="Give column names or valid indices.")
                out.append(columns[int(item)])
            elif str(item) in columns:
                out.append(str(item))
            else:
                raise DataError(f"column {item!r} is not in the training table",
                                where=f"forest.{key}",
                                fix=f"Use some of the table's columns: {', '.join(columns)}.")
        if not out:
            raise DataError("no columns given", where=f"forest.{key}",
                            fix="Name at least one column (or null for all columns).")
        return out

    def _groups(self, groups, n: int) -> np.ndarray:
        if groups is None:
            return np.arange(n).astype(str)
        g = np.asarray(groups).astype(str)
        if g.shape != (n,):
            raise DataError(f"{g.size} site ids for {n} rows", where="groups",
                            fix="Pass one site id per row of X (groups=site_id).")
        return g

    def _check_params(self) -> None:
        engines = available_engines()
        if self.engine not in engines:
            raise ModelError(f"forest engine {self.engine!r} is not available",
                             where="forest.engine", fix=f"Choose one of: {', '.join(engines)}.")
        if not (self.inner_cv == "loso" or (isinstance(self.inner_cv, int | np.integer)
                                            and int(self.inner_cv) >= 2)):
            raise ModelError(f"inner_cv={self.inner_cv!r}", where="forest.inner_cv",
                             fix="Use 'loso' or a number of grouped folds >= 2.")
        if int(self.min_features) < 1:
            raise ModelError(f"min_features={self.min_features!r}", where="forest.min_features",
                             fix="Keep at least 1 predictor.")

    def _factory(self, n_estimators: int | None = None) -> Callable[[], Any]:
        return _ForestFactory(self.engine, n_estimators or self.n_estimators, self.max_features,
                              self.min_samples_leaf, self.random_state, self.n_jobs)

    def _fit_one(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray,
                 predictors: list[str]) -> _FittedForest:
        sel_trees = self.selection_n_estimators or self.n_estimators
        feats, history = select_features(
            X[predictors], y, groups, factory=self._factory(sel_trees),
            corr_threshold=self.corr_threshold, eliminate=self.eliminate,
            min_features=int(self.min_features), inner_cv=self.inner_cv,
        )
        forest = self._factory()().fit(X[feats].to_numpy(dtype="float64"), y)
        imp = pd.Series(importances_of(forest), index=feats)
        return _FittedForest(feats, forest, imp, history, len(pd.unique(groups)), len(y))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # ---- per-tree statistics -----------------------------------------------------------------
    def predict_tree_stats(self, X, quantiles: Sequence[float] = ()) -> np.ndarray:
        """Mean, SD and quantiles of the individual trees' predictions in one pass.

        Returns
        -------
        ndarray (n_samples, 2 + len(quantiles))
            Column 0 is the trees' mean (equal to :meth:`predict` for the sklearn engine: the
            trees are summed in order, then divided by their number, as scikit-learn does),
            column 1 the SD across trees, then one column per quantile. NaN where the row has
            no prediction (e.g. a missing zone factor).
        """
        q = _check_quantiles(quantiles) if len(quantiles) else np.zeros(0)
        return self._apply(X, _TreeStatsFn(q), width=2 + len(q))

    # ---- model package (see globalflux.io.model_package) --------------------------------------
    def _params_json(self) -> dict[str, Any]:
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "zone_classifier"}
        return json_safe(params)

    def _input_section(self) -> dict[str, Any]:
        names = getattr(self, "feature_names_in_", None)
        return {"feature_names_in": None if names is None else [str(c) for c in names],
                "n_features_in": int(self.n_features_in_)}

    def _restore_inputs(self, section: dict[str, Any]) -> None:
        self.n_features_in_ = int(section["n_features_in"])
        if section.get("feature_names_in") is not None:
            self.feature_names_in_ = np.asarray(section["feature_names_in"], dtype=object)


def json_safe(obj: Any) -> Any:
    """Parameters as plain JSON values (numpy scalars to Python, tuples to lists)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise ModelError(f"parameter value {obj!r} cannot be written to a model package",
                     where="model package", fix="Use plain numbers, strings or None as parameters.")


#: types (beyond skops' defaults) trusted when a scikit-learn forest payload is read
SKOPS_TRUSTED = ("sklearn.tree._tree.Tree",)


def forest_to_payload(forest: Any, stem: str) -> tuple[dict[str, Any], str, bytes]:
    """A fitted forest as ``(section, file name, bytes)`` in a safe format.

    scikit-learn forests are written with skops (no pickle; read back with an explicit list of
    trusted types); the LightGBM forests of :mod:`globalflux.models.fast` as LightGBM model text.
    """
    from sklearn.ensemble import RandomForestRegressor

    if isinstance(forest, RandomForestRegressor):
        import skops.io as sio

        return {"format": "skops", "class": "RandomForestRegressor"}, f"{stem}.skops", \
            sio.dumps(forest)
    model_str = getattr(forest, "model_str_", None)
    if model_str is not None:
        params = json_safe(forest.get_params(deep=False))
        return ({"format": "lightgbm", "class": type(forest).__name__, "params": params,
                 "n_features_in": int(forest.n_features_in_)}, f"{stem}.txt",
                model_str.encode("utf-8"))
    raise ModelError(f"a {type(forest).__name__} cannot be packaged", where="model package",
                     fix="Use forest.engine sklearn, lightgbm or lleaves.")


def forest_from_payload(section: dict[str, Any], data: bytes, name: str) -> Any:
    """Inverse of :func:`forest_to_payload` (no unpickling)."""
    fmt = section.get("format")
    if fmt == "skops":
        import skops.io as sio
        from sklearn.ensemble import RandomForestRegressor

        untrusted = set(sio.get_untrusted_types(data=data))
        unknown = sorted(untrusted - set(SKOPS_TRUSTED))
        if unknown:
            raise ModelError(f"payload holds types outside the trusted list: {unknown}",
                             where=name, fix="Rebuild the model package with globalflux.")
        forest = sio.loads(data, trusted=sorted(untrusted))
        if not isinstance(forest, RandomForestRegressor):
            raise ModelError(f"payload holds a {type(forest).__name__}, not a random forest",
                             where=name, fix="Rebuild the model package with globalflux.")
        return forest
    if fmt == "lightgbm":
        import lightgbm as lgb

        from .fast import FastForestRegressor

        forest = FastForestRegressor(**section.get("params", {}))
        forest.model_str_ = data.decode("utf-8")
        forest.booster_ = lgb.Booster(model_str=forest.model_str_)
        forest.n_features_in_ = int(section["n_features_in"])
        forest._compiled = None
        return forest
    raise ModelError(f"unknown forest payload format {fmt!r}", where=name,
                     fix="Rebuild the model package with this version of globalflux.")


def _fitted_to_package(m: _FittedForest, stem: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Section and payloads of one fitted forest. A compiled (lleaves) forest also carries its
    compiled object (``STEM.so``) and the CPU target it was built for (``compiled``), so a
    worker on the same kind of CPU starts without compiling; elsewhere it is rebuilt."""
    sec, fname, data = forest_to_payload(m.forest, stem)
    payloads = {fname: data}
    if getattr(m.forest, "compile", False) and hasattr(m.forest, "compiled_object"):
        target, obj = m.forest.compiled_object()
        payloads[f"{stem}.so"] = obj
        sec["compiled"] = {"payload": f"{stem}.so", "target": dict(target)}
    sec.update(payload=fname, features=list(m.features),
               importances={str(k): float(v) for k, v in m.importances.items()},
               n_sites=int(m.n_sites), n_rows=int(m.n_rows),
               history=json_safe(m.history.to_dict(orient="list")))
    return sec, payloads


def _fitted_from_package(sec: dict[str, Any], payloads: dict[str, bytes]) -> _FittedForest:
    name = sec["payload"]
    forest = forest_from_payload(sec, payloads[name], name)
    comp = sec.get("compiled")
    if comp and comp.get("payload") in payloads:  # sha256 verified by read_package
        forest.compiled_object_ = payloads[comp["payload"]]
        forest.compiled_target_ = {str(k): str(v) for k, v in dict(comp["target"]).items()}
    imp = pd.Series(sec["importances"], dtype="float64").reindex(sec["features"])
    hist = pd.DataFrame(sec.get("history") or {},
                        columns=["n_features", "dropped", "score", "accepted"])
    return _FittedForest(list(sec["features"]), forest, imp, hist, int(sec["n_sites"]),
                         int(sec["n_rows"]))


class _ForestFactory:
    """Picklable forest factory (module-level class, no lambdas)."""

    def __init__(self, engine, n_estimators, max_features, min_samples_leaf, random_state, n_jobs):
        self.kw = dict(n_estimators=n_estimators, max_features=max_features,
                       min_samples_leaf=min_samples_leaf, random_state=random_state, n_jobs=n_jobs)
        self.engine = engine

    def __call__(self):
        return make_forest(self.engine, **self.kw)


_PARAM_DOC = """
    predictors
        Candidate predictor columns (names or indices); None: every column of X (zone factors
        included).
    n_estimators
        Trees per forest.
    max_features
        Share of predictors tried at each split (1/3: R randomForest's regression default).
    min_samples_leaf
        Minimum rows per leaf.
    corr_threshold
        Drop predictors correlated above this |r| (Zhu et al. 2024: 0.9).
    eliminate
        Importance-based backward elimination while the inner grouped-CV R2 does not drop.
    min_features
        Elimination stops at this many predictors.
    inner_cv
        Inner validation of the elimination, grouped by site on the training sites only:
        ``"loso"`` or a number K of grouped folds.
    selection_n_estimators
        Trees of the forests fitted during elimination (None: ``n_estimators``).
    engine
        Forest implementation: ``"sklearn"`` (RandomForestRegressor); ``"lightgbm"`` /
        ``"lleaves"`` through :func:`globalflux.models.fast.make_forest` (bounded LightGBM RF;
        no per-tree spread, so ``predict_std`` needs ``"sklearn"``).
    n_jobs
        Threads per forest.
    random_state
        Seed of every forest.
"""


# --------------------------------------------------------------------------------------------
# the estimators
# --------------------------------------------------------------------------------------------
class ZonedForestRegressor(_ForestBase):
    """One random forest per environmentally similar zone (Zhu et al. 2024).

    Parameters
    ----------
    zone_factors
        Columns of X holding the zone factors (names or indices); None: every column.
    zone_classifier
        An unfitted :class:`globalflux.zones.ZoneClassifier` (cloned); None: the default one.
    min_zone_sites
        A zone with fewer training sites is predicted by a forest on all sites (see module
        docstring); it is listed in ``fallback_zones_``.
    """

    __doc__ = (__doc__ or "") + _PARAM_DOC + """
    Attributes
    ----------
    zone_classifier_ : ZoneClassifier
        Fitted on one row of mean zone factors per training site.
    site_zones_ : pandas.Series
        Zone of each training site.
    zones_ : list of int
        Zones that have their own forest.
    fallback_zones_ : list of int
        Zones predicted by the all-sites forest (too few sites).
    selected_features_ : dict int -> list of str
        Chosen predictors per zone (most important first).
    feature_importances_ : dict int -> pandas.Series
        Impurity importances of each zone's final forest.
    selection_history_ : dict int -> DataFrame
        Elimination steps per zone (n_features, dropped, score, accepted).
    table_selected_ : DataFrame
        Like Zhu et al.'s Table I: one row per candidate predictor, one column per zone, the
        importance rank (1 = most important) where chosen and empty otherwise.
    n_sites_per_zone_ : dict int -> int
    notes_ : list of str
        Decisions worth reporting (fallbacks, skipped elimination).
    """

    def __init__(
        self,
        zone_factors: Sequence[str | int] | None = None,
        zone_classifier: Any = None,
        predictors: Sequence[str | int] | None = None,
        n_estimators: int = 100,
        max_features: float = 1 / 3,
        min_samples_leaf: int = 1,
        corr_threshold: float = 0.9,
        eliminate: bool = True,
        min_features: int = 3,
        inner_cv: str | int = "loso",
        selection_n_estimators: int | None = None,
        min_zone_sites: int = 5,
        engine: str = "sklearn",
        n_jobs: int = 1,
        random_state: Any = 0,
    ):
        self.zone_factors = zone_factors
        self.zone_classifier = zone_classifier
        self.predictors = predictors
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.corr_threshold = corr_threshold
        self.eliminate = eliminate
        self.min_features = min_features
        self.inner_cv = inner_cv
        self.selection_n_estimators = selection_n_estimators
        self.min_zone_sites = min_zone_sites
        self.engine = engine
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y, groups=None):
        """Fit the zones on per-site factor rows, then one forest per zone.

        Parameters
        ----------
        X
            Table with predictor and zone-factor columns (DataFrame or array).
        y
            Target (e.g. RH in g C m-2 yr-1).
        groups
            Site id of each row; None treats every row as its own site.
        """
        from ..zones import ZoneClassifier

        self._check_params()
        frame, yv = self._frame(X, y, reset=True)
        cols = list(frame.columns)
        factors = self._resolve(self.zone_factors, cols, "zone_factors")
        predictors = self._resolve(self.predictors, cols, "predictors")
        g = self._groups(groups, len(frame))
        bad = [c for c in factors if not np.isfinite(frame[c].to_numpy()).all()]
        if bad:
            n_bad = int((~np.isfinite(frame[bad].to_numpy())).any(axis=1).sum())
            raise DataError(f"zone factor(s) {bad} are missing in {n_bad} row(s)",
                            where="zone factors",
                            fix="Drop those rows or fill the factors before fitting.")
        site_factors = frame[factors].groupby(g, sort=True).mean()
        zc = clone(self.zone_classifier) if self.zone_classifier is not None else ZoneClassifier()
        zc.fit(site_factors)
        site_zone = pd.Series(zc.labels_, index=site_factors.index.astype(str), name="zone")
        row_zone = site_zone.reindex(g).to_numpy()
        self.zone_classifier_ = zc
        self.zone_factors_ = factors
        self.predictors_ = predictors
        self.site_zones_ = site_zone
        self.n_sites_per_zone_ = {int(z): int((site_zone == z).sum()) for z in range(zc.n_zones)}
        self.models_: dict[int, _FittedForest] = {}
        self.fallback_zones_: list[int] = []
        self.notes_: list[str] = []
        for z in range(int(zc.n_zones)):
            rows = row_zone == z
            n_sites = self.n_sites_per_zone_[z]
            if n_sites < max(int(self.min_zone_sites), 1):
                self.fallback_zones_.append(z)
                note = (f"zone {z} has {n_sites} training site(s) (< min_zone_sites="
                        f"{self.min_zone_sites}); its rows are predicted by the all-sites forest")
                self.notes_.append(note)
                log.info(note)
                continue
            self.models_[z] = self._fit_one(frame.loc[rows].reset_index(drop=True), yv[rows],
                                            g[rows], predictors)
        if self.fallback_zones_:
            self.fallback_ = self._fit_one(frame, yv, g, predictors)
        else:
            self.fallback_ = None
        self.zones_ = sorted(self.models_)
        self.selected_features_ = {z: list(m.features) for z, m in self.models_.items()}
        self.feature_importances_ = {z: m.importances for z, m in self.models_.items()}
        self.selection_history_ = {z: m.history for z, m in self.models_.items()}
        self.table_selected_ = selection_table(
            {f"zone {z}": m.importances for z, m in self.models_.items()}, predictors)
        return self

    def predict_zone(self, X) -> np.ndarray:
        """Zone of each row from its own zone factors."""
        check_is_fitted(self)
        frame, _ = self._frame(X, reset=False)
        return self._zones_of(frame)

    def _zones_of(self, frame: pd.DataFrame) -> np.ndarray:
        F = frame[self.zone_factors_]
        ok = np.isfinite(F.to_numpy()).all(axis=1)
        z = np.full(len(frame), -1, dtype="int64")
        if ok.any():
            z[ok] = self.zone_classifier_.predict(F.loc[ok])
        return z

    def _apply(self, X, fn: Callable[[_FittedForest, np.ndarray], np.ndarray], width: int = 0):
        check_is_fitted(self)
        frame, _ = self._frame(X, reset=False)
        zones = self._zones_of(frame)
        shape = (len(frame),) if width == 0 else (len(frame), width)
        out = np.full(shape, np.nan)
        for z in np.unique(zones):
            if z < 0:
                continue  # rows without zone factors: NaN
            model = self.models_.get(int(z), self.fallback_)
            if model is None:  # pragma: no cover - every zone has a model or the fallback
                continue
            rows = zones == z
            out[rows] = fn(model, model.matrix(frame.loc[rows]))
        return out

    def predict(self, X) -> np.ndarray:
        """Prediction of each row by its zone's forest (NaN where a zone factor is missing)."""
        return self._apply(X, _predict_mean)

    def predict_std(self, X) -> np.ndarray:
        """Standard deviation of the individual trees' predictions (the forest's spread)."""
        return self._apply(X, _predict_std)

    def predict_quantiles(self, X, quantiles: Sequence[float] = (0.05, 0.5, 0.95)) -> np.ndarray:
        """Quantiles of the individual trees' predictions, shape (n_samples, len(quantiles))."""
        q = _check_quantiles(quantiles)
        return self._apply(X, _QuantileFn(q), width=len(q))

    def predict_trees(self, X) -> np.ndarray:
        """Prediction of every tree, shape (n_estimators, n_samples).

        Row t holds tree t of each row's zone forest, so row t over all rows is one realisation
        of the map (used for the spread of area totals). NaN where a zone factor is missing.
        """
        check_is_fitted(self)
        frame, _ = self._frame(X, reset=False)
        zones = self._zones_of(frame)
        out = np.full((int(self.n_estimators), len(frame)), np.nan)
        for z in np.unique(zones):
            if z < 0:
                continue
            model = self.models_.get(int(z), self.fallback_)
            rows = zones == z
            out[:, rows] = tree_predictions(model.forest, model.matrix(frame.loc[rows]))
        return out

    # ---- model package ----------------------------------------------------------------------
    def to_package(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The fitted model as a manifest section and safe payloads (no pickle).

        Payloads: one forest per zone (and the fallback) as skops or LightGBM text, and the
        zone classifier's arrays as ``zones.npz``. See :mod:`globalflux.io.model_package`.
        """
        check_is_fitted(self)
        payloads: dict[str, bytes] = {}
        forests = {}
        for z, m in self.models_.items():
            sec, pay = _fitted_to_package(m, f"forest_zone{int(z)}")
            forests[str(int(z))] = sec
            payloads.update(pay)
        fallback = None
        if self.fallback_ is not None:
            fallback, pay = _fitted_to_package(self.fallback_, "forest_fallback")
            payloads.update(pay)
        zsec, zpay = self.zone_classifier_.to_package()
        payloads.update(zpay)
        section = {
            "class": "ZonedForestRegressor",
            "params": self._params_json(),
            **self._input_section(),
            "zone_factors": list(self.zone_factors_),
            "predictors": list(self.predictors_),
            "site_zones": {str(k): int(v) for k, v in self.site_zones_.items()},
            "n_sites_per_zone": {str(k): int(v) for k, v in self.n_sites_per_zone_.items()},
            "fallback_zones": [int(z) for z in self.fallback_zones_],
            "notes": list(self.notes_),
            "forests": forests,
            "fallback": fallback,
            "zone_classifier": zsec,
        }
        return section, payloads

    @classmethod
    def from_package(cls, section: dict[str, Any], payloads: dict[str, bytes]):
        """Rebuild the fitted model from :meth:`to_package` output (no unpickling)."""
        from ..zones import ZoneClassifier

        zc = ZoneClassifier.from_package(section["zone_classifier"], payloads)
        est = cls(**section["params"], zone_classifier=ZoneClassifier(**zc.get_params()))
        est._restore_inputs(section)
        est.zone_classifier_ = zc
        est.zone_factors_ = list(section["zone_factors"])
        est.predictors_ = list(section["predictors"])
        est.site_zones_ = pd.Series(section["site_zones"], name="zone", dtype="int64")
        est.n_sites_per_zone_ = {int(k): int(v) for k, v in section["n_sites_per_zone"].items()}
        est.models_ = {int(z): _fitted_from_package(sec, payloads)
                       for z, sec in section["forests"].items()}
        est.fallback_zones_ = [int(z) for z in section["fallback_zones"]]
        est.fallback_ = (None if section.get("fallback") is None
                         else _fitted_from_package(section["fallback"], payloads))
        est.notes_ = list(section.get("notes", []))
        est.zones_ = sorted(est.models_)
        est.selected_features_ = {z: list(m.features) for z, m in est.models_.items()}
        est.feature_importances_ = {z: m.importances for z, m in est.models_.items()}
        est.selection_history_ = {z: m.history for z, m in est.models_.items()}
        est.table_selected_ = selection_table(
            {f"zone {z}": m.importances for z, m in est.models_.items()}, est.predictors_)
        return est

    def importance_weights(self) -> pd.Series:
        """Importance of each chosen predictor averaged over the zone forests (sums to 1),
        weighted by each forest's training rows; the weights of the area of applicability."""
        check_is_fitted(self)
        parts = list(self.models_.values()) + ([self.fallback_] if self.fallback_ else [])
        total = pd.Series(dtype="float64")
        for m in parts:
            total = total.add(m.importances * m.n_rows, fill_value=0.0)
        order = [c for c in self.predictors_ if c in total.index]
        total = total.reindex(order)
        return total / total.sum() if total.sum() > 0 else total


class UnifiedForestRegressor(_ForestBase):
    """The unified baseline: the same feature steps as the zoned forest, one forest for all sites.

    Parameters
    ----------
    zone_factors
        Accepted so that zoned and unified forests take the same arguments; no zones are made.
        With ``predictors=None`` every column (zone factors included) is a candidate predictor.
    """

    __doc__ = (__doc__ or "") + _PARAM_DOC + """
    Attributes
    ----------
    selected_features_ : list of str
    feature_importances_ : pandas.Series
    selection_history_ : DataFrame
    table_selected_ : DataFrame
        One column ``unified`` with the importance rank of each chosen predictor.
    """

    def __init__(
        self,
        zone_factors: Sequence[str | int] | None = None,
        predictors: Sequence[str | int] | None = None,
        n_estimators: int = 100,
        max_features: float = 1 / 3,
        min_samples_leaf: int = 1,
        corr_threshold: float = 0.9,
        eliminate: bool = True,
        min_features: int = 3,
        inner_cv: str | int = "loso",
        selection_n_estimators: int | None = None,
        engine: str = "sklearn",
        n_jobs: int = 1,
        random_state: Any = 0,
    ):
        self.zone_factors = zone_factors
        self.predictors = predictors
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.corr_threshold = corr_threshold
        self.eliminate = eliminate
        self.min_features = min_features
        self.inner_cv = inner_cv
        self.selection_n_estimators = selection_n_estimators
        self.engine = engine
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y, groups=None):
        """Fit the feature steps and one forest on all rows (``groups``: site of each row)."""
        self._check_params()
        frame, yv = self._frame(X, y, reset=True)
        cols = list(frame.columns)
        predictors = self._resolve(self.predictors, cols, "predictors")
        if self.zone_factors is not None:
            self._resolve(self.zone_factors, cols, "zone_factors")  # same checks as zoned
        g = self._groups(groups, len(frame))
        self.predictors_ = predictors
        self.model_ = self._fit_one(frame, yv, g, predictors)
        self.selected_features_ = list(self.model_.features)
        self.feature_importances_ = self.model_.importances
        self.selection_history_ = self.model_.history
        self.table_selected_ = selection_table({"unified": self.model_.importances}, predictors)
        return self

    def _apply(self, X, fn, width: int = 0):
        check_is_fitted(self)
        frame, _ = self._frame(X, reset=False)
        return fn(self.model_, self.model_.matrix(frame))

    def predict(self, X) -> np.ndarray:
        """Prediction of the single forest."""
        return self._apply(X, _predict_mean)

    def predict_std(self, X) -> np.ndarray:
        """Standard deviation of the individual trees' predictions."""
        return self._apply(X, _predict_std)

    def predict_quantiles(self, X, quantiles: Sequence[float] = (0.05, 0.5, 0.95)) -> np.ndarray:
        """Quantiles of the individual trees' predictions, shape (n_samples, len(quantiles))."""
        q = _check_quantiles(quantiles)
        return self._apply(X, _QuantileFn(q), width=len(q))

    def predict_trees(self, X) -> np.ndarray:
        """Prediction of every tree, shape (n_estimators, n_samples)."""
        check_is_fitted(self)
        frame, _ = self._frame(X, reset=False)
        return tree_predictions(self.model_.forest, self.model_.matrix(frame))

    def to_package(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The fitted model as a manifest section and one safe forest payload (no pickle)."""
        check_is_fitted(self)
        sec, payloads = _fitted_to_package(self.model_, "forest")
        section = {"class": "UnifiedForestRegressor", "params": self._params_json(),
                   **self._input_section(), "predictors": list(self.predictors_),
                   "forest": sec}
        return section, payloads

    @classmethod
    def from_package(cls, section: dict[str, Any], payloads: dict[str, bytes]):
        """Rebuild the fitted model from :meth:`to_package` output (no unpickling)."""
        est = cls(**section["params"])
        est._restore_inputs(section)
        est.predictors_ = list(section["predictors"])
        est.model_ = _fitted_from_package(section["forest"], payloads)
        est.selected_features_ = list(est.model_.features)
        est.feature_importances_ = est.model_.importances
        est.selection_history_ = est.model_.history
        est.table_selected_ = selection_table({"unified": est.model_.importances}, est.predictors_)
        return est

    def importance_weights(self) -> pd.Series:
        """Importance of each chosen predictor (sums to 1): the weights of the AOA."""
        check_is_fitted(self)
        return self.model_.importances / max(float(self.model_.importances.sum()), 1e-300)


# --------------------------------------------------------------------------------------------
# zone-aware estimators that cannot lose to the unified forest by construction of the choice
# --------------------------------------------------------------------------------------------
class ZoneChoiceForestRegressor(_ForestBase):
    """Zoned forests where evidence allows, the unified forest elsewhere ("zoning that cannot lose").

    Fits a :class:`ZonedForestRegressor` (zones with fewer than ``min_zone_sites`` training
    groups get no forest of their own) and a :class:`UnifiedForestRegressor` on the same rows.
    Then, per zone, an inner cross-validation over the training rows only, grouped by ``groups``
    (pass location ids), decides: ``choice_cv`` grouped folds; in each, the zone's forest (on the
    fold's training rows of that zone) and the unified forest (on all the fold's training rows)
    are refitted with the predictors chosen on the full training rows and
    ``selection_n_estimators`` trees, and both predict the fold's held-out rows of the zone. The
    zone keeps its own forest only when its pooled inner mean squared error is lower than the
    unified forest's; otherwise (and for zones without a forest) the unified forest predicts the
    zone. The zone assignment itself comes from the zone classifier fitted on all training groups.

    Parameters
    ----------
    zone_factors, zone_classifier, min_zone_sites
        As :class:`ZonedForestRegressor` (``min_zone_sites`` counts ``groups``: locations when
        location ids are passed).
    choice_cv
        Grouped folds of the inner choice (>= 2).
    """

    __doc__ = (__doc__ or "") + _PARAM_DOC + """
    Attributes
    ----------
    zoned_ : ZonedForestRegressor
    unified_ : UnifiedForestRegressor
    choice_ : dict int -> str
        ``"zone"`` or ``"unified"`` for every zone.
    decisions_ : DataFrame
        One row per zone: ``zone, n_groups, n_rows, inner_mse_zone, inner_mse_unified, choice,
        reason``.
    """

    def __init__(
        self,
        zone_factors: Sequence[str | int] | None = None,
        zone_classifier: Any = None,
        predictors: Sequence[str | int] | None = None,
        n_estimators: int = 100,
        max_features: float = 1 / 3,
        min_samples_leaf: int = 1,
        corr_threshold: float = 0.9,
        eliminate: bool = True,
        min_features: int = 3,
        inner_cv: str | int = "loso",
        selection_n_estimators: int | None = None,
        min_zone_sites: int = 5,
        choice_cv: int = 3,
        engine: str = "sklearn",
        n_jobs: int = 1,
        random_state: Any = 0,
    ):
        self.zone_factors = zone_factors
        self.zone_classifier = zone_classifier
        self.predictors = predictors
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.corr_threshold = corr_threshold
        self.eliminate = eliminate
        self.min_features = min_features
        self.inner_cv = inner_cv
        self.selection_n_estimators = selection_n_estimators
        self.min_zone_sites = min_zone_sites
        self.choice_cv = choice_cv
        self.engine = engine
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _common(self) -> dict:
        return dict(predictors=self.predictors, n_estimators=self.n_estimators,
                    max_features=self.max_features, min_samples_leaf=self.min_samples_leaf,
                    corr_threshold=self.corr_threshold, eliminate=self.eliminate,
                    min_features=self.min_features, inner_cv=self.inner_cv,
                    selection_n_estimators=self.selection_n_estimators, engine=self.engine,
                    n_jobs=self.n_jobs, random_state=self.random_state)

    def fit(self, X, y, groups=None):
        """Fit zoned and unified forests, then choose per zone by inner grouped CV."""
        from sklearn.model_selection import GroupKFold

        if not (isinstance(self.choice_cv, int | np.integer) and int(self.choice_cv) >= 2):
            raise ModelError(f"choice_cv={self.choice_cv!r}", where="forest.choice_folds",
                             fix="Use a number of grouped folds >= 2.")
        self._check_params()
        frame, yv = self._frame(X, y, reset=True)
        g = self._groups(groups, len(frame))
        self.zoned_ = ZonedForestRegressor(zone_factors=self.zone_factors,
                                           zone_classifier=self.zone_classifier,
                                           min_zone_sites=self.min_zone_sites,
                                           **self._common()).fit(frame, yv, groups=g)
        self.unified_ = UnifiedForestRegressor(**self._common()).fit(frame, yv, groups=g)
        zones = self.zoned_._zones_of(frame)
        n_groups = len(pd.unique(g))
        folds = []
        if n_groups >= 2:
            k = min(int(self.choice_cv), n_groups)
            folds = list(GroupKFold(n_splits=k).split(np.zeros(len(g)), groups=g))
        small = self._factory(self.selection_n_estimators or self.n_estimators)
        uni = self.unified_.model_
        rows = []
        self.choice_: dict[int, str] = {}
        for z in range(int(self.zoned_.zone_classifier_.n_zones)):
            in_z = zones == z
            row = {"zone": z, "n_groups": int(len(pd.unique(g[in_z]))), "n_rows": int(in_z.sum()),
                   "inner_mse_zone": np.nan, "inner_mse_unified": np.nan}
            own = self.zoned_.models_.get(z)
            if own is None:
                row.update(choice="unified", reason=f"fewer than min_zone_sites="
                           f"{self.min_zone_sites} groups: no forest of its own")
            else:
                pz, pu = [], []
                for tr, te in folds:
                    te_z = te[in_z[te]]
                    tr_z = tr[in_z[tr]]
                    if len(te_z) == 0 or len(tr_z) < 2:
                        continue
                    fz = small().fit(own.matrix(frame.iloc[tr_z]), yv[tr_z])
                    fu = small().fit(uni.matrix(frame.iloc[tr]), yv[tr])
                    pz.append(fz.predict(own.matrix(frame.iloc[te_z])) - yv[te_z])
                    pu.append(fu.predict(uni.matrix(frame.iloc[te_z])) - yv[te_z])
                if pz:
                    mz = float(np.mean(np.concatenate(pz) ** 2))
                    mu = float(np.mean(np.concatenate(pu) ** 2))
                    row.update(inner_mse_zone=mz, inner_mse_unified=mu)
                    if mz < mu:
                        row.update(choice="zone", reason="lower inner MSE than the unified forest")
                    else:
                        row.update(choice="unified", reason="the unified forest's inner MSE is "
                                   "not higher")
                else:
                    row.update(choice="unified", reason="no inner fold held out rows of the zone")
            self.choice_[z] = row["choice"]
            rows.append(row)
        self.decisions_ = pd.DataFrame(rows, columns=["zone", "n_groups", "n_rows",
                                                      "inner_mse_zone", "inner_mse_unified",
                                                      "choice", "reason"])
        for r in rows:
            log.debug("zone choice: zone %d (%d groups) -> %s (%s)", r["zone"], r["n_groups"],
                     r["choice"], r["reason"])
        return self

    def predict_zone(self, X) -> np.ndarray:
        """Zone of each row from its own zone factors."""
        check_is_fitted(self)
        frame, _ = self._frame(X, reset=False)
        return self.zoned_.predict_zone(frame)

    def predict_components(self, X) -> dict[str, np.ndarray]:
        """Predictions of the plain zoned and the unified forest (fitted inside this one)."""
        check_is_fitted(self)
        frame, _ = self._frame(X, reset=False)
        return {"zoned": self.zoned_.predict(frame), "unified": self.unified_.predict(frame)}

    def _apply(self, X, fn: Callable[[_FittedForest, np.ndarray], np.ndarray], width: int = 0):
        check_is_fitted(self)
        frame, _ = self._frame(X, reset=False)
        zones = self.zoned_._zones_of(frame)
        shape = (len(frame),) if width == 0 else (len(frame), width)
        out = np.full(shape, np.nan)
        uni = self.unified_.model_
        for z in np.unique(zones):
            if z < 0:
                continue
            model = self.zoned_.models_[int(z)] if self.choice_.get(int(z)) == "zone" else uni
            rows = zones == z
            out[rows] = fn(model, model.matrix(frame.loc[rows]))
        return out

    def predict(self, X) -> np.ndarray:
        """Prediction by the chosen forest of each row's zone (NaN where a zone factor is missing)."""
        return self._apply(X, _predict_mean)

    def predict_std(self, X) -> np.ndarray:
        """Standard deviation of the chosen forest's trees (the forest's spread)."""
        return self._apply(X, _predict_std)


class ZoneFeatureForestRegressor(_ForestBase):
    """One forest for all rows with zone membership as extra predictors (one-hot ``zone_<k>``).

    The zone classifier is fitted on one row of mean zone factors per training group (as in
    :class:`ZonedForestRegressor`); each row gets ``zone_0 .. zone_{k-1}`` indicator columns,
    which join the candidate predictors of a :class:`UnifiedForestRegressor` (correlation filter
    and elimination included, so the zones stay only if they help the inner validation).

    Parameters
    ----------
    zone_factors, zone_classifier
        As :class:`ZonedForestRegressor`.
    """

    __doc__ = (__doc__ or "") + _PARAM_DOC + """
    Attributes
    ----------
    zone_classifier_ : ZoneClassifier
    forest_ : UnifiedForestRegressor
        Fitted on the predictors plus the zone indicator columns.
    selected_features_ : list of str
    """

    def __init__(
        self,
        zone_factors: Sequence[str | int] | None = None,
        zone_classifier: Any = None,
        predictors: Sequence[str | int] | None = None,
        n_estimators: int = 100,
        max_features: float = 1 / 3,
        min_samples_leaf: int = 1,
        corr_threshold: float = 0.9,
        eliminate: bool = True,
        min_features: int = 3,
        inner_cv: str | int = "loso",
        selection_n_estimators: int | None = None,
        engine: str = "sklearn",
        n_jobs: int = 1,
        random_state: Any = 0,
    ):
        self.zone_factors = zone_factors
        self.zone_classifier = zone_classifier
        self.predictors = predictors
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.corr_threshold = corr_threshold
        self.eliminate = eliminate
        self.min_features = min_features
        self.inner_cv = inner_cv
        self.selection_n_estimators = selection_n_estimators
        self.engine = engine
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _with_zones(self, frame: pd.DataFrame) -> pd.DataFrame:
        F = frame[self.zone_factors_]
        ok = np.isfinite(F.to_numpy()).all(axis=1)
        z = np.full(len(frame), -1, dtype="int64")
        if ok.any():
            z[ok] = self.zone_classifier_.predict(F.loc[ok])
        out = frame.copy()
        for k in range(int(self.zone_classifier_.n_zones)):
            out[f"zone_{k}"] = np.where(ok, (z == k).astype("float64"), np.nan)
        return out

    def fit(self, X, y, groups=None):
        """Fit the zones on per-group factor rows, then one forest with zone indicators."""
        from ..zones import ZoneClassifier

        self._check_params()
        frame, yv = self._frame(X, y, reset=True)
        cols = list(frame.columns)
        factors = self._resolve(self.zone_factors, cols, "zone_factors")
        predictors = self._resolve(self.predictors, cols, "predictors")
        g = self._groups(groups, len(frame))
        if not np.isfinite(frame[factors].to_numpy()).all():
            raise DataError(f"zone factor(s) {factors} are missing in some rows",
                            where="zone factors",
                            fix="Drop those rows or fill the factors before fitting.")
        zc = clone(self.zone_classifier) if self.zone_classifier is not None else ZoneClassifier()
        zc.fit(frame[factors].groupby(g, sort=True).mean())
        self.zone_classifier_ = zc
        self.zone_factors_ = factors
        ext = self._with_zones(frame)
        zcols = [f"zone_{k}" for k in range(int(zc.n_zones))]
        self.forest_ = UnifiedForestRegressor(
            predictors=predictors + zcols, n_estimators=self.n_estimators,
            max_features=self.max_features, min_samples_leaf=self.min_samples_leaf,
            corr_threshold=self.corr_threshold, eliminate=self.eliminate,
            min_features=self.min_features, inner_cv=self.inner_cv,
            selection_n_estimators=self.selection_n_estimators, engine=self.engine,
            n_jobs=self.n_jobs, random_state=self.random_state).fit(ext, yv, groups=g)
        self.selected_features_ = list(self.forest_.selected_features_)
        return self

    def predict_zone(self, X) -> np.ndarray:
        """Zone of each row from its own zone factors (-1 where one is missing)."""
        check_is_fitted(self)
        frame, _ = self._frame(X, reset=False)
        ext = self._with_zones(frame)
        zcols = [f"zone_{k}" for k in range(int(self.zone_classifier_.n_zones))]
        Z = ext[zcols].to_numpy()
        return np.where(np.isfinite(Z).all(axis=1), np.nanargmax(np.nan_to_num(Z), axis=1), -1)

    def predict(self, X) -> np.ndarray:
        """Prediction of the forest (zone indicators from the row's own zone factors)."""
        check_is_fitted(self)
        frame, _ = self._frame(X, reset=False)
        return self.forest_.predict(self._with_zones(frame))

    def predict_std(self, X) -> np.ndarray:
        """Standard deviation of the individual trees' predictions."""
        check_is_fitted(self)
        frame, _ = self._frame(X, reset=False)
        return self.forest_.predict_std(self._with_zones(frame))


# --------------------------------------------------------------------------------------------
# helpers (module level: picklable)
# --------------------------------------------------------------------------------------------
def _predict_mean(model: _FittedForest, M: np.ndarray) -> np.ndarray:
    return np.asarray(model.forest.predict(M), dtype="float64")


def _predict_std(model: _FittedForest, M: np.ndarray) -> np.ndarray:
    return tree_predictions(model.forest, M).std(axis=0)


class _TreeStatsFn:
    """Mean (trees summed in order, as scikit-learn's predict), SD and quantiles of the trees."""

    def __init__(self, q: np.ndarray):
        self.q = q

    def __call__(self, model: _FittedForest, M: np.ndarray) -> np.ndarray:
        P = tree_predictions(model.forest, M)
        out = np.empty((M.shape[0], 2 + len(self.q)))
        if getattr(model.forest, "estimators_", None) is not None:
            acc = np.zeros(M.shape[0])
            for row in P:
                acc += row
            out[:, 0] = acc / len(P)
        else:  # LightGBM RF: the booster's own average
            out[:, 0] = _predict_mean(model, M)
        out[:, 1] = P.std(axis=0)
        if len(self.q):
            out[:, 2:] = np.quantile(P, self.q, axis=0).T
        return out


class _QuantileFn:
    def __init__(self, q: np.ndarray):
        self.q = q

    def __call__(self, model: _FittedForest, M: np.ndarray) -> np.ndarray:
        return np.quantile(tree_predictions(model.forest, M), self.q, axis=0).T


def _check_quantiles(quantiles: Sequence[float]) -> np.ndarray:
    q = np.asarray(list(quantiles), dtype="float64")
    if q.ndim != 1 or q.size == 0 or ((q < 0) | (q > 1)).any():
        raise ModelError(f"quantiles {list(quantiles)!r}", where="predict_quantiles",
                         fix="Give quantiles between 0 and 1, e.g. (0.05, 0.5, 0.95).")
    return q


def selection_table(importances: dict[str, pd.Series], candidates: Sequence[str]) -> pd.DataFrame:
    """Table I of Zhu et al. (2024) style: candidate predictors x models, importance rank where
    chosen (1 = most important), ``<NA>`` where not chosen; column ``n_models`` counts choices.

    Parameters
    ----------
    importances
        Model name (``"zone 0"``, ``"unified"``) -> importances of its chosen predictors.
    candidates
        Every candidate predictor (the table's rows, in this order).
    """
    table = pd.DataFrame(index=pd.Index([str(c) for c in candidates], name="predictor"))
    for name, imp in importances.items():
        rank = imp.rank(ascending=False, method="first").astype("int64")
        table[name] = rank.reindex(table.index).astype("Int64")
    table["n_models"] = table.notna().sum(axis=1).astype("int64")
    return table


def table_i(zoned, unified) -> pd.DataFrame:
    """Zhu et al. (2024) Table I layout: candidates x (zones, unified), importance ranks."""
    imps = {f"zone {z}": imp for z, imp in zoned.feature_importances_.items()}
    imps["unified"] = unified.feature_importances_
    return selection_table(imps, zoned.predictors_)
