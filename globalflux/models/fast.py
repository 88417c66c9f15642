"""Fast forest inference: bounded-size random forests (LightGBM RF mode) compiled by ``lleaves``.

Why
---
scikit-learn's default random forest (fully grown trees, ``max_features=1.0``) predicts in
C already; deep trees have thousands of leaves, so most time goes to memory-bound tree walks.
A forest whose size is *bounded* (``num_leaves``, chosen by leave-one-site-out so the accuracy
holds) and compiled to machine code by `lleaves <https://github.com/siboehm/lleaves>`_ (LLVM)
predicts many times faster per core. The forest is a true random forest: LightGBM's
``boosting="rf"`` averages trees grown on bootstrap-like row samples (``bagging_fraction``,
drawn without replacement) with optional per-node feature sampling (``feature_fraction_bynode``
, the ``max_features`` of Breiman 2001).

Public API
----------
``FastForestRegressor(n_estimators=100, num_leaves=127, max_depth=-1, min_child_samples=1,
bagging_fraction=0.632, feature_fraction_bynode=1.0, compile=True, compile_min_rows=10000,
n_jobs=1, random_state=0)``
    A scikit-learn regressor. ``compile=True`` predicts tables of at least
    ``compile_min_rows`` rows with the lleaves-compiled model (compiled on first use),
    smaller ones and ``compile=False`` with LightGBM's own ``Booster.predict``. The default
    bound of 127 leaves kept the pooled LOSO R2 within 0.006 of scikit-learn's default forest
    on the synthetic world (0.896 vs 0.901; 63 leaves: 0.892). The compiled model is not pickled: it is
    rebuilt (or loaded from the per-user verified cache, see below) on first use after
    unpickling, e.g. once per Dask worker.

Compiled cache
--------------
Compiled forests are machine code: loading one runs it. They live in a per-user folder
(:func:`compiled_cache_dir`, mode 0700, ``platformdirs`` user cache or ``$GLOBALFLUX_LLEAVES_CACHE``),
keyed by the SHA-256 of the model text. The checksums of the model text and the object file are
recorded when an entry is written and verified before it is loaded (:func:`verify_cache_entry`);
an entry owned by someone else, writable by others, a symlink, or not matching its record is
ignored and rebuilt. An unsafe cache folder (another owner, writable by others, below a
world-writable folder without sticky bit) is never used.

``make_forest(engine, **params)``
    ``engine`` (the recipe key ``forest.engine``): ``"sklearn"`` (RandomForestRegressor),
    ``"lightgbm"`` (FastForestRegressor, LightGBM predict) or ``"lleaves"`` (compiled).
    ``params`` use sklearn names where they exist (``n_estimators``, ``random_state``,
    ``n_jobs``, ``max_leaf_nodes`` = ``num_leaves``, ``min_samples_leaf`` =
    ``min_child_samples``, ``max_depth``, ``max_features`` = ``feature_fraction_bynode``).

``select_num_leaves(X, y, groups, *, candidates=(15, 31, 63, 127, 255), tol=0.01,
reference_r2=None, **params) -> (num_leaves, table)``
    Leave-one-site-out R2 of each candidate size; the smallest whose pooled LOSO R2 is within
    ``tol`` of the best (or of ``reference_r2``, e.g. the default sklearn forest's).

Equality of the compiled model
------------------------------
lleaves evaluates the same trees with the same thresholds; only the order of floating-point
additions of the tree outputs may differ, so predictions agree with ``Booster.predict`` to
within a few ulp: ``|lleaves - lightgbm| <= 1e-12 * max(1, |prediction|)`` (measured max
difference ~4e-15 on unit-scale targets). Tests check this bound.

References
----------
Breiman, L. (2001), Random forests, Machine Learning 45, 5-32. Ke, G. et al. (2017),
LightGBM: a highly efficient gradient boosting decision tree, NeurIPS. Boehm, S. (2021),
lleaves: a LLVM-based compiler for LightGBM decision trees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import ModelError
from ..io.tables import file_sha256

__all__ = ["FastForestRegressor", "make_forest", "select_num_leaves", "ENGINES",
           "COMPILED_RTOL", "compiled_cache_dir", "verify_cache_entry", "cpu_target",
           "cached_object"]

ENGINES = ("sklearn", "lightgbm", "lleaves")
#: documented agreement of lleaves with LightGBM's predict (relative to max(1, |y|))
COMPILED_RTOL = 1e-12

_COMPILE_LOCK = threading.Lock()


CACHE_ENV = "GLOBALFLUX_LLEAVES_CACHE"
log = logging.getLogger("globalflux")


def _unsafe_reason(path: Path, *, own: bool = True) -> str | None:
    """Why ``path`` (file or folder) must not be trusted, or None.

    Unsafe: a symlink, owned by another user (``own``), writable by group or others.
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot stat ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if own and hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not by you"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _ancestors_safe(path: Path) -> str | None:
    """None when no ancestor of ``path`` lets others swap it (world-writable without sticky bit)."""
    for parent in path.resolve().parents:
        try:
            st = os.stat(parent)
        except OSError:
            continue
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            return f"its parent {parent} is world-writable"
    return None


