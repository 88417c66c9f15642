"""CF conventions of every product store: the demo's map and predictor cube, an SRDB-style annual
map, an LSTM-style daily map and a query NetCDF, checked with cf_xarray and with the IOOS
compliance-checker's CF 1.8 checks; units with cf-units; integer layers keep dtype and fill."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from globalflux.io.store import cf_encode, cf_units, open_dataset, write_dataset
from globalflux.provenance import provenance_attrs

cf_units_mod = pytest.importorskip("cf_units")
pytest.importorskip("cf_xarray")
pytest.importorskip("compliance_checker")


def _grid(ny=6, nx=8) -> dict:
    return {"y": ("y", np.linspace(50, 45, ny), {"units": "degrees_north",
                                                 "standard_name": "latitude",
                                                 "long_name": "latitude", "axis": "Y"}),
            "x": ("x", np.linspace(5, 12, nx), {"units": "degrees_east",
                                                "standard_name": "longitude",
                                                "long_name": "longitude", "axis": "X"})}


def srdb_like_map() -> xr.Dataset:
    """The layers and attributes ``workflows/srdb_rh_annual.map_rh`` writes (annual, static)."""
    import rioxarray  # noqa: F401

    rng = np.random.default_rng(0)
    rh = rng.uniform(100, 900, (6, 8)).astype("float32")
    ds = xr.Dataset(
        {"rh": (("y", "x"), rh, {"units": "g C m-2 yr-1", "long_name": "annual heterotrophic "
                                 "respiration (zoned random forest, mean of trees)",
                                 "standard_name": "heterotrophic_respiration_carbon_flux"}),
         "rh_sd": (("y", "x"), rh / 10, {"units": "g C m-2 yr-1",
                                         "long_name": "standard deviation across trees"}),
         "zone": (("y", "x"), rng.integers(-1, 3, (6, 8)).astype("int16"),
                  {"units": "1", "long_name": "environmentally similar zone (-1 off land)"}),
         "land_mask": (("y", "x"), rh > 300, {"units": "1", "long_name": "land"}),
         "land_fraction": (("y", "x"), rng.uniform(0, 1, (6, 8)), {"units": "1",
                                                                   "long_name": "land fraction"})},
        coords=_grid(), attrs={**provenance_attrs(), "title": "srdb-like annual RH"})
    return ds.rio.write_crs("EPSG:4326")


def lstm_like_map() -> xr.Dataset:
    """A daily soil CO2 efflux map in g C m-2 d-1 and a CO2 flux in umol m-2 s-1 (LSTM units)."""
    import rioxarray  # noqa: F401

    rng = np.random.default_rng(1)
    t = pd.date_range("2020-01-01", periods=5, freq="D")
    rs = rng.uniform(0.5, 5, (5, 6, 8)).astype("float32")
    ds = xr.Dataset(
        {"rs": (("time", "y", "x"), rs, {"units": "g C m-2 d-1", "long_name": "soil CO2 efflux",
                                         "standard_name": "soil_respiration_carbon_flux"}),
         "rs_umol": (("time", "y", "x"), rs / 1.037664, {"units": "umol CO2 m-2 s-1",
                                                          "long_name": "soil CO2 efflux",
                                                          "standard_name":
                                                          "surface_upward_mole_flux_of_carbon_dioxide"})},
        coords={"time": ("time", t, {"standard_name": "time", "long_name": "day"}),
                "period_days": ("time", np.ones(5, "int16"), {"units": "d", "long_name": "days"}),
                **_grid()},
        attrs={**provenance_attrs(), "title": "lstm-like daily Rs"})
    return ds.rio.write_crs("EPSG:4326")


def _cf_failures(nc: Path) -> list[str]:
    """Every message of a CF 1.8 check of compliance-checker that did not pass fully."""
    from compliance_checker.runner import CheckSuite

    cs = CheckSuite()
    cs.load_all_available_checkers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = cs.load_dataset(str(nc))
        groups, errors = cs.run_all(ds, ["cf:1.8"], skip_checks=[])["cf:1.8"]
    assert not errors, errors
    bad = []
    for g in groups:
        score = g.value
        if isinstance(score, tuple) and score[0] < score[1]:
            bad += [f"{g.name}: {m}" for m in g.msgs]
    return bad


def check_store(path: Path, tmp_path: Path) -> xr.Dataset:
    """CF checks of one Zarr product store; returns it opened by globalflux."""
    import cf_xarray  # noqa: F401

    raw = xr.open_zarr(path, decode_cf=False)  # what any Zarr reader sees
    ds = open_dataset(path, chunks=None)
    std_table = _standard_names()
    for name, var in ds.data_vars.items():
        attrs = raw[name].attrs
        assert attrs.get("long_name"), name
        units = cf_units_mod.Unit(attrs["units"])  # UDUNITS parses every unit
        std = attrs.get("standard_name")
        if std is not None:
            assert std in std_table, (name, std)
            assert units.is_convertible(cf_units_mod.Unit(std_table[std])), (name, units, std)
        if "x" in var.dims and "y" in var.dims:
            assert attrs["grid_mapping"] == "spatial_ref", name
            assert var.cf["X"].name == "x" and var.cf["Y"].name == "y"
        if "flag_values" in attrs:
            assert all(isinstance(v, int) for v in np.atleast_1d(attrs["flag_values"]).tolist())
            assert len(np.atleast_1d(attrs["flag_values"])) == len(attrs["flag_meanings"].split())
        if "time" in var.dims and "period_days" in ds.coords:
            assert attrs["cell_methods"].startswith("time: "), name
        if attrs.get("dtype") == "bool":  # CF int8 0/1 flags, read back as bool
            assert raw[name].dtype == np.int8 and ds[name].dtype == bool, name
            assert list(attrs["flag_values"]) == [0, 1], name
        elif np.dtype(raw[name].dtype).kind in "iu":  # integer layers read back as integers
            assert ds[name].dtype == raw[name].dtype, name
            if "_FillValue" in attrs:  # the fill stays in the encoding, not masked to NaN
                assert ds[name].encoding["_FillValue"] == attrs["_FillValue"], name
    assert "latitude_longitude" in ds.cf.grid_mapping_names
    if "time" in ds.dims and "period_days" in ds.coords:
        assert ds.cf.bounds["time"] == ["time_bnds"]
        b = ds["time_bnds"].values
        np.testing.assert_array_equal(b[:, 0], ds["time"].values)
        days = (b[:, 1] - b[:, 0]) / np.timedelta64(1, "D")
        np.testing.assert_array_equal(days, ds["period_days"].values)
    nc = tmp_path / f"{path.stem}.nc"
    out = ds.copy()
    out.attrs = {k: v for k, v in ds.attrs.items() if k != "recipe"}
    out.to_netcdf(nc, engine="netcdf4")
    assert _cf_failures(nc) == []
    return ds


def _standard_names() -> dict[str, str]:
    import xml.etree.ElementTree as ET
    from importlib.resources import files

    table = files("compliance_checker") / "data" / "cf-standard-name-table.xml"
    root = ET.fromstring(table.read_bytes())
    return {e.get("id"): e.findtext("canonical_units") or "1" for e in root.iter("entry")}


# ------------------------------------------------------------------------------ unit helpers


@pytest.mark.parametrize(("units", "long_name", "want_units", "want_word"), [
    ("g C m-2 d-1", "heterotrophic respiration", "g m-2 d-1", "carbon"),
    ("g C m-2 yr-1", "annual RH", "g m-2 yr-1", "carbon"),
    ("umol CO2 m-2 s-1", "soil CO2 efflux", "umol m-2 s-1", "CO2"),
    ("kg C m-2", "soil carbon", "kg m-2", "carbon"),
])
def test_units_name_the_substance_in_the_long_name(units, long_name, want_units, want_word):
    u, long = cf_units(units, long_name)
    assert u == want_units and want_word in long
    cf_units_mod.Unit(u)  # parses
    assert "C" not in u.split()


def test_udunits_reads_the_old_carbon_unit_as_coulomb():
    """Why the units change: 'g C m-2 d-1' is a charge unit to UDUNITS."""
    old = cf_units_mod.Unit("g C m-2 d-1")
    assert not old.is_convertible(cf_units_mod.Unit("kg m-2 s-1"))
    assert cf_units_mod.Unit("g m-2 d-1").is_convertible(cf_units_mod.Unit("kg m-2 s-1"))


def test_cf_encode_is_idempotent_and_lazy():
    import dask

    ds = lstm_like_map().chunk({"time": 2})
    with dask.config.set(scheduler="sync"):
        once = cf_encode(ds)
        twice = cf_encode(once)
    assert once["rs"].chunks is not None  # still lazy
    for name in once.variables:
        assert once[name].attrs.keys() == twice[name].attrs.keys(), name


# ------------------------------------------------------------------------------ product stores


def test_demo_map_and_cube_stores_are_cf(demo_run, tmp_path):
    rh = check_store(demo_run / "maps" / "rh.zarr", tmp_path)
    assert rh["zone"].dtype == np.int16 and rh["zone"].encoding["_FillValue"] == -1
    assert rh["zone"].attrs["flag_meanings"].split()[0] == "zone_0"
    assert rh["land_mask"].dtype == bool  # stored as CF int8 flags, read back as bool
    assert rh["rh"].attrs["standard_name"].startswith("surface_upward_mass_flux_of_carbon")
    check_store(demo_run / "maps" / "predictors.zarr", tmp_path)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_srdb_like_annual_map_store_is_cf(tmp_path, zarr_format):
    path = tmp_path / "rh_0p5deg.zarr"
    write_dataset(srdb_like_map(), path, zarr_format=zarr_format)
    ds = check_store(path, tmp_path)
    assert ds["rh"].attrs["units"] == "g m-2 yr-1" and "carbon" in ds["rh"].attrs["long_name"]
    assert ds["zone"].dtype == np.int16 and (ds["zone"].values == -1).any()
    assert ds["land_mask"].dtype == bool
    assert xr.open_zarr(path)["land_mask"].dtype == bool  # plain xarray too


def test_lstm_like_daily_map_store_is_cf(tmp_path):
    path = tmp_path / "rs.zarr"
    write_dataset(lstm_like_map(), path)
    ds = check_store(path, tmp_path)
    assert ds["rs_umol"].attrs["units"] == "umol m-2 s-1"
    assert ds["rs"].attrs["standard_name"] == (
        "surface_upward_mass_flux_of_carbon_dioxide_expressed_as_carbon_due_to_respiration_in_soil")


def test_region_written_store_keeps_lazy_coordinates(tmp_path):
    """map_to_store writes period_days (a lazy coordinate) too, so time bounds are right."""
    from globalflux.mapping import map_to_store

    ds = lstm_like_map()
    ds = ds.assign_coords(period_days=ds["period_days"].chunk())
    path = map_to_store(None, {"rs": ds["rs"].chunk({"time": 2, "y": 3, "x": 4})},
                        tmp_path / "rs.zarr", progress=False, attrs=ds.attrs)
    out = check_store(path, tmp_path)
    assert (out["period_days"].values == 1).all()


def test_srdb_workflow_map_rh_store_is_cf(tmp_path):
    """The SRDB workflow's own layers (``map_rh``: mean, SD, quantiles of trees, zone), written
    as the workflow writes them (provenance attrs, EPSG:4326, ``write_dataset``)."""
    import rioxarray  # noqa: F401

    from globalflux.workflows.srdb_rh_annual import map_rh
    from test_srdb_rh import _small_world

    cube, model, feats = _small_world()
    ds = map_rh(model, cube.chunk({"y": 20, "x": 30}), feats)
    ds["land_fraction"] = cube["land_fraction"].assign_attrs(units="1", long_name="land fraction")
    ds.attrs.update(provenance_attrs(), title="srdb_rh_annual: annual RH, 0.5 deg")
    ds = ds.rio.write_crs("EPSG:4326")
    path = tmp_path / "rh_0p5deg.zarr"
    write_dataset(ds, path, mode="w")
    out = check_store(path, tmp_path)
    assert out["rh"].attrs["units"] == "g m-2 yr-1"
    assert out["zone"].dtype == np.int16
