"""Area of applicability (Meyer and Pebesma 2021): the DI formula on a hand-made case, the
cross-validated threshold, and on the synthetic world a region shifted outside the training range
is flagged aoa = 0 while in-range land is mostly aoa = 1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import globalflux
from globalflux.applicability import AreaOfApplicability, upper_whisker


def test_di_is_weighted_standardised_nearest_distance_over_mean_pair_distance():
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [0.0, 0.0, 10.0, 10.0]})
    w = pd.Series({"a": 3.0, "b": 1.0})
    aoa = AreaOfApplicability().fit(X, w, folds=[0, 0, 1, 1])
    sd = X.std(ddof=1).to_numpy()
    Z = (X.to_numpy() - X.mean().to_numpy()) / sd * np.array([0.75, 0.25])
    pairs = [np.linalg.norm(Z[i] - Z[j]) for i in range(4) for j in range(i + 1, 4)]
    assert aoa.d_mean_ == pytest.approx(np.mean(pairs))
    # training DI: nearest point of the OTHER fold
    assert aoa.train_di_[0] == pytest.approx(min(np.linalg.norm(Z[0] - Z[k]) for k in (2, 3))
                                             / np.mean(pairs))
    new = pd.DataFrame({"a": [1.0, 50.0, np.nan], "b": [0.0, 0.0, 0.0]})
    di = aoa.predict(new)
    assert di[0] == pytest.approx(0.0) and di[1] > 5 * aoa.threshold_ and np.isnan(di[2])
    assert list(aoa.predict_aoa(new)) == [1, 0, -1]


def test_threshold_is_the_upper_whisker():
    v = np.array([1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 100.0])
    q1, q3 = np.quantile(v, [0.25, 0.75])
    assert upper_whisker(v) == 4.0 and 4.0 <= q3 + 1.5 * (q3 - q1) < 100


def test_package_round_trip_keeps_the_threshold_and_di():
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=list("abc"))
    aoa = AreaOfApplicability().fit(X, None, folds=np.repeat(np.arange(12), 5))
    sec, pay = aoa.to_package()
    again = AreaOfApplicability.from_package(sec, pay)
    new = pd.DataFrame(rng.normal(size=(20, 3)) * 3, columns=list("abc"))
    np.testing.assert_array_equal(again.predict(new), aoa.predict(new))
    assert again.threshold_ == aoa.threshold_


def test_synthetic_world_region_outside_the_training_range_is_outside_the_aoa(demo_run):
    import xarray as xr

    model = globalflux.load_model(demo_run / "model")
    aoa = model.package_.applicability
    cube = xr.open_zarr(demo_run / "maps" / "predictors.zarr")
    inputs = {e["name"]: e for e in model.package_.inputs}
    shifted = cube.copy()
    region = (cube["x"] < float(cube["x"][20])) & (cube["y"] > float(cube["y"][20]))
    for name in aoa.features_:
        e = inputs[name]
        # every weighted predictor well beyond the training maximum in the region
        beyond = cube[name] + (e["max"] - e["min"]) * 2.0
        shifted[name] = xr.where(region, beyond, cube[name]).assign_attrs(cube[name].attrs)
    ds = globalflux.map_cube(model, shifted, uncertainty=False)
    flag = ds["aoa"].values
    land = cube["land_mask"].values.astype(bool)
    inside_region = np.broadcast_to(region.values & land, flag.shape)
    rest = np.broadcast_to(~region.values & land, flag.shape)
    assert inside_region.any() and rest.any()
    assert (flag[inside_region] == 0).all()
    assert (flag[rest] == 1).mean() > 0.8
    assert (flag[np.broadcast_to(~land, flag.shape)] == -1).all()
