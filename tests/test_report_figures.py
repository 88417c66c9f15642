"""Map figures: axes in degrees (or metres with the CRS), categorical colour bars, and zones
renumbered to their best-matching true zone (Hungarian assignment)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from globalflux import report


def _map(geographic: bool = True) -> xr.DataArray:
    import rioxarray  # noqa: F401

    y = np.linspace(50, 45, 6) if geographic else np.linspace(3e6, 2.995e6, 6)
    x = np.linspace(5, 12, 8) if geographic else np.linspace(4e6, 4.007e6, 8)
    da = xr.DataArray(np.arange(48, dtype=float).reshape(6, 8) % 4, dims=("y", "x"),
                      coords={"y": y, "x": x})
    if geographic:
        da.x.attrs.update(units="degrees_east", standard_name="longitude")
        return da.rio.write_crs("EPSG:4326")
    da.x.attrs.update(units="m")
    da.y.attrs.update(units="m")
    return da.rio.write_crs("EPSG:3035")


def test_axis_labels_degrees_or_metres_with_crs():
    assert report.axis_labels(_map(True)) == ("longitude (°E)", "latitude (°N)")
    xl, yl = report.axis_labels(_map(False))
    assert xl == "x (m, EPSG:3035)" and yl == "y (m, EPSG:3035)"


def test_match_labels_recovers_a_permutation():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, 500)
    perm = np.array([2, 0, 3, 1])
    recovered = perm[true]
    noisy = recovered.copy()
    noisy[:40] = rng.integers(0, 4, 40)  # some disagreement
    m = report.match_labels(true, noisy)
    assert {int(perm[t]): int(t) for t in range(4)} == m
    # more recovered than true labels: the extra one gets a new number
    extra = np.where(np.arange(500) < 10, 9, recovered)
    m2 = report.match_labels(true, extra)
    assert sorted(m2.values())[:4] == [0, 1, 2, 3] and m2[9] == 4


def test_categorical_panels_have_one_colour_box_per_zone(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    da = _map(True)
    path = report.map_panels_png({"a": da, "b": da}, tmp_path / "z.png", categorical=True,
                                 units="zone")
    assert path.is_file()
    plt = report._plt()
    cmap, norm, ticks = report._categorical(plt, da.values)
    assert list(ticks) == [0, 1, 2, 3] and cmap.N == 4
    assert norm(1.0) == 1 and norm(3.0) == 3  # each class its own colour


@pytest.mark.parametrize("geographic", [True, False])
def test_map_png_labels_axes(tmp_path, geographic):
    import matplotlib

    matplotlib.use("Agg")
    path = report.map_png(_map(geographic), tmp_path / "m.png", title="t", units="g m-2 d-1")
    assert path.is_file()
