"""GridSpec, BBox, MODIS sinusoidal grids, grid inference and the MODIS 8-day calendar."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from globalflux.errors import GridError
from globalflux.grid import (
    MODIS_500M,
    MODIS_SINUSOIDAL_WKT,
    BBox,
    GridSpec,
    grid_of,
    make_grid,
    modis_8day_periods,
    modis_8day_start,
    period_lengths,
)


def test_global_grids_shape_and_centres():
    g = GridSpec.global_latlon(0.5)
    assert g.shape == (360, 720)
    assert g.x[0] == -179.75 and g.x[-1] == 179.75
    assert g.y[0] == 89.75 and g.y[-1] == -89.75  # north first
    g5 = GridSpec.global_latlon(0.05)
    assert g5.shape == (3600, 7200)
    gb = g.geobox()
    assert gb.shape == (360, 720) and gb.crs.epsg == 4326


def test_bbox_errors_and_parse():
    with pytest.raises(GridError, match="empty or inverted"):
        BBox(10, 0, 5, 1)
    assert BBox.parse("1,2,3,4").as_tuple() == (1, 2, 3, 4)
    with pytest.raises(GridError, match="W,S,E,N"):
        BBox.parse("1,2,3")


def test_modis_sinusoidal_grid_snaps_to_the_modis_lattice():
    g = GridSpec.modis_sinusoidal(BBox(1000.0, 4_400_000.0, 20_000.0, 4_420_000.0))
    assert g.resolution == MODIS_500M
    x0, y0 = -20015109.354, 10007554.677
    for edge in (g.bbox.west, g.bbox.east):
        k = (edge - x0) / MODIS_500M
        assert abs(k - round(k)) < 1e-6
    for edge in (g.bbox.north, g.bbox.south):
        k = (y0 - edge) / MODIS_500M
        assert abs(k - round(k)) < 1e-6
    assert g.bbox.west <= 1000.0 and g.bbox.east >= 20_000.0
    assert g.crs == MODIS_SINUSOIDAL_WKT
    assert make_grid("modis-sinusoidal", MODIS_500M, (1000.0, 4_400_000.0, 20_000.0, 4_420_000.0)) == g


def test_subset_snaps_outwards_and_rejects_outside():
    g = GridSpec.global_latlon(0.5)
    s = g.subset(BBox(-10.2, 40.1, 5.0, 50.0))
    assert s.bbox.as_tuple() == (-10.5, 40.0, 5.0, 50.0)
    with pytest.raises(GridError, match="does not overlap"):
        GridSpec("EPSG:4326", 1.0, BBox(0, 0, 10, 10)).subset(BBox(20, 20, 30, 30))


def test_make_grid_rejects_sub_pixel_bbox():
    with pytest.raises(GridError, match="holds no"):
        make_grid("EPSG:4326", 1.0, (0.0, 0.0, 0.2, 0.2))


def test_grid_of_round_trips_and_needs_a_crs():
    g = GridSpec("EPSG:4326", 1 / 120, BBox(-180, -90, 180, 90))
    da = xr.DataArray(np.zeros((4, 5)), dims=("y", "x"), coords={"y": g.y[:4], "x": g.x[:5]})
    with pytest.raises(GridError, match="has no CRS") as e:
        grid_of(da, where="thing.tif")
    assert "write_crs" in str(e.value)
    got = grid_of(da.rio.write_crs("EPSG:4326"))
    assert got.resolution == pytest.approx(1 / 120)
    assert got.bbox.west == -180.0 and got.bbox.north == 90.0
    irregular = da.assign_coords(x=[0, 1, 2, 4, 5]).rio.write_crs("EPSG:4326")
    with pytest.raises(GridError, match="not regular"):
        grid_of(irregular)


def test_contains():
    g = GridSpec("EPSG:4326", 1.0, BBox(0, 0, 2, 2))
    assert g.contains([0.5, 2.0, 2.1], [0.5, 0.0, 1.0]).tolist() == [True, True, False]


def test_modis_8day_calendar():
    s = modis_8day_start(["2020-01-01", "2020-01-08", "2020-01-09", "2020-12-31", "2021-12-31"])
    assert [str(d.date()) for d in s] == ["2020-01-01", "2020-01-01", "2020-01-09", "2020-12-26", "2021-12-27"]
    p = modis_8day_periods("2020-01-01", "2020-12-31")
    assert len(p) == 46
    lens = period_lengths(p)
    assert lens[:-1].tolist() == [8] * 45 and lens[-1] == 6  # leap year: 366 - 360
    assert period_lengths(pd.DatetimeIndex(["2021-12-27"]))[0] == 5
