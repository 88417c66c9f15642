"""Daily efflux maps: the synthetic daily world, LSTM state carried across time chunks in the
mapping path, and the efflux_daily_map workflow (reduced run, bad inputs)."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from globalflux.errors import DataError, ModelError
from globalflux.mapping import apply_lstm_to_cube, require_daily

torch = pytest.importorskip("torch")
from globalflux.models.lstm import LSTMRegressor  # noqa: E402  (after the torch check)


# ---- the synthetic daily world ----------------------------------------------------------------
def test_daily_world_is_seeded_labelled_and_holds_no_answer():
    from globalflux.testing.daily import DAILY_DRIVERS, DAILY_STATICS, make_daily_world

    w = make_daily_world(ny=24, nx=24, n_years=1, n_zones=2, n_sites=8, min_sites_per_zone=3,
                         min_record_days=60)
    w2 = make_daily_world(ny=24, nx=24, n_years=1, n_zones=2, n_sites=8, min_sites_per_zone=3,
                          min_record_days=60)
    xr.testing.assert_identical(w.cube, w2.cube)
    assert w.cube.attrs["synthetic"] == "true" and w.truth.attrs["synthetic"] == "true"
    assert "SYNTHETIC" in w.cube.attrs["comment"] and w.long.attrs["synthetic"] == "true"
    assert set(DAILY_DRIVERS + DAILY_STATICS) <= set(w.cube.data_vars)
    assert not {"efflux_true", "zone_true", "tsoil", "pulse"} & set(w.cube.variables)
    assert w.cube.rio.crs.to_epsg() == 4326
    require_daily(w.cube)  # daily, no missing day
    assert w.cube["sin_doy"].dims == ("time",)
    assert w.cube["lst"].attrs["units"] == "degC" and w.cube["precip"].attrs["units"] == "mm d-1"
    # canonical long site table, observations equal the truth times log-normal noise
    assert list(w.long.columns) == ["site_id", "lat", "lon", "igbp", "time", "variable", "value",
                                    "units", "n"]
    assert (w.long["variable"] == "Rs").all()
    obs = w.long.merge(w.sites[["site_id", "iy", "ix"]], on="site_id")
    it = pd.DatetimeIndex(w.truth["time"].values).get_indexer(pd.DatetimeIndex(obs["time"]))
    true = w.truth["efflux_true"].values[it, obs["iy"], obs["ix"]]
    ratio = np.log(obs["value"].to_numpy() / true)
    assert abs(ratio.std() - w.config.noise_sd) < 0.02
    # memory: rain after a dry spell raises the efflux (Birch pulse), by construction
    assert float(w.truth["pulse"].max()) > 0.5


# ---- LSTM state carried across time chunks --------------------------------------------------
def _fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 70, 2))
    y = np.exp(0.3 * X[..., 0] + 0.2 * np.cumsum(X[..., 1], axis=1) / 10)
    s = rng.uniform(size=(3, 1))
    return LSTMRegressor(drivers=("a", "b"), statics=("s",), hidden_size=8, epochs=2, seq_len=10,
                         batch_size=4, batches_per_epoch=3).fit(X, y, static=s)


def _cube(nt=31, ny=5, nx=4, seed=1):
    rng = np.random.default_rng(seed)
    s = rng.uniform(size=(ny, nx))
    s[0, 0] = np.nan  # no static there: never predicted
    return xr.Dataset(
        {"a": (("time", "y", "x"), rng.normal(size=(nt, ny, nx)).astype("float32")),
         "b": (("time",), rng.normal(size=nt).astype("float32")),  # a (time,) driver broadcasts
         "s": (("y", "x"), s)},
        coords={"time": pd.date_range("2021-03-01", periods=nt),
                "y": 45.0 - np.arange(ny) * 0.01, "x": 10.0 + np.arange(nx) * 0.01})


@pytest.fixture(scope="module")
def fitted():
    return _fitted()


def _eager(model, ds):
    nt, ny, nx = ds.sizes["time"], ds.sizes["y"], ds.sizes["x"]
    dyn = np.stack([ds["a"].values, np.broadcast_to(ds["b"].values[:, None, None], (nt, ny, nx))],
                   -1).reshape(nt, ny * nx, 2).transpose(1, 0, 2)
    return model.predict(dyn, static=ds["s"].values.reshape(-1, 1)).T.reshape(nt, ny, nx)


def test_property_time_chunking_never_changes_a_value(fitted):
    """Any time chunking (and spatial chunking) gives the values of the whole series run at
    once: bit for bit against one time chunk on the same spatial blocks, and to float32
    rounding against the eager whole-series predict()."""
    ds0 = _cube()
    ref_eager = _eager(fitted, ds0)
    assert np.isnan(ref_eager[:, 0, 0]).all()

    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(tc=st.integers(1, 40), cy=st.integers(1, 5), cx=st.integers(1, 4),
           bp=st.integers(1, 25))
    def check(tc, cy, cx, bp):
        ds = ds0.chunk({"y": cy, "x": cx})
        whole = apply_lstm_to_cube(fitted, ds, ["a", "b"], ["s"], time_chunk=ds.sizes["time"],
                                   batch_pixels=bp).compute(scheduler="sync").values
        out = apply_lstm_to_cube(fitted, ds, ["a", "b"], ["s"], time_chunk=tc, batch_pixels=bp)
        assert out.chunks[0][0] == min(tc, ds.sizes["time"])
        got = out.compute(scheduler="sync").values
        np.testing.assert_array_equal(got, whole)  # exactly, NaN in the same places
        np.testing.assert_allclose(got, ref_eager, rtol=1e-5, atol=1e-6)

    check()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_map_equals_cpu_map_and_chunking_never_changes_it(fitted):
    ds = _cube(nt=45).chunk({"y": 3})
    cpu = apply_lstm_to_cube(fitted, ds, ["a", "b"], ["s"], time_chunk=45).compute(
        scheduler="sync").values
    whole = apply_lstm_to_cube(fitted, ds, ["a", "b"], ["s"], time_chunk=45, device="cuda")
    cut = apply_lstm_to_cube(fitted, ds, ["a", "b"], ["s"], time_chunk=7, device="cuda")
    g_whole = whole.compute(scheduler="sync").values
    np.testing.assert_array_equal(cut.compute(scheduler="sync").values, g_whole)
    np.testing.assert_allclose(g_whole, cpu, rtol=1e-4, atol=1e-5)


def _raise_if_computed(*args, **kwargs):
    raise AssertionError("something was computed while building the graph")


def test_building_the_lstm_map_graph_computes_nothing(fitted):
    ds = _cube(nt=40).chunk({"time": 10, "y": 2, "x": 2})
    mask = xr.DataArray(np.ones((5, 4), bool), dims=("y", "x"), coords={"y": ds.y, "x": ds.x})
    with dask.config.set(scheduler=_raise_if_computed):
        out = apply_lstm_to_cube(fitted, ds, ["a", "b"], ["s"], mask=mask, time_chunk=7)
    assert out.dtype == np.float32 and out.dims == ("time", "y", "x")
    assert out.chunks == ((7,) * 5 + (5,), (2, 2, 1), (2, 2))
    # the weights are one key of the graph, shared by every task
    from globalflux.models.lstm import LSTMWeights

    graph = dict(out.data.__dask_graph__())
    holders = [k for k, v in graph.items()
               if isinstance(v, LSTMWeights) or isinstance(getattr(v, "value", None), LSTMWeights)]
    assert len(holders) == 1
    # a chain per spatial block: 3 x 2 blocks x 6 time chunks, each with step/output/state
    steps = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("lstm-step-")]
    assert len(steps) == 6 * 6


def test_written_through_the_store_chain_by_chain_each_chain_runs_once(fitted, tmp_path,
                                                                      monkeypatch):
    import globalflux.mapping as mapping

    calls = []
    real = mapping.lstm_block

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(mapping, "lstm_block", counting)
    ds = _cube(nt=60, ny=6, nx=6).chunk({"y": 3, "x": 3})
    eff = apply_lstm_to_cube(fitted, ds, ["a", "b"], ["s"], time_chunk=10, name="efflux")
    ref = eff.compute(scheduler="sync").values
    assert len(calls) == 6 * 4  # 6 time chunks x 4 tiles
    calls.clear()
    path = mapping.map_chains_to_store(None, {"efflux": eff}, tmp_path / "e.zarr", progress=False)
    assert len(calls) == 6 * 4  # threaded scheduler, whole chains per submission: no rerun
    got = xr.open_zarr(path)["efflux"]
    assert got.chunks == ((10,) * 6, (3, 3), (3, 3))
    np.testing.assert_array_equal(got.values, ref)
    # map_to_store (array order, time outermost) gives the same values, with reruns
    calls.clear()
    mapping.map_to_store(None, {"efflux": eff}, tmp_path / "f.zarr", progress=False)
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "f.zarr")["efflux"].values, ref)
    assert len(calls) > 6 * 4


def test_lstm_map_bad_inputs_are_named(fitted):
    ds = _cube()
    with pytest.raises(DataError, match=r"cube: the driver cube lacks variable\(s\) \['nope'\]"):
        apply_lstm_to_cube(fitted, ds, ["a", "nope"], ["s"])
    with pytest.raises(ModelError, match="the model takes 2 and 1"):
        apply_lstm_to_cube(fitted, ds, ["a"], ["s"])
    two_daily = ds.assign_coords(time=pd.date_range("2021-03-01", periods=ds.sizes["time"],
                                                    freq="2D"))
    with pytest.raises(DataError, match="time step is not daily: 2 days between 2021-03-01"):
        apply_lstm_to_cube(fitted, two_daily, ["a", "b"], ["s"])
    gap = ds.drop_sel(time=ds["time"].values[5])
    with pytest.raises(DataError, match=r"\(1 of 29 steps are not 1 day\)"):
        require_daily(gap, where="map cube")


# ---- the workflow end to end (reduced) ------------------------------------------------------
from pathlib import Path  # noqa: E402

from globalflux.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "demo_efflux.yaml"

# a 32 x 32 world, one year, a tiny LSTM trained for a few batches, one Dask worker
SMALL = [
    "daily_world.ny=32", "daily_world.nx=32", "daily_world.n_years=1", "daily_world.n_zones=2",
    "daily_world.n_sites=10", "daily_world.min_sites_per_zone=4",
    "daily_world.min_record_days=120", "lstm.hidden_size=8", "lstm.epochs=2",
    "lstm.batches_per_epoch=4", "lstm.batch_size=16", "efflux_map.time_chunk=100",
    "efflux_map.chunk_y=16", "efflux_map.chunk_x=32", "efflux_map.far_km=1.5",
    "mapping.n_workers=1", "report.dpi=40",
]


def run_efflux(out: Path, overrides=(), extra=()) -> int:
    args = ["run", str(RECIPE), "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    return main(args + list(extra))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("efflux") / "out"
    assert run_efflux(out, SMALL) == 0
    return out


def test_reduced_run_writes_a_daily_map_with_units_crs_and_provenance(small_run):
    out = small_run
    for rel in ("recipe.yaml", "log.txt", "report.md", "model/model.json",
                "model/lstm_weights.pt", "models/lstm/weights.pt",
                "maps/drivers.zarr", "maps/efflux.zarr", "maps/stac/collection.json",
                "metrics/map_vs_truth.csv", "metrics/lstm_sites.csv", "metrics/lstm_summary.csv",
                "metrics/timings.csv", "figures/efflux_truth_vs_map.png"):
        assert (out / rel).exists(), rel
    ds = xr.open_zarr(out / "maps" / "efflux.zarr")  # plain xarray
    eff = ds["efflux"]
    assert eff.dims == ("time", "y", "x") and eff.sizes == {"time": 366, "y": 32, "x": 32}
    t = pd.DatetimeIndex(ds["time"].values)
    assert (np.diff(t.values).astype("timedelta64[D]").astype(int) == 1).all()  # daily axis
    # CF units in the store ("g C m-2 d-1" is written as "g m-2 d-1", as carbon in long_name)
    assert eff.attrs["units"] == "g m-2 d-1" and eff.attrs["standard_name"]
    assert ds.attrs["synthetic"] == "true" and "model_sha256" in ds.attrs
    assert "spatial_ref" in ds.coords and "4326" in ds["spatial_ref"].attrs["crs_wkt"]
    land = ds["land_mask"].values.astype(bool)
    vals = eff.values
    assert np.isfinite(vals[:, land]).all() and np.isnan(vals[:, ~land]).all()
    # monthly COGs (the recipe's cadence), tagged SYNTHETIC, listed in the STAC collection
    cogs = sorted((out / "maps" / "cog").glob("efflux_monthly_*.tif"))
    assert len(cogs) == 12
    from globalflux.io.cog import cog_tags

    assert cog_tags(cogs[0]).get("synthetic") == "true"
    from globalflux.io.catalog import load_items

    assert len(load_items(out / "maps" / "stac" / "collection.json")) == 12
    # the model is a verified package: weights loaded without unpickling
    from globalflux import load_model
    from globalflux.models.lstm import LSTMRegressor

    m = load_model(out / "model")
    assert isinstance(m, LSTMRegressor)
    assert list(m.drivers) == ["lst", "sm", "precip", "lai", "sin_doy"]


def test_reduced_run_writes_a_verified_lstm_package_and_no_pickle(small_run):
    from globalflux.io.model_package import read_package
    from test_model_package import _is_pickle

    pkg = read_package(small_run / "model")
    man = pkg.manifest
    assert man["kind"] == "lstm" and man["time_step"] == "daily" and man["synthetic"] is True
    assert man["target"]["name"] == "efflux" and man["target"]["units"] == "g C m-2 d-1"
    assert man["target"]["standard_name"]
    inputs = {e["name"]: e for e in man["inputs"]}
    assert list(inputs) == ["lst", "sm", "precip", "lai", "sin_doy", "soc"]
    assert inputs["lst"]["units"] == "degC" and inputs["lst"]["role"] == "driver"
    assert inputs["soc"]["role"] == "static" and inputs["soc"]["units"] == "t ha-1"
    lst = xr.open_zarr(small_run / "maps" / "drivers.zarr")["lst"]
    assert float(lst.min()) <= inputs["lst"]["min"] < inputs["lst"]["max"] <= float(lst.max())
    assert set(man["validation"]) >= {"scheme", "temporal", "holdout"}
    summ = pd.read_csv(small_run / "metrics" / "lstm_summary.csv").set_index("split")
    assert man["validation"]["temporal"]["median_nse"] == pytest.approx(summ.loc["temporal", "nse"])
    assert len(man["training"]["sha256"]) == 64 and man["training"]["n_sites"] == 8
    assert "workflow: efflux_daily_map" in man["recipe"]
    assert set(man["payloads"]) == {"lstm_weights.pt"}
    # the map records the package it was made with
    store = xr.open_zarr(small_run / "maps" / "efflux.zarr")
    assert store.attrs["model_sha256"] == pkg.checksum and store.attrs["model_kind"] == "lstm"
    # no pickle anywhere in the run folder (torch weights are zip archives of tensors)
    files = [p for p in small_run.rglob("*") if p.is_file()]
    bad = [p for p in files if p.suffix in (".pkl", ".pickle", ".joblib", ".pk")
           or _is_pickle(p.read_bytes()[:4096] + p.read_bytes()[-8:])]
    assert not bad, bad


def _plain(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.load()
    for v in ds.variables:
        ds[v].encoding = {}
    return ds


def _two_year_cube(small_run, tmp_path):
    """The run's own 2020 driver cube followed by 2021 of the same synthetic world (same seed
    and grid: the land, zones and statics are the same; new weather), written as Zarr."""
    from globalflux.io.store import write_dataset
    from globalflux.pipeline import validate
    from globalflux.testing.daily import DAILY_DRIVERS, make_daily_world

    cfg = validate(RECIPE, SMALL).daily_world
    run = _plain(xr.open_zarr(small_run / "maps" / "drivers.zarr"))
    nxt = make_daily_world(cfg, year=cfg.year + 1).cube
    np.testing.assert_array_equal(nxt["land_mask"].values, run["land_mask"].values)
    np.testing.assert_array_equal(nxt["soc"].values, run["soc"].values)
    names = list(DAILY_DRIVERS)
    dyn = xr.concat([run[names], nxt[names].assign_coords(y=run["y"], x=run["x"])], dim="time",
                    data_vars="all", coords="minimal", compat="override", join="override")
    cube = run.drop_dims("time").merge(dyn.drop_vars("spatial_ref", errors="ignore"))
    for v in names:
        cube[v].attrs = dict(run[v].attrs)
    write_dataset(cube.chunk({"time": 100, "y": 16, "x": 32}), tmp_path / "two_years.zarr")
    return tmp_path / "two_years.zarr"


def test_globalflux_map_of_the_package_reproduces_the_workflow_map_and_a_new_year(
        small_run, tmp_path, capsys):
    """`globalflux map E/model CUBE` over the next year of the synthetic driver cube (the
    run's year followed by a new one): the run's year equals the workflow's own map value for
    value (the state starts at zero on the cube's first day in both); the new year is mapped
    on every land pixel. A bbox/time subset (globalflux.map_cube) is the same subset."""
    cube = _two_year_cube(small_run, tmp_path)
    out = tmp_path / "m.zarr"
    code = main(["map", str(small_run / "model"), str(cube), "--out", str(out)])
    assert code == 0, capsys.readouterr()
    own = xr.open_zarr(small_run / "maps" / "efflux.zarr")
    got = xr.open_zarr(out)
    assert got["efflux"].sizes == {"time": 366 + 365, "y": 32, "x": 32}
    assert got.attrs["model_sha256"] == own.attrs["model_sha256"]
    assert got["efflux"].attrs["units"] == own["efflux"].attrs["units"] and "efflux_sd" not in got
    first = got["efflux"].sel(time=slice("2020-01-01", "2020-12-31")).values
    np.testing.assert_array_equal(first, own["efflux"].values)
    land = own["land_mask"].values.astype(bool)
    new = got["efflux"].sel(time="2021").values
    assert np.isfinite(new[:, land]).all() and np.isnan(new[:, ~land]).all()
    assert not np.allclose(new[:365], first[:365], equal_nan=True)  # new weather, new values
    # a sub-region and an earlier end (bbox, time) through the Python API: the same subset
    import globalflux

    x, y = own["x"].values, own["y"].values
    part = globalflux.map_cube(globalflux.load_model(small_run / "model"), xr.open_zarr(cube),
                               bbox=(x[5], y[20], x[20], y[4]),
                               time=(pd.Timestamp("2020-01-01"), pd.Timestamp("2021-03-31")))
    part = part["efflux"].compute(scheduler="threads")
    assert (part.sizes["time"], part.sizes["y"], part.sizes["x"]) == (366 + 90, 17, 16)
    np.testing.assert_array_equal(
        part.values, got["efflux"].sel(y=part["y"], x=part["x"], time=part["time"]).values)


def test_map_cube_of_an_lstm_package_is_lazy_and_checks_its_inputs(small_run, tmp_path, capsys):
    import globalflux
    from globalflux.errors import GridError
    from globalflux.io.store import write_dataset

    model = globalflux.load_model(small_run / "model")
    cube = xr.open_zarr(small_run / "maps" / "drivers.zarr")
    with dask.config.set(scheduler=_raise_if_computed):
        ds = globalflux.map_cube(model, cube)
    assert list(ds.data_vars) == ["efflux"] and ds["efflux"].chunks is not None
    assert ds["efflux"].chunks[0][0] == cube["lst"].chunks[0][0]  # the cube's own time chunk
    assert ds.attrs["model_kind"] == "lstm"
    # missing driver, other units, no CRS: named
    with pytest.raises(DataError, match=r"cube variable lai: cube lacks the model's input"):
        globalflux.map_cube(model, cube.drop_vars("lai"))
    k = cube.copy()
    k["lst"] = k["lst"].assign_attrs(units="K")
    with pytest.raises(DataError, match="cube variable lst: has units 'K', the model was "
                       "trained on 'degC'"):
        globalflux.map_cube(model, k)
    nocrs = cube.drop_vars("spatial_ref")
    for v in nocrs.data_vars:
        nocrs[v].attrs.pop("grid_mapping", None)
        nocrs[v].encoding.pop("grid_mapping", None)
    with pytest.raises(GridError, match="no CRS"):
        globalflux.map_cube(model, nocrs)
    # the CLI: a cube whose time step is not daily exits 2 naming the cube, writes nothing
    write_dataset(_plain(cube.isel(time=slice(0, None, 7))), tmp_path / "weekly.zarr")
    out = tmp_path / "w.zarr"
    assert main(["map", str(small_run / "model"), str(tmp_path / "weekly.zarr"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cube {tmp_path / 'weekly.zarr'}" in err and "time step is not daily: 7 days" in err
    assert not out.exists()
    write_dataset(_plain(cube.drop_vars("lai")), tmp_path / "nolai.zarr")
    assert main(["map", str(small_run / "model"), str(tmp_path / "nolai.zarr"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cube variable lai" in err and not out.exists()


def test_reduced_run_scores_map_and_sites(small_run):
    mvt = pd.read_csv(small_run / "metrics" / "map_vs_truth.csv").set_index("region")
    assert list(mvt.index) == ["all_land_pixels", "pixels_far_from_sites", "pixels_near_sites"]
    far = mvt.loc["pixels_far_from_sites"]
    assert far["pixels"] > 0 and far["min_km"] >= 1.5 and np.isfinite(far["r2"])
    assert mvt.loc["all_land_pixels", "pixels"] == (
        far["pixels"] + mvt.loc["pixels_near_sites", "pixels"])
    sites = pd.read_csv(small_run / "metrics" / "lstm_sites.csv")
    assert set(sites["split"]) == {"temporal", "holdout"}
    assert (sites["split"] == "holdout").sum() == 2  # round(0.2 * 10)
    # one mapping path: the map at each site's pixel is the site's own whole-series prediction
    assert (sites["map_minus_site_max_abs"] < 1e-4).all()
    report = (small_run / "report.md").read_text()
    assert "SYNTHETIC" in report and "pixels_far_from_sites" in report


def test_bad_driver_name_exits_2_naming_it(tmp_path, capsys):
    out = tmp_path / "o"
    code = run_efflux(out, SMALL + ["lstm.drivers=[lst,Ts]"])
    err = capsys.readouterr().err
    assert code == 2
    assert "lstm.drivers" in err and "['Ts'] not in the driver cube" in err
    assert not (out / "maps").exists()


def test_unknown_listed_site_exits_2_naming_it(tmp_path, capsys):
    code = run_efflux(tmp_path / "o", SMALL + ["lstm.sites=[SYND-001,NOPE-9]"])
    err = capsys.readouterr().err
    assert code == 2 and "lstm.sites" in err and "['NOPE-9'] are not among the sites" in err


def test_non_daily_map_cube_exits_2_naming_it(tmp_path, capsys):
    from globalflux.io.store import write_dataset
    from globalflux.testing.daily import make_daily_world

    w = make_daily_world(ny=24, nx=24, n_years=1, n_zones=2, n_sites=8, min_sites_per_zone=3,
                         min_record_days=60)
    weekly = w.cube.isel(time=slice(0, None, 7))
    write_dataset(weekly, tmp_path / "weekly.zarr")
    out = tmp_path / "o"
    code = run_efflux(out, SMALL + [f"efflux_map.map_cube={tmp_path / 'weekly.zarr'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"efflux_map.map_cube {tmp_path / 'weekly.zarr'}" in err
    assert "time step is not daily: 7 days" in err
    assert not (out / "maps").exists() and not (out / "model").exists()


# ---- real inputs: a daily driver cube from (local) STAC, COSORE sites ---------------------------
@pytest.mark.slow
def test_stac_daily_cube_and_cosore_sites_train_and_map(tmp_path, capsys):
    """The real-input path on local fixtures: MOD11A2-like COGs behind a local STAC catalog ->
    the stac_cube workflow (recipes/stac_modis_daily_lstm.yaml, daily) -> COSORE daily Rs from
    the test fixture (`globalflux sites cosore`) -> efflux_daily_map
    (recipes/stac_efflux_daily.yaml) trains on the site inside the cube with cube-extracted
    drivers and maps the cube."""
    from _cube_helpers import modis_lst_series, stac_item, static_catalog, write_tif

    from globalflux.grid import BBox, GridSpec

    # a 0.25 deg grid around the COSORE fixture site d20200213_SEIBT (34.09 N, 118.66 W), whose
    # daily Rs runs 2013-03-31..2013-05-10; 8-day LST composites around that spring
    grid = GridSpec("EPSG:4326", 0.25, BBox(-119.5, 33.5, -117.5, 35.0))
    dates = pd.date_range("2013-03-14", "2013-05-25", freq="8D")
    rng = np.random.default_rng(3)
    dn, qc = modis_lst_series(rng, dates, grid)
    dn = (dn.astype("float64") + 40 * np.arange(len(dates))[:, None, None]).astype("uint16")
    dn[:, 0, 0] = 0
    items = []
    for i, d in enumerate(dates):
        a = write_tif(tmp_path / f"lst_{i}.tif", dn[i], grid, nodata=0, cog=True)
        q = write_tif(tmp_path / f"qc_{i}.tif", qc[i], grid, cog=True)
        items.append(stac_item(f"MOD11A2.A{d.year}{d.day_of_year:03d}", "modis-11A2-061", d,
                               {"LST_Day_1km": a, "QC_Day": q}, grid, nodata=0))
    catalog = static_catalog(tmp_path / "catalog", items, "modis-11A2-061")

    cube_out = tmp_path / "daily-out"
    assert main(["run", str(REPO / "recipes" / "stac_modis_daily_lstm.yaml"),
                 "--out", str(cube_out),
                 "--set", f"cube.stac.catalog={catalog}", "--set", "cube.stac.products=[lst_day]",
                 "--set", "cube.stac.sign=none",
                 "--set", "cube.stac.datetime=2013-03-01/2013-06-30",
                 "--set", "cube.grid.resolution=0.25",
                 "--set", "cube.grid.bbox=[-119.5, 33.5, -117.5, 35.0]"]) == 0, capsys.readouterr()
    sites = tmp_path / "cosore_rs_daily.parquet"
    assert main(["sites", "cosore", str(REPO / "tests" / "fixtures" / "cosore"), "--variable", "Rs",
                 "--aggregation", "daily", "--out", str(sites)]) == 0
    capsys.readouterr()

    out = tmp_path / "efflux-out"
    code = main(["run", str(REPO / "recipes" / "stac_efflux_daily.yaml"), "--out", str(out),
                 "--set", f"efflux_map.driver_cube={cube_out / 'maps' / 'modis_daily.zarr'}",
                 "--set", f"efflux_map.sites_file={sites}",
                 "--set", "lstm.drivers=[lst_day,sin_doy]", "--set", "lstm.hidden_size=8",
                 "--set", "lstm.epochs=2", "--set", "lstm.seq_len=10",
                 "--set", "lstm.min_days=20", "--set", "lstm.batches_per_epoch=3",
                 "--set", "efflux_map.time_chunk=30", "--set", "mapping.n_workers=1",
                 "--set", "report.dpi=40"])
    assert code == 0, capsys.readouterr()
    log = (out / "log.txt").read_text()
    assert "3 of 4 sites lie outside the driver cube and are not used" in log
    sites_tab = pd.read_csv(out / "metrics" / "lstm_sites.csv")
    assert sites_tab["site_id"].tolist() == ["d20200213_SEIBT"]
    assert sites_tab["split"].tolist() == ["temporal"]
    ds = xr.open_zarr(out / "maps" / "efflux.zarr")
    cube = xr.open_zarr(cube_out / "maps" / "modis_daily.zarr")
    assert ds["efflux"].sizes == {"time": cube.sizes["time"], "y": 6, "x": 8}
    assert ds.attrs["synthetic"] == "false" and "spatial_ref" in ds.coords
    assert np.isnan(ds["efflux"].values[:, 0, 0]).all()  # LST fill everywhere there: not mapped
    assert np.isfinite(ds["efflux"].values[:, 3, 4]).all()
    assert (out / "model" / "model.json").is_file() and (out / "maps" / "stac").is_dir()
    from globalflux.io.model_package import read_package

    pkg = read_package(out / "model")
    assert pkg.manifest["synthetic"] is False and pkg.manifest["kind"] == "lstm"
    assert ds.attrs["model_sha256"] == pkg.checksum
    assert not (out / "metrics" / "map_vs_truth.csv").exists()  # no answer key for real inputs
    assert "SYNTHETIC" not in (out / "report.md").read_text()

    # the STAC source itself as CUBE: `globalflux map MODEL RECIPE` loads the items lazily onto
    # the recipe's grid (nothing written but --out) and maps them like the stored cube
    import yaml

    rec = yaml.safe_load((REPO / "recipes" / "stac_modis_daily_lstm.yaml").read_text())
    rec["cube"]["stac"].update(catalog=str(catalog), products=["lst_day"], sign="none",
                               datetime="2013-03-01/2013-06-30")
    rec["cube"]["grid"].update(resolution=0.25, bbox=[-119.5, 33.5, -117.5, 35.0])
    (tmp_path / "stac_cube.yaml").write_text(yaml.safe_dump(rec))
    assert main(["map", str(out / "model"), str(tmp_path / "stac_cube.yaml"),
                 "--out", str(tmp_path / "from_stac.zarr")]) == 0, capsys.readouterr()
    again = xr.open_zarr(tmp_path / "from_stac.zarr")
    np.testing.assert_allclose(again["efflux"].values, ds["efflux"].values, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_map_cube_of_a_subregion_reproduces_the_map_with_daily_cogs(small_run, tmp_path):
    """efflux_map.map_cube: the trained model maps another cube (here a sub-region of the
    run's own driver cube, read from its Zarr); where they overlap the values equal the
    workflow's own map. COGs one per day."""
    from globalflux.io.store import write_dataset

    drivers = xr.open_zarr(small_run / "maps" / "drivers.zarr")
    sub = drivers.isel(y=slice(5, 21), x=slice(8, 30)).load()
    sub = sub.drop_encoding() if hasattr(sub, "drop_encoding") else sub
    write_dataset(sub, tmp_path / "sub.zarr")
    out = tmp_path / "o"
    code = run_efflux(out, SMALL + [f"efflux_map.map_cube={tmp_path / 'sub.zarr'}",
                                    "efflux_map.cog_every=day"])
    assert code == 0
    full = xr.open_zarr(small_run / "maps" / "efflux.zarr")
    part = xr.open_zarr(out / "maps" / "efflux.zarr")
    # seeded training: the same weights (the files differ: torch.save writes a serialization id)

    from globalflux import load_model

    tok = [load_model(p / "model").weights().token for p in (small_run, out)]
    assert tok[0] == tok[1]
    assert part["efflux"].sizes == {"time": 366, "y": 16, "x": 22}
    same = full["efflux"].sel(y=part["y"], x=part["x"]).values
    np.testing.assert_allclose(part["efflux"].values, same, rtol=1e-6, atol=1e-7)
    assert len(list((out / "maps" / "cog").glob("efflux_*.tif"))) == 366  # one per day
    assert not (out / "metrics" / "map_vs_truth.csv").exists()  # no answer key for that cube


@pytest.mark.slow
def test_resume_of_a_finished_run_recomputes_nothing(small_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(small_run, out)
    before = xr.open_zarr(out / "maps" / "efflux.zarr")["efflux"].values
    assert run_efflux(out, SMALL, extra=["--resume"]) == 0
    log = (out / "log.txt").read_text()
    assert "efflux.zarr is complete; nothing to do" in log
    np.testing.assert_array_equal(xr.open_zarr(out / "maps" / "efflux.zarr")["efflux"].values,
                                  before)


@pytest.mark.slow
def test_ensemble_run_maps_the_spread_and_globalflux_map_reproduces_it(tmp_path, capsys):
    """lstm.ensemble=2: the package holds both members; the map gets efflux_sd (the spread
    across members, named like the forests' rh_sd); `globalflux map` gives both layers value
    for value."""
    out = tmp_path / "ens"
    assert run_efflux(out, SMALL + ["lstm.ensemble=2"]) == 0
    from globalflux.io.model_package import read_package

    pkg = read_package(out / "model")
    assert pkg.manifest["lstm"]["members"] == 2 and len(pkg.manifest["payloads"]) == 2
    own = xr.open_zarr(out / "maps" / "efflux.zarr")
    land = own["land_mask"].values.astype(bool)
    sd = own["efflux_sd"].values
    assert np.isfinite(sd[:, land]).all() and (sd[:, land] > 0).mean() > 0.99
    assert np.isnan(sd[:, ~land]).all()
    assert (out / "models" / "lstm_member1").is_dir()
    capsys.readouterr()
    got = tmp_path / "m.zarr"
    assert main(["map", str(out / "model"), str(out / "maps" / "drivers.zarr"),
                 "--out", str(got)]) == 0
    m = xr.open_zarr(got)
    np.testing.assert_array_equal(m["efflux"].values, own["efflux"].values)
    np.testing.assert_array_equal(m["efflux_sd"].values, sd)
