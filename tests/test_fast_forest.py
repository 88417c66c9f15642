"""globalflux.models.fast: lleaves predictions equal LightGBM's; sklearn contract; engines."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestRegressor

from globalflux.errors import ModelError
from globalflux.models.fast import (
    COMPILED_RTOL,
    FastForestRegressor,
    make_forest,
    select_num_leaves,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))
    y = 2 * X[:, 0] + np.sin(2 * X[:, 1]) + X[:, 2] * X[:, 3] + rng.normal(scale=0.2, size=600)
    groups = np.repeat(np.arange(30), 20)
    return X, y, groups


@pytest.fixture(scope="module")
def compiled(data):
    X, y, _ = data
    return FastForestRegressor(n_estimators=30, num_leaves=31, random_state=1,
                               compile_min_rows=0).fit(X, y)


def test_compiled_equals_lightgbm_predict(data, compiled):
    X, y, _ = data
    rng = np.random.default_rng(5)
    Xt = np.vstack([X, rng.normal(size=(2000, 5)) * 3])
    Xt[::17, 2] = np.nan  # missing values follow LightGBM's default direction in both
    fast = compiled.predict(Xt)
    ref = compiled.booster_.predict(Xt, num_threads=1)
    bound = COMPILED_RTOL * np.maximum(1.0, np.abs(ref))
    assert np.all(np.abs(fast - ref) <= bound), np.abs(fast - ref).max()
    # the same forest without compilation predicts with LightGBM itself
    plain = FastForestRegressor(n_estimators=30, num_leaves=31, random_state=1,
                                compile=False).fit(X, y)
    np.testing.assert_array_equal(plain.predict(Xt), ref)


def test_pickle_round_trip_recompiles(compiled, data):
    X, _, _ = data
    compiled.predict(X)
    assert compiled._compiled is not None
    clone = pickle.loads(pickle.dumps(compiled))
    assert clone._compiled is None  # the ctypes model is never pickled
    np.testing.assert_array_equal(clone.predict(X), compiled.predict(X))
    assert clone._compiled is not None


def test_small_tables_use_lightgbm_and_skip_compiling(data):
    X, y, _ = data
    f = FastForestRegressor(n_estimators=5, num_leaves=7, compile_min_rows=1000).fit(X, y)
    np.testing.assert_array_equal(f.predict(X[:50]), f.booster_.predict(X[:50], num_threads=1))
    assert f._compiled is None


def test_sklearn_contract(data):
    from sklearn.base import clone

    X, y, _ = data
    est = FastForestRegressor(n_estimators=5, num_leaves=7, compile=False)
    assert clone(est).get_params() == est.get_params()
    assert est.fit(X, y) is est and est.n_features_in_ == 5
    df = pd.DataFrame(X, columns=list("abcde"))
    est.fit(df, y)
    assert list(est.feature_names_in_) == list("abcde")
    with pytest.raises(ValueError):
        est.predict(X[:, :3])
    # seeded: the same seed gives the same forest
    a = FastForestRegressor(n_estimators=5, compile=False, random_state=3).fit(X, y).predict(X)
    b = FastForestRegressor(n_estimators=5, compile=False, random_state=3).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)


def test_make_forest_engines():
    assert isinstance(make_forest("sklearn", n_estimators=10), RandomForestRegressor)
    f = make_forest("lleaves", n_estimators=10, max_leaf_nodes=15, min_samples_leaf=2)
    assert isinstance(f, FastForestRegressor) and f.compile and f.num_leaves == 15
    assert f.min_child_samples == 2
    assert make_forest("lightgbm").compile is False
    with pytest.raises(ModelError, match=r"forest\.engine: unknown forest engine 'xgb'\. "
                                         r"Choose one of: sklearn, lightgbm, lleaves"):
        make_forest("xgb")
    with pytest.raises(ModelError, match="bagging_fraction=1.0"):
        FastForestRegressor(bagging_fraction=1.0).fit(np.zeros((4, 2)), np.zeros(4))


def test_select_num_leaves(data):
    X, y, g = data
    n, table = select_num_leaves(X, y, g, candidates=(3, 31), n_estimators=10)
    assert list(table["num_leaves"]) == [3, 31]
    best = table["loso_r2"].max()
    assert table.set_index("num_leaves").loc[n, "loso_r2"] >= best - 0.01
    assert table.set_index("num_leaves").loc[31, "loso_r2"] > table.set_index(
        "num_leaves").loc[3, "loso_r2"]
