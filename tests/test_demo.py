"""The demo end to end through the CLI: a reduced-size run checked output by output, resume,
a sub-region run, and (slow) the full-size demo's recovery claims on the synthetic world."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from conftest import DEMO_SMALL

from globalflux import __version__
from globalflux.cli import main
from globalflux.provenance import SYNTHETIC_NOTE

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "demo.yaml"

# a small world, few trees, one validation process, one Dask worker: ~30 s
SMALL = DEMO_SMALL  # the overrides of the shared demo_run fixture (conftest.py)


def run_demo(out: Path, overrides=(), extra=()) -> int:
    args = ["run", str(DEMO), "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    return main(args + list(extra))


@pytest.fixture(scope="module")
def demo(demo_run) -> Path:
    """The small demo run (one per test session, shared with tests/test_cf.py and others)."""
    return demo_run


def test_run_folder_layout(demo):
    for rel in ("recipe.yaml", "log.txt", "report.md", "figures/rh_map.png", "figures/zones.png",
                "figures/obs_vs_pred.png", "metrics/loso_scores.csv", "metrics/loso_predictions.csv",
                "metrics/zone_recovery.csv", "metrics/timings.csv", "metrics/map_vs_truth.csv",
                "metrics/zone_responses.csv", "maps/rh.zarr", "maps/predictors.zarr"):
        assert (demo / rel).exists(), rel
    assert len(list((demo / "maps" / "cog").glob("rh_*.tif"))) == 46  # one per 8-day step
    resolved = yaml.safe_load((demo / "recipe.yaml").read_text())
    assert resolved["synthetic"]["ny"] == 64 and resolved["forest"]["n_estimators"] == 10
    log = (demo / "log.txt").read_text()
    assert "map RH with Dask into Zarr (resumable) done in" in log


def _check_store(path: Path, demo: Path, variables: set[str]) -> xr.Dataset:
    ds = xr.open_zarr(path)  # plain xarray, no globalflux code
    assert variables <= set(ds.data_vars)
    for name in ds.data_vars:
        assert ds[name].attrs.get("units"), name
        assert ds[name].attrs.get("long_name"), name
    for name in ("x", "y"):
        assert ds[name].attrs.get("units") and ds[name].attrs.get("long_name"), name
    assert ds.rio.crs is not None and ds.rio.crs.to_epsg() == 4326
    assert ds.attrs["globalflux_version"] == __version__
    assert yaml.safe_load(ds.attrs["recipe"]) == yaml.safe_load((demo / "recipe.yaml").read_text())
    assert ds.attrs["synthetic"] == "true" and ds.attrs["comment"] == SYNTHETIC_NOTE
    assert "SYNTHETIC" in ds.attrs["title"]
    assert ds.attrs["globalflux_complete"] == "true"
    return ds


def test_map_store_opens_with_plain_xarray_and_carries_cf_crs_provenance(demo):
    ds = _check_store(demo / "maps" / "rh.zarr", demo, {"rh", "zone", "land_mask"})
    assert ds["rh"].dims == ("time", "y", "x") and ds.sizes["time"] == 46
    assert ds["rh"].attrs["units"] == "g m-2 d-1"  # CF: carbon in the long_name, not the unit
    assert "carbon" in ds["rh"].attrs["long_name"]
    land = ds["land_mask"].values.astype(bool)
    rh = ds["rh"].values
    assert np.isfinite(rh[:, land]).all() and np.isnan(rh[:, ~land]).all()
    assert (rh[:, land] > 0).all()
    zone = ds["zone"].values  # CF decoding masks the fill value -1 (off land) as NaN
    assert np.isnan(zone[~land]).all() and set(np.unique(zone[land])) <= {0, 1, 2, 3}
    raw = xr.open_zarr(demo / "maps" / "rh.zarr", mask_and_scale=False)["zone"]
    assert raw.dtype == np.int16 and (raw.values[~land] == -1).all()


def test_predictor_cube_store(demo):
    ds = _check_store(demo / "maps" / "predictors.zarr", demo,
                      {"lst_day", "lst_night", "ndvi_8d", "evi", "lswi_8d", "gpp", "lai", "fpar",
                       "et", "tem", "pre", "ndvi", "lswi", "dem", "soc", "land_mask"})
    assert ds["gpp"].chunks is not None  # chunked store
    assert ds["gpp"].encoding["chunks"] == (46, 32, 64)


def test_cogs_are_valid_tagged_and_equal_the_store(demo):
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    store = xr.open_zarr(demo / "maps" / "rh.zarr")
    cogs = sorted((demo / "maps" / "cog").glob("rh_*.tif"))
    for path in (cogs[0], cogs[20], cogs[-1]):
        ok, errors, _ = cog_validate(str(path))
        assert ok, (path, errors)
    with rasterio.open(cogs[20]) as src:
        tags = src.tags()
        assert src.crs.to_epsg() == 4326
        data = src.read(1)
        assert src.overviews(1)
    assert tags["synthetic"] == "true" and tags["comment"] == SYNTHETIC_NOTE
    assert tags["title"].startswith("SYNTHETIC")
    assert tags["globalflux_version"] == __version__ and "recipe" in tags
    step = pd.Timestamp(store["time"].values[20])
    assert cogs[20].name == f"rh_{step:%Y-%m-%d}.tif"
    np.testing.assert_array_equal(data, store["rh"].isel(time=20).values)


def test_report_and_figures_say_synthetic(demo):
    from globalflux.report import png_metadata

    text = (demo / "report.md").read_text()
    assert text.startswith("# SYNTHETIC demo: demo")
    assert f"> **{SYNTHETIC_NOTE}**" in text
    assert "adjusted Rand index vs the true zones" in text
    assert "| grouping | group | n | sites | R2 zoned | R2 unified |" in text
    for fig in ("rh_map", "zones", "obs_vs_pred", "rh_true_map"):
        assert f"figures/{fig}.png" in text
        meta = png_metadata(demo / "figures" / f"{fig}.png")
        assert meta["Synthetic"] == "true" and meta["Description"] == SYNTHETIC_NOTE
        assert meta["Software"] == f"globalflux {__version__}"


def test_metrics_tables(demo):
    scores = pd.read_csv(demo / "metrics" / "loso_scores.csv")
    overall = scores[scores["grouping"] == "all"].set_index("model")
    assert set(overall.index) == {"zoned", "unified"}
    assert (overall["n"] == overall.loc["zoned", "n"]).all()
    pred = pd.read_csv(demo / "metrics" / "loso_predictions.csv")
    assert len(pred) == overall.loc["zoned", "n"] and pred["site_id"].nunique() == 24
    from globalflux.metrics import r2

    assert r2(pred["y_obs"], pred["pred_zoned"]) == pytest.approx(overall.loc["zoned", "r2"])
    rec = pd.read_csv(demo / "metrics" / "zone_recovery.csv").iloc[0]
    assert -1 <= rec["ari_land_pixels"] <= 1 and rec["sites"] == 24


def test_training_table_matches_the_answer_key(demo):
    """The pipeline's extraction (Zarr -> sample_points -> join_sites) gives exactly the
    observations and predictors of the world's own pixel-index join."""
    from globalflux.config import SyntheticConfig
    from globalflux.recipe import from_mapping
    from globalflux.testing import make_world

    resolved = yaml.safe_load((demo / "recipe.yaml").read_text())
    world = make_world(from_mapping(SyntheticConfig, resolved["synthetic"]))
    key = world.training_table().sort_values(["site_id", "time"]).reset_index(drop=True)
    pred = pd.read_csv(demo / "metrics" / "loso_predictions.csv", parse_dates=["time"])
    pred = pred.sort_values(["site_id", "time"]).reset_index(drop=True)
    assert len(pred) == len(key)
    assert (pred["site_id"].astype(str).to_numpy() == key["site_id"].astype(str).to_numpy()).all()
    np.testing.assert_allclose(pred["y_obs"].to_numpy(), key["rh"].to_numpy())
    assert (pred["zone_true"].to_numpy() == key["zone_true"].to_numpy()).all()


