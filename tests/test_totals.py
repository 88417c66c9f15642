"""Global totals: areas, bootstrap over locations, residual propagation, published comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from globalflux.cube import fill_nearest
from globalflux.errors import DataError
from globalflux.totals import (
    PUBLISHED_RH,
    bootstrap_totals,
    compare_with_published,
    land_weight,
    map_coverage,
    pixel_area_m2,
    published_table,
    residual_error_total,
    residual_sd_model,
    total_pg,
    total_uncertainty,
)


def _cube(res=10.0):
    y = np.arange(90 - res / 2, -90, -res)
    x = np.arange(-180 + res / 2, 180, res)
    land = np.zeros((len(y), len(x)), dtype=bool)
    land[3:12, 5:30] = True
    mat = np.where(land, 10.0, np.nan)
    mat[5, 10] = np.nan  # a gap inside land, next to valid pixels
    mat[3:12, 25:30] = np.nan  # a wide gap: 5 pixels (> 1000 km) across
    return xr.Dataset({
        "land_mask": (("y", "x"), land),
        "land_fraction": (("y", "x"), land.astype("float32")),
        "koppen": (("y", "x"), np.where(land, 3, 0).astype("uint8")),
        "mat": (("y", "x"), mat),
    }, coords={"y": y, "x": x})


def test_pixel_areas_sum_to_the_sphere():
    cube = _cube(10.0)
    area = float(pixel_area_m2(cube).sum()) * cube.sizes["x"]
    assert area == pytest.approx(4 * np.pi * 6371007.181**2, rel=1e-9)
    w = land_weight(cube)
    assert np.isnan(w.values[0, 0]) and np.isfinite(w.values[5, 10])
    cov = map_coverage(cube, ["mat"])
    allrow = cov[cov["group"] == "all land"].iloc[0]
    assert allrow["predicted_km2"] < allrow["land_km2"]


def test_fill_nearest_fills_within_distance_and_flags():
    cube = _cube(10.0)
    filled, flag = fill_nearest(cube, ["mat"], max_km=1200.0, where=cube["land_mask"])
    assert filled["mat"].values[5, 10] == 10.0 and flag.values[5, 10] == 1
    # the wide gap: only its first column (1 pixel = 1112 km) is within 1200 km
    assert np.isfinite(filled["mat"].values[3:12, 25]).all()
    assert np.isnan(filled["mat"].values[3:12, 27]).all() and flag.values[3:12, 27].sum() == 0
    assert np.isnan(filled["mat"].values[0, 0])  # off land stays empty
    assert flag.attrs["filled_variables"] == "mat"
    none, flag0 = fill_nearest(cube, ["mat"], max_km=0.0)
    assert int(flag0.sum()) == 0 and np.isnan(none["mat"].values[5, 10])
    with pytest.raises(DataError, match="max_km=-5"):
        fill_nearest(cube, ["mat"], max_km=-5)


def test_bootstrap_over_locations_draws_whole_locations():
    cube = _cube(10.0)
    w = land_weight(cube)
    loc = np.repeat(["a", "b", "c", "d"], [3, 1, 2, 4])
    y = np.repeat([1.0, 2.0, 3.0, 4.0], [3, 1, 2, 4])
    seen = []

    def fit_predict(rows, groups):
        seen.append((rows, groups))
        # rows of a drawn location come together, duplicates get distinct group ids
        for gname in np.unique(groups):
            assert len(set(loc[rows[groups == gname]])) == 1
        m = np.where(np.isfinite(w.values), y[rows].mean(), np.nan)
        return {"complete": m}

    boot = bootstrap_totals(fit_predict, loc, w, n=20, random_state=1)
    assert len(boot) == 20 and list(boot.columns) == ["replicate", "n_locations", "complete_pg"]
    assert boot["complete_pg"].std() > 0
    area = total_pg(np.ones(w.shape), w)[1]
    assert boot["complete_pg"].min() >= 1.0 * area * 1e6 / 1e15 - 1e-9
    np.testing.assert_allclose(boot["complete_pg"],
                               bootstrap_totals(fit_predict, loc, w, n=20, random_state=1)["complete_pg"])


def test_residual_error_blocks():
    cube = _cube(10.0)
    w = land_weight(cube)
    pred = np.array([0.0, 0.5, 10.0, 10.5, 20.0, 20.5])
    obs = pred + np.array([1, -1, 2, -2, 3, -3])
    model = residual_sd_model(obs, pred, n_bins=3)
    assert model.sd.tolist() == pytest.approx([1.0, 2.0, 3.0])
    pm = np.where(np.isfinite(w.values), 0.0, np.nan)  # every pixel in the first bin: sd 1
    area = np.nansum(w.values)
    # one block holding everything: errors add up linearly
    assert residual_error_total(pm, w, model, block_deg=360.0) == pytest.approx(area / 1e15)
    # one block per pixel: independent errors add in quadrature
    indep = residual_error_total(pm, w, model, block_deg=10.0)
    assert indep == pytest.approx(np.sqrt(np.nansum(w.values**2)) / 1e15)
    assert indep < area / 1e15
    u = total_uncertainty(50.0, np.array([48.0, 50.0, 52.0]), 3.0)
    assert u["combined_sd_pg"] == pytest.approx(np.sqrt(4.0 + 9.0))
    assert u["q05_pg"] == pytest.approx(50.0 - 1.645 * np.sqrt(13.0))


def test_published_comparison_uses_the_whole_list():
    table = pd.DataFrame({
        "study": ["A", "B", "C", "D"], "value": [40.0, 50.0, 57.0, np.nan],
        "low": [39.0, 49.0, 56.0, np.nan], "high": [41.0, 51.0, 58.0, np.nan],
    })
    text, t = compare_with_published(55.0, 52.0, 56.5, table)
    assert t["relation"].tolist() == ["above", "above", "overlaps", "not compared"]
    assert "within the span of the 3 published central values (40-57" in text
    assert "wholly above the reported range of 2 of 3 (A, B)" in text
    assert "overlaps the reported range of 1 of 3 (C)" in text
    text2, t2 = compare_with_published(70.0, 65.0, 75.0, table)
    assert "is above all 3 published" in text2 and (t2["relation"][:3] == "above").all()
    text3, _ = compare_with_published(30.0, 20.0, 38.5, table)
    assert "is below all 3" in text3 and "wholly below the reported range of 3 of 3" in text3
    # the shipped list: Tang et al. 2020 and Yao et al. 2021 with their published numbers
    pub = published_table()
    tang = pub[pub["study"].str.startswith("Tang")].iloc[0]
    assert (tang["value"], tang["low"], tang["high"]) == (57.2, pytest.approx(56.6), 57.8)
    assert pub[pub["study"].str.startswith("Yao")]["value"].item() == 48.8
    assert len(PUBLISHED_RH) == len(pub) >= 4


def _mean_map(rows, groups, *, y, shape):
    return {"complete": np.full(shape, y[rows].mean())}


def test_bootstrap_does_not_depend_on_n_jobs():
    from functools import partial

    cube = _cube(30.0)
    w = land_weight(cube)
    loc = np.repeat(["a", "b", "c"], [2, 1, 3])
    y = np.arange(6.0)
    fp = partial(_mean_map, y=y, shape=w.shape)
    one = bootstrap_totals(fp, loc, w, n=4, random_state=3)
    two = bootstrap_totals(fp, loc, w, n=4, random_state=3, n_jobs=2)
    pd.testing.assert_frame_equal(one, two)