def compiled_cache_dir() -> Path:
    """The per-user folder of compiled forests (mode 0700), created if needed.

    ``$GLOBALFLUX_LLEAVES_CACHE`` if set, else ``platformdirs.user_cache_dir("globalflux")/lleaves``
    (e.g. ``~/.cache/globalflux/lleaves``). A folder that is a symlink, owned by someone else,
    writable by others, or below a world-writable (non-sticky) folder is not used: a fresh private
    temporary folder (mode 0700) serves this process instead, and a warning says why.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        d = Path(env)
    else:
        import platformdirs

        d = Path(platformdirs.user_cache_dir("globalflux", appauthor=False)) / "lleaves"
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(d)
        if not stat.S_ISLNK(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(d, 0o700)  # ours: keep it private
        reason = _unsafe_reason(d) or _ancestors_safe(d)
    except OSError as exc:
        reason = f"cannot be created ({exc.strerror})"
    if reason is None:
        return d
    private = _private_dir()
    log.warning("compiled-forest cache %s %s; using the private folder %s for this process",
                d, reason, private)
    return private


_PRIVATE: list[Path] = []


def _private_dir() -> Path:
    if not _PRIVATE:
        _PRIVATE.append(Path(tempfile.mkdtemp(prefix="globalflux-lleaves-")))  # mode 0700
    return _PRIVATE[0]


def _cache_dir() -> Path:  # kept for callers of the old private name
    return compiled_cache_dir()


def verify_cache_entry(d: Path, key: str) -> str | None:
    """None when the cache entry ``key`` in ``d`` may be loaded; else why not.

    An entry is ``KEY.txt`` (the model text), ``KEY.so`` (the compiled object) and ``KEY.json``
    (their sha256, recorded when they were written). Each file must be a regular file owned by
    you and not writable by others, and both checksums must match the record.
    """
    record = d / f"{key}.json"
    files = {"txt": d / f"{key}.txt", "so": d / f"{key}.so"}
    for p in (record, *files.values()):
        if not p.exists() and not p.is_symlink():
            return f"{p.name} is missing"
        reason = _unsafe_reason(p)
        if reason:
            return f"{p.name} {reason}"
    try:
        meta = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{record.name} is unreadable"
    if not isinstance(meta, dict) or meta.get("key") != key:
        return f"{record.name} belongs to another model"
    for kind, p in files.items():
        if meta.get(f"{kind}_sha256") != file_sha256(p):
            return f"{p.name} does not match its recorded checksum"
    return None


def _discard(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # e.g. planted by another user in a folder we cannot clean
            log.warning("cannot remove untrusted cache file %s (%s)", p, exc.strerror)


def cpu_target() -> dict[str, str]:
    """What a compiled forest is specific to: the LLVM target triple, the host CPU name, a hash
    of the host CPU's feature flags and the lleaves version (lleaves compiles for the host CPU)."""
    import llvmlite.binding as llvm

    try:
        import lleaves

        lv = getattr(lleaves, "__version__", "?")
    except ImportError:  # pragma: no cover - only called with lleaves installed
        lv = None
    feats = llvm.get_host_cpu_features().flatten()
    return {"triple": llvm.get_process_triple(), "cpu": llvm.get_host_cpu_name(),
            "features_sha256": hashlib.sha256(feats.encode()).hexdigest()[:16],
            "lleaves": str(lv)}


