"""Workflow srdb_rh_annual: mapping pieces on a small cube, errors, and the real run (slow)."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from globalflux.cli import main
from globalflux.mapping import map_cube
from globalflux.models.forest import ZonedForestRegressor
from globalflux.workflows.srdb_rh_annual import (
    EARTH_RADIUS_M,
    global_total,
    pixel_area_m2,
)
from globalflux.zones import ZoneClassifier

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "srdb_rh_annual.yaml"


def test_pixel_area_of_the_globe_is_the_sphere():
    y = np.arange(89.75, -90, -0.5)
    x = np.arange(-179.75, 180, 0.5)
    cube = xr.Dataset(coords={"y": y, "x": x})
    total = float(pixel_area_m2(cube).sum()) * len(x)
    assert total == pytest.approx(4 * np.pi * EARTH_RADIUS_M**2, rel=1e-12)


def _small_world(seed=0):
    rng = np.random.RandomState(seed)
    ny, nx = 40, 60
    y = np.linspace(60, 20, ny)
    x = np.linspace(-10, 30, nx)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    fields = {"mat": 30 - 0.5 * yy + rng.normal(0, 0.5, (ny, nx)),
              "map": 400 + 15 * xx + rng.normal(0, 20, (ny, nx)),
              "ndvi_max": rng.uniform(0.2, 0.9, (ny, nx))}
    land = rng.uniform(size=(ny, nx)) > 0.2
    fields["ndvi_max"][0, :5] = np.nan  # land pixels without a predictor: not predicted
    cube = xr.Dataset({k: (("y", "x"), v.astype("float32")) for k, v in fields.items()},
                      coords={"y": y, "x": x})
    cube["land_mask"] = (("y", "x"), land)
    cube["land_fraction"] = (("y", "x"), np.where(land, rng.uniform(0.5, 1, (ny, nx)), 0).astype("float32"))
    iy, ix = rng.randint(0, ny, 80), rng.randint(0, nx, 80)
    table = pd.DataFrame({k: fields[k][iy, ix] for k in fields}).dropna()
    yv = 100 + 10 * table["mat"] + 0.1 * table["map"] + rng.normal(0, 5, len(table))
    model = ZonedForestRegressor(zone_factors=["mat", "map"], zone_classifier=ZoneClassifier(
        n_zones=2, n_iter=5), n_estimators=15, eliminate=False, min_zone_sites=5, random_state=0)
    model.fit(table, yv.to_numpy(), groups=np.arange(len(table)).astype(str))
    return cube, model, list(table.columns)


def test_tree_stats_match_predict_and_predict_std():
    cube, model, feats = _small_world()
    frame = pd.DataFrame({f: cube[f].values.ravel() for f in feats}).dropna().reset_index(drop=True)
    st = model.predict_tree_stats(frame, quantiles=(0.05, 0.95))
    np.testing.assert_array_equal(st[:, 0], model.predict(frame))
    np.testing.assert_allclose(st[:, 1], model.predict_std(frame), rtol=1e-10)
    np.testing.assert_allclose(st[:, 2:4], model.predict_quantiles(frame, (0.05, 0.95)), rtol=1e-10)
    P = model.predict_trees(frame)
    np.testing.assert_allclose(P.mean(axis=0), model.predict(frame), rtol=1e-12)


class _NoCompute:
    def __call__(self, dsk, keys, **kwargs):
        raise AssertionError("a dask computation was triggered while building the graph")


def test_map_is_lazy_and_equals_eager_prediction_and_total_is_consistent():
    cube, model, feats = _small_world()
    import rioxarray  # noqa: F401  (.rio)

    chunked = cube.chunk({"y": 16, "x": 25}).rio.write_crs("EPSG:4326")
    with dask.config.set(scheduler=_NoCompute()):
        ds = map_cube(model, chunked, quantiles=(0.05, 0.95), name="rh")
    assert isinstance(ds["rh"].data, da.Array)
    assert set(ds.data_vars) == {"rh", "rh_sd", "rh_q05", "rh_q95", "zone"}
    out = ds.compute()
    frame = pd.DataFrame({f: cube[f].values.ravel() for f in feats})
    ok = cube["land_mask"].values.ravel() & frame.notna().all(axis=1).to_numpy()
    want = np.full(frame.shape[0], np.nan)
    want[ok] = model.predict(frame[ok])
    np.testing.assert_allclose(out["rh"].values.ravel(), want, rtol=1e-5)
    zone = out["zone"].values.ravel()
    land = cube["land_mask"].values.ravel()
    assert (zone[~land] == -1).all() and (zone[ok] >= 0).all()  # zones need only the factors
    assert (out["rh_q05"] <= out["rh_q95"]).values[np.isfinite(out["rh"].values)].all()
    tot = global_total(model, chunked, feats)
    w = (pixel_area_m2(cube) * cube["land_fraction"]).values.ravel()
    from_map = np.nansum(want * np.where(ok, w, 0)) / 1e15
    assert tot["total_pg"] == pytest.approx(from_map, rel=1e-6)
    assert tot["area_predicted_km2"] == pytest.approx(w[ok].sum() / 1e6, rel=1e-9)
    assert tot["land_area_km2"] > tot["area_predicted_km2"]
    assert tot["total_q05_pg"] <= tot["total_pg"] <= tot["total_q95_pg"] and tot["total_sd_pg"] > 0


@pytest.mark.parametrize("override, message", [
    ("sites.source=cosore", "sites.source: sites.source is 'cosore'. The srdb_rh_annual workflow reads SRDB"),
    ("cube.source=synthetic", "cube.source: cube.source is 'synthetic'"),
    ("zones.factors=[TEM]", "zones.factors: unknown zone factor(s) ['TEM']. Use static grid layers"),
])
def test_bad_recipe_values_exit_2_with_the_key(tmp_path, capsys, override, message):
    code = main(["run", str(RECIPE), "--out", str(tmp_path / "run"), "--set", override])
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.realdata
def test_real_run_reduced(shared_data, tmp_path):
    import rioxarray  # noqa: F401

    from globalflux.io.cog import validate_cog
    from globalflux.io.store import open_dataset

    out = tmp_path / "run"
    code = main(["run", str(RECIPE), "--out", str(out),
                 "--set", f"sites.srdb_path={shared_data / 'srdb'}",
                 "--set", f"sites.gsbe_path={shared_data / 'gsbe'}",
                 "--set", f"cube.static_root={shared_data / 'grids'}",
                 "--set", "forest.n_estimators=10", "--set", "forest.eliminate=false",
                 "--set", "validation.schemes=[record_kfold]", "--set", "validation.k_folds=3",
                 "--set", "validation.bootstrap=2",
                 "--set", "forest.map_resolutions=[0.5]", "--set", "zones.k_range=[2,3]",
                 "--set", "zones.n_iter=10"])
    assert code == 0
    report = (out / "report.md").read_text()
    assert "| predictors | zoned r2 | unified r2 | zoned rmse | unified rmse |" in report
    assert "an adaptation, not a reproduction" in report
    side = pd.read_csv(out / "metrics" / "zoned_vs_unified.csv")
    assert set(side["predictors"]) == {"grid", "site"} and side.notna().all().all()
    pred = pd.read_csv(out / "metrics" / "pred_site_zoned.csv")
    assert pred["site_id"].nunique() > 150 and pred["y_pred"].notna().all()
    schemes = pd.read_csv(out / "metrics" / "validation_schemes.csv")
    assert set(schemes["model"]) == {"zoned", "unified", "zone_choice", "zone_feature"}
    qc = pd.read_csv(out / "metrics" / "qc_counts.csv")
    assert {"exact_duplicate", "rh_above_rs", "rh_rs_ratio", "partition_method"} <= set(qc["step"])
    assert (qc["n_before"] - qc["n_removed"] == qc["n_after"]).all()
    tot = pd.read_csv(out / "metrics" / "global_total.csv").set_index("coverage")
    assert list(tot.index) == ["complete", "filled", "all"]
    assert 10 < tot.loc["complete", "total_pg"] < 200 and tot["resid_sd_pg"].gt(0).all()
    assert (tot["q05_pg"] < tot["q95_pg"]).all() and (tot["n_boot"] == 2).all()
    area = tot["area_km2"]
    assert 1.0e8 < area["complete"] <= area["filled"] <= area["all"] <= tot["land_area_km2"].iloc[0] < 1.6e8
    spread = pd.read_csv(out / "metrics" / "forest_spread.csv")
    assert spread["total_sd_pg"].item() > 0
    ds = open_dataset(out / "maps" / "rh_0p5deg.zarr")
    assert {"rh", "rh_sd", "rh_q05", "rh_q95", "zone", "di", "aoa"} <= set(ds.data_vars)
    assert ds.attrs["synthetic"] == "false" and "recipe" in ds.attrs
    # the model package, and no pickle anywhere in the run folder
    from globalflux.io.model_package import read_package

    shares = pd.read_csv(out / "metrics" / "applicability.csv")
    assert 0 <= shares["share_of_mapped_land_outside_aoa"].item() < 1
    assert 0 <= shares["share_of_total_outside_aoa"].item() < 1
    rep = (out / "report.md").read_text()
    assert "## Area of applicability" in rep and "of the mapped RH total" in rep
    pkg = read_package(out / "model")
    assert pkg.kind == "zoned_forest" and ds.attrs["model_sha256"] == pkg.checksum
    assert pkg.manifest["time_step"] == "annual" and pkg.applicability is not None
    for p in out.rglob("*"):
        if p.is_file():
            head = p.read_bytes()[:2]
            assert p.suffix not in (".joblib", ".pkl", ".pickle"), p
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04",
                                                               b"\x05")), p
    from test_cf import check_store  # CF: cf_xarray + compliance-checker on the real store

    check_store(out / "maps" / "rh_0p5deg.zarr", tmp_path)
    ok, errors, _ = validate_cog(out / "maps" / "cog" / "rh_0p5deg.tif")
    assert ok, errors
    assert (out / "figures" / "zone_map_0p5deg.png").is_file()


def test_map_coverage_counts_land_with_every_predictor():
    from globalflux.workflows.srdb_rh_annual import map_coverage

    cube, model, feats = _small_world()
    cube["koppen"] = (("y", "x"), np.where(cube["y"].values[:, None] > 40, 3, 4) * np.ones((1, 60), "uint8"))
    cov = map_coverage(cube, feats)
    w = (pixel_area_m2(cube) * cube["land_fraction"]).where(cube["land_mask"]).values
    allrow = cov[cov["group"] == "all land"].iloc[0]
    assert allrow["land_km2"] == pytest.approx(np.nansum(w) / 1e6)
    ok = np.isfinite(cube["ndvi_max"].values) & np.isfinite(w)
    assert allrow["predicted_km2"] == pytest.approx(w[ok].sum() / 1e6)
    assert set(cov["group"]) == {"C temperate", "D cold", "all land"}
    assert (cov["predicted_share"] <= 1).all()


REDUCED = ["forest.n_estimators=10", "forest.eliminate=false", "validation.schemes=[record_kfold]",
           "validation.k_folds=3", "validation.bootstrap=2", "forest.map_resolutions=[0.5]",
           "zones.k_range=[2,3]", "zones.n_iter=10", "report.figures=false"]


def _srdb_args(shared_data, out) -> list[str]:
    args = ["run", str(RECIPE), "--out", str(out), "--quiet",
            "--set", f"sites.srdb_path={shared_data / 'srdb'}",
            "--set", f"sites.gsbe_path={shared_data / 'gsbe'}",
            "--set", f"cube.static_root={shared_data / 'grids'}"]
    for s in REDUCED:
        args += ["--set", s]
    return args


@pytest.mark.slow
@pytest.mark.realdata
def test_sigkill_during_the_map_step_then_resume_gives_identical_stores(shared_data, tmp_path):
    """The SRDB maps go through the one resumable mapping path: SIGKILL the whole run once its
    map step has started, `--resume`, and every map store equals an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "globalflux.cli", *_srdb_args(shared_data, killed)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "log.txt"
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 600:
            if proc.poll() is not None:
                break
            if log.is_file() and "global RH map at 0.5 deg" in log.read_text(errors="replace"):
                time.sleep(0.5)  # inside the map step
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before its map step could be killed"
    store = killed / "maps" / "rh_0p5deg.zarr"
    assert not (store.is_dir() and xr.open_zarr(store).attrs.get("globalflux_complete") == "true")
    assert main(_srdb_args(shared_data, killed) + ["--resume"]) == 0
    whole = tmp_path / "whole"
    assert main(_srdb_args(shared_data, whole)) == 0
    for name in ("rh_0p5deg.zarr", "rh_total_0p5deg.zarr"):
        a, b = xr.open_zarr(killed / "maps" / name), xr.open_zarr(whole / "maps" / name)
        assert set(a.data_vars) == set(b.data_vars)
        for v in a.data_vars:
            np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=f"{name}:{v}")