def test_resume_finishes_only_what_is_missing(demo, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(demo, out)
    before = xr.open_zarr(out / "maps" / "rh.zarr")["rh"].values
    blocks = sorted((out / "maps" / "rh.zarr" / "_globalflux" / "blocks").iterdir())
    assert len(blocks) >= 2  # blocks chosen by mapping.mapping_chunks; whole time axis
    last = blocks[-1]
    last.unlink()
    # wipe that block's data too, as if the run died before writing it (store chunks = blocks)
    root = out / "maps" / "rh.zarr" / "rh" / "c"
    gone = [c for c in root.rglob("*")
            if c.is_file() and c.relative_to(root).parts == tuple(last.name.split("."))]
    assert gone
    for chunk in gone:
        chunk.unlink()
    cog = sorted((out / "maps" / "cog").glob("rh_*.tif"))[5]
    cog.unlink()
    assert run_demo(out, SMALL, extra=["--resume"]) == 0
    after = xr.open_zarr(out / "maps" / "rh.zarr")
    np.testing.assert_array_equal(after["rh"].values, before)
    assert after.attrs["globalflux_complete"] == "true"
    assert cog.is_file() and len(list((out / "maps" / "cog").glob("rh_*.tif"))) == 46
    log = (out / "log.txt").read_text()
    assert f"1 to compute ({len(blocks) - 1} done before)" in log


def test_crop_to_bbox_keeps_pixel_centres_inside():
    from globalflux.errors import GridError
    from globalflux.testing import make_world
    from globalflux.workflows.synthetic_zoned_rh import crop_to_bbox

    world = make_world(ny=48, nx=48, n_sites=8, min_sites_per_zone=2)
    bbox = (10.02, 47.85, 10.12, 47.95)
    out = crop_to_bbox(world.cube, bbox)
    xs, ys = world.grid.x, world.grid.y
    expect_x = xs[(xs >= bbox[0]) & (xs <= bbox[2])]
    expect_y = ys[(ys >= bbox[1]) & (ys <= bbox[3])]
    np.testing.assert_array_equal(out["x"].values, expect_x)
    np.testing.assert_array_equal(out["y"].values, expect_y)
    assert out.rio.crs.to_epsg() == 4326 and out["gpp"].dims == ("time", "y", "x")
    assert crop_to_bbox(world.cube, None) is world.cube
    with pytest.raises(GridError, match="holds no pixel of the world"):
        crop_to_bbox(world.cube, (10.0001, 47.9999, 10.0002, 48.0))


@pytest.mark.slow
def test_full_demo_recovers_zones_and_zoned_beats_unified(tmp_path):
    """The claims built into the synthetic world, checked on the full-size demo run."""
    out = tmp_path / "demo-out"
    assert run_demo(out) == 0
    rec = pd.read_csv(out / "metrics" / "zone_recovery.csv").iloc[0]
    assert rec["land_pixels"] > 40000
    assert rec["ari_land_pixels"] >= 0.8
    scores = pd.read_csv(out / "metrics" / "loso_scores.csv")
    overall = scores[scores["grouping"] == "all"].set_index("model")
    assert overall.loc["zoned", "r2"] > overall.loc["unified", "r2"]
    assert overall.loc["zoned", "rmse"] < overall.loc["unified", "rmse"]
    rh = xr.open_zarr(out / "maps" / "rh.zarr")
    assert rh.sizes["y"] >= 256 and rh.sizes["x"] >= 256 and rh.sizes["time"] >= 46
    assert len(list((out / "maps" / "cog").glob("rh_*.tif"))) == rh.sizes["time"]


def test_stac_collection_describes_the_cogs(demo):
    """mapping.catalog (default true): a STAC Collection + one Item per COG, marked synthetic."""
    import pystac

    collection = pystac.Collection.from_file(str(demo / "maps" / "stac" / "collection.json"))
    items = list(collection.get_items(recursive=True))
    assert len(items) == len(list((demo / "maps" / "cog").glob("rh_*.tif"))) == 46
    assert collection.extra_fields.get("globalflux:synthetic") is True
    href = Path(items[0].assets[next(iter(items[0].assets))].get_absolute_href())
    assert href.is_file() and href.parent == (demo / "maps" / "cog").resolve()


def test_demo_reports_the_three_validation_schemes(demo):
    schemes = pd.read_csv(demo / "metrics" / "validation_schemes.csv")
    assert list(schemes.columns) == ["scheme", "model", "predictors", "n", "n_groups", "r2",
                                     "rmse", "bias"]
    assert set(schemes["scheme"]) == {"record_kfold", "loso", "lolo"}
    assert set(schemes["model"]) == {"zoned", "unified", "zone_choice"}
    loso = pd.read_csv(demo / "metrics" / "loso_scores.csv")
    zoned = loso[(loso["grouping"] == "all") & (loso["model"] == "zoned")]["r2"].item()
    row = schemes[(schemes["scheme"] == "loso") & (schemes["model"] == "zoned")]["r2"].item()
    assert row == pytest.approx(zoned)  # the LOSO table comes from the same fits
    assert "Validation schemes" in (demo / "report.md").read_text()