def _compile(model_str: str, prebuilt: tuple[dict[str, Any], bytes] | None = None) -> Any:
    """lleaves-compile a LightGBM model text, through the per-user verified cache.

    The key is the SHA-256 of the model text. A cached object is loaded only after
    :func:`verify_cache_entry` passed; any other entry is discarded and rebuilt. A new entry is
    compiled to a private temporary name, its checksum recorded, then published by rename.

    ``prebuilt`` = ``(target, object bytes)``: an object compiled when the model was packaged
    (see :meth:`FastForestRegressor.compiled_object`). When ``target`` equals this machine's
    :func:`cpu_target` it becomes the cache entry (written like a compiled one, then verified
    and loaded from the per-user cache), so nothing is compiled; on another CPU it is ignored
    and the forest is compiled here.
    """
    from ..extras import require

    # lazily: lleaves/llvmlite are the optional extra [fast]
    lleaves = require("lleaves", "fast", what="forest.engine: lleaves")

    key = hashlib.sha256(model_str.encode()).hexdigest()
    d = compiled_cache_dir()
    txt, so, record = d / f"{key}.txt", d / f"{key}.so", d / f"{key}.json"
    with _COMPILE_LOCK:
        why = verify_cache_entry(d, key)
        if why is None:
            model = lleaves.Model(model_file=str(txt))
            model.compile(cache=str(so))
            return model
        if any(p.exists() or p.is_symlink() for p in (txt, so, record)):
            log.info("compiled-forest cache entry %s not used (%s); rebuilding", key[:12], why)
            _discard(txt, so, record)
        tag = f"{os.getpid()}.{threading.get_ident()}"
        tmp_txt = d / f".{key}.{tag}.txt"
        tmp_so = d / f".{key}.{tag}.so"
        use = prebuilt is not None and prebuilt[0] == cpu_target()
        if prebuilt is not None and not use:
            log.info("compiled forest %s was built for %s, this CPU is %s: compiling", key[:12],
                     prebuilt[0].get("cpu"), cpu_target().get("cpu"))
        try:
            fd = os.open(tmp_txt, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(model_str)
            if use:
                fd = os.open(tmp_so, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fb:
                    fb.write(prebuilt[1])
            model = lleaves.Model(model_file=str(tmp_txt))
            model.compile(cache=str(tmp_so))  # writes the object file unless prebuilt
            os.chmod(tmp_so, 0o600)
            meta = {"key": key, "txt_sha256": file_sha256(tmp_txt), "so_sha256": file_sha256(tmp_so),
                    "lleaves": getattr(lleaves, "__version__", "?")}
            tmp_rec = d / f".{key}.{tag}.json"
            fd = os.open(tmp_rec, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(meta, f)
            os.replace(tmp_txt, txt)
            os.replace(tmp_so, so)
            os.replace(tmp_rec, record)  # the record last: an entry without it is never loaded
        finally:
            _discard(*(p for p in (tmp_txt, tmp_so, d / f".{key}.{tag}.json") if p.exists()))
        if use:  # load the published entry (verified like any cached one), not the temp file
            why = verify_cache_entry(d, key)
            if why is not None:  # pragma: no cover - we just wrote it
                raise ModelError(f"compiled forest cache entry {key[:12]}: {why}",
                                 where=str(d), fix="Remove the folder and run again.")
            model = lleaves.Model(model_file=str(txt))
            model.compile(cache=str(so))
    return model


def cached_object(model_str: str) -> bytes:
    """The verified compiled object of ``model_str`` from the per-user cache (compiling it first
    if needed)."""
    key = hashlib.sha256(model_str.encode()).hexdigest()
    _compile(model_str)
    d = compiled_cache_dir()
    with _COMPILE_LOCK:
        why = verify_cache_entry(d, key)
        if why is not None:  # pragma: no cover - _compile just verified or wrote it
            raise ModelError(f"compiled forest cache entry {key[:12]}: {why}", where=str(d),
                             fix="Remove the folder and run again.")
        return (d / f"{key}.so").read_bytes()


class FastForestRegressor(RegressorMixin, BaseEstimator):
    """Bounded-size random forest (LightGBM ``boosting="rf"``), optionally lleaves-compiled.

    Parameters
    ----------
    n_estimators
        Trees (boosting rounds of the RF mode; each tree is independent).
    num_leaves
        Maximum leaves per tree: the size bound that makes inference fast. Choose it with
        :func:`select_num_leaves`.
    max_depth
        Maximum depth (-1: unbounded, only ``num_leaves`` bounds the tree).
    min_child_samples
        Minimum training rows per leaf (``min_samples_leaf``).
    bagging_fraction
        Share of rows drawn (without replacement) for each tree; 0.632 matches the expected
        share of distinct rows in a bootstrap sample.
    feature_fraction_bynode
        Share of features tried at each split (sklearn's ``max_features``; 1.0 = all).
    compile
        Predict with the lleaves-compiled model (True) or LightGBM's ``Booster.predict``.
    compile_min_rows
        With ``compile``, tables of fewer rows are predicted by LightGBM itself (the same
        trees; equal within :data:`COMPILED_RTOL`) and the model is compiled only on the first
        larger table, e.g. a map chunk: validation folds never pay the compile time.
    n_jobs
        Threads for fitting and predicting (1 = one core).
    random_state
        Seed (bagging, feature sampling).

    Attributes
    ----------
    booster_ : lightgbm.Booster
    model_str_ : str
        The LightGBM model text (what is compiled and what is pickled).
    n_features_in_ : int
    feature_names_in_ : ndarray of str (when fitted on a DataFrame)
    """

    def __init__(self, n_estimators: int = 100, num_leaves: int = 127, max_depth: int = -1,
                 min_child_samples: int = 1, bagging_fraction: float = 0.632,
                 feature_fraction_bynode: float = 1.0, compile: bool = True,
                 compile_min_rows: int = 10_000, n_jobs: int = 1,
                 random_state: int | None = 0):
        self.n_estimators = n_estimators
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.bagging_fraction = bagging_fraction
        self.feature_fraction_bynode = feature_fraction_bynode
        self.compile = compile
        self.compile_min_rows = compile_min_rows
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _params(self) -> dict[str, Any]:
        if not (0.0 < float(self.bagging_fraction) < 1.0):
            raise ModelError(f"bagging_fraction={self.bagging_fraction!r}",
                             where="FastForestRegressor",
                             fix="Random-forest mode needs a row sample share in (0, 1), e.g. 0.632.")
        if int(self.num_leaves) < 2:
            raise ModelError(f"num_leaves={self.num_leaves!r}", where="FastForestRegressor",
                             fix="Give at least 2 leaves per tree.")
        seed = 0 if self.random_state is None else int(
            np.random.RandomState(self.random_state).randint(0, 2**31 - 1)
            if not isinstance(self.random_state, int | np.integer) else self.random_state)
        return {
            "objective": "regression",
            "boosting": "rf",
            "bagging_freq": 1,
            "bagging_fraction": float(self.bagging_fraction),
            "feature_fraction_bynode": float(self.feature_fraction_bynode),
            "num_leaves": int(self.num_leaves),
            "max_depth": int(self.max_depth),
            "min_data_in_leaf": int(self.min_child_samples),
            "min_sum_hessian_in_leaf": 0.0,
            "lambda_l2": 0.0,
            "num_threads": max(1, int(self.n_jobs or 1)),
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }

    def fit(self, X, y, sample_weight=None):
        """Fit the forest; returns self."""
        import lightgbm as lgb

        X, y = validate_data(self, X, y, dtype="float64", ensure_all_finite="allow-nan",
                             y_numeric=True)
        if X.shape[0] < 2:
            raise ModelError(f"{X.shape[0]} training row(s)", where="FastForestRegressor.fit",
                             fix="Fit on at least 2 rows.")
        params = self._params()
        data = lgb.Dataset(X, label=np.asarray(y, dtype="float64"), weight=sample_weight,
                           params={"verbose": -1, "min_data_in_bin": 1}, free_raw_data=True)
        self.booster_ = lgb.train(params, data, num_boost_round=int(self.n_estimators))
        self.model_str_ = self.booster_.model_to_string()
        self._compiled = None
        return self

    def _compiled_model(self):
        if getattr(self, "_compiled", None) is None:
            pre = getattr(self, "compiled_object_", None)
            tgt = getattr(self, "compiled_target_", None)
            self._compiled = _compile(self.model_str_, (tgt, pre) if pre and tgt else None)
        return self._compiled

    def compiled_object(self) -> tuple[dict[str, str], bytes]:
        """``(cpu_target(), object bytes)`` of the compiled forest, compiled now if needed, and
        kept on the estimator (``compiled_object_``, ``compiled_target_``): it travels with the
        model to Dask workers and into model packages, so a worker on the same kind of CPU
        starts without compiling (issue 15: 45 s for four zone forests before)."""
        check_is_fitted(self, "model_str_")
        target = cpu_target()
        if getattr(self, "compiled_object_", None) is None or self.compiled_target_ != target:
            self.compiled_object_ = cached_object(self.model_str_)
            self.compiled_target_ = target
        return self.compiled_target_, self.compiled_object_

    def predict(self, X) -> np.ndarray:
        """Mean prediction of the trees for each row (float64)."""
        check_is_fitted(self, "model_str_")
        X = validate_data(self, X, dtype="float64", ensure_all_finite="allow-nan", reset=False)
        X = np.ascontiguousarray(X, dtype="float64")
        if X.shape[0] == 0:
            return np.empty(0, dtype="float64")
        threads = max(1, int(self.n_jobs or 1))
        if self.compile and X.shape[0] >= int(self.compile_min_rows):
            return np.asarray(self._compiled_model().predict(X, n_jobs=threads), dtype="float64")
        return np.asarray(self._booster().predict(X, num_threads=threads), dtype="float64")

    def _booster(self):
        if getattr(self, "booster_", None) is None:
            import lightgbm as lgb

            self.booster_ = lgb.Booster(model_str=self.model_str_)
        return self.booster_

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_compiled", None)  # ctypes function: rebuilt from the cache on first use
        state.pop("booster_", None)  # rebuilt from model_str_
        return state

    def __setstate__(self, state):
        state.setdefault("compile_min_rows", 10_000)  # pickles of older versions
        self.__dict__.update(state)
        self._compiled = None
        if "model_str_" in state:
            import lightgbm as lgb

            self.booster_ = lgb.Booster(model_str=state["model_str_"])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


_SKLEARN_NAMES = {
    "max_leaf_nodes": "num_leaves",
    "min_samples_leaf": "min_child_samples",
    "max_features": "feature_fraction_bynode",
}


def make_forest(engine: str = "sklearn", **params: Any):
    """A random-forest regressor for ``engine`` (``forest.engine``): see the module docstring.

    Raises
    ------
    ModelError
        Unknown engine or parameter.
    """
    if engine not in ENGINES:
        raise ModelError(f"unknown forest engine {engine!r}", where="forest.engine",
                         fix=f"Choose one of: {', '.join(ENGINES)}.")
    if engine == "sklearn":
        from sklearn.ensemble import RandomForestRegressor

        p = {k: v for k, v in params.items()}
        if "num_leaves" in p:
            p["max_leaf_nodes"] = p.pop("num_leaves")
        if "min_child_samples" in p:
            p["min_samples_leaf"] = p.pop("min_child_samples")
        p.setdefault("n_jobs", 1)
        try:
            return RandomForestRegressor(**p)
        except TypeError as exc:
            raise ModelError(str(exc), where="forest", fix="Use RandomForestRegressor parameters.") \
                from None
    p = {_SKLEARN_NAMES.get(k, k): v for k, v in params.items()}
    if "feature_fraction_bynode" in p and not isinstance(p["feature_fraction_bynode"], float | int):
        p.pop("feature_fraction_bynode")  # "sqrt" etc.: keep the default (all features)
    if p.get("num_leaves") is None:
        p.pop("num_leaves", None)
    if p.get("max_depth") is None:
        p["max_depth"] = -1
    try:
        return FastForestRegressor(compile=(engine == "lleaves"), **p)
    except TypeError as exc:
        raise ModelError(str(exc), where="forest",
                         fix="Use n_estimators, num_leaves/max_leaf_nodes, max_depth, "
                         "min_child_samples/min_samples_leaf, bagging_fraction, n_jobs, "
                         "random_state.") from None


def loso_r2(make, X, y, groups) -> float:
    """Pooled leave-one-site-out R2 of the regressor built by ``make()`` (a fresh one per fold)."""
    from sklearn.model_selection import LeaveOneGroupOut

    from ..metrics import r2

    X = np.asarray(X, dtype="float64")
    y = np.asarray(y, dtype="float64")
    pred = np.full(y.shape, np.nan)
    for tr, te in LeaveOneGroupOut().split(X, y, groups):
        pred[te] = make().fit(X[tr], y[tr]).predict(X[te])
    return float(r2(y, pred))


def select_num_leaves(X, y, groups, *, candidates=(15, 31, 63, 127, 255), tol: float = 0.01,
                      reference_r2: float | None = None, **params: Any):
    """Smallest ``num_leaves`` whose LOSO R2 is within ``tol`` of the best (or of a reference).

    Returns
    -------
    (num_leaves, table)
        ``table`` is a DataFrame with ``num_leaves, loso_r2`` for every candidate.
    """
    import pandas as pd

    rows = []
    for n in candidates:
        def make(n=n):
            return FastForestRegressor(num_leaves=int(n), compile=False, **params)

        rows.append({"num_leaves": int(n), "loso_r2": loso_r2(make, X, y, groups)})
    table = pd.DataFrame(rows)
    target = (reference_r2 if reference_r2 is not None else table["loso_r2"].max()) - tol
    ok = table[table["loso_r2"] >= target]
    chosen = int(ok["num_leaves"].min()) if len(ok) else int(
        table.loc[table["loso_r2"].idxmax(), "num_leaves"])
    return chosen, table
