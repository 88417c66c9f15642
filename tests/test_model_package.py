"""Model packages and `globalflux map`: the demo's package remaps to the demo's own map value
for value, packages hold no pickle and refuse tampering, bad inputs exit 2 naming the input."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import globalflux
from globalflux.cli import main
from globalflux.errors import DataError, GridError
from globalflux.io.model_package import (
    MANIFEST_VERSION,
    ModelPackageError,
    read_package,
    write_package,
)


def _map(args, capsys):
    code = main(["map", *map(str, args)])
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------- the package


def test_demo_writes_a_verified_model_package(demo_run):
    folder = demo_run / "model"
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["format"] == "globalflux-model-package"
    assert manifest["manifest_version"] == MANIFEST_VERSION
    assert manifest["kind"] == "zoned_forest" and manifest["synthetic"] is True
    assert manifest["target"] == {"name": "rh", "units": "g C m-2 d-1",
                                  "standard_name": "heterotrophic_respiration_carbon_flux",
                                  "long_name": "heterotrophic respiration (zoned RF, SYNTHETIC)"}
    assert manifest["time_step"] == "8-day" and manifest["engine"] == "sklearn"
    inputs = {e["name"]: e for e in manifest["inputs"]}
    assert inputs["lst_day"]["units"] == "degC" and inputs["tem"]["role"] == "zone_factor"
    assert inputs["gpp"]["min"] < inputs["gpp"]["mean"] < inputs["gpp"]["max"]
    assert len(manifest["training"]["sha256"]) == 64 and manifest["training"]["n_sites"] > 0
    assert manifest["validation"]["scheme"] == "loso" and 0 < manifest["validation"]["r2"] <= 1
    assert "workflow: synthetic_zoned_rh" in manifest["recipe"]
    assert manifest["applicability"]["threshold"] > 0
    names = set(manifest["payloads"])
    assert names == {p.name for p in folder.iterdir()} - {"model.json"}
    assert {"zones.npz", "aoa.npz"} <= names and any(n.endswith(".skops") for n in names)
    pkg = read_package(folder)
    store = xr.open_zarr(demo_run / "maps" / "rh.zarr")
    assert store.attrs["model_sha256"] == pkg.checksum


def test_loaded_model_predicts_like_the_fitted_one(demo_run):
    model = globalflux.load_model(demo_run / "model")
    section, payloads = model.to_package()
    again = type(model).from_package(json.loads(json.dumps(section)), payloads)
    cube = xr.open_zarr(demo_run / "maps" / "predictors.zarr")
    X = cube[list(model.feature_names_in_)].isel(time=3).to_dataframe().dropna()
    X = X[list(model.feature_names_in_)]
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    stats = model.predict_tree_stats(X, quantiles=(0.1, 0.9))
    np.testing.assert_array_equal(stats[:, 0], model.predict(X))
    np.testing.assert_allclose(stats[:, 1], model.predict_std(X))
    assert model.predict_trees(X).shape == (model.n_estimators, len(X))


def _is_pickle(data: bytes) -> bool:
    """A pickle stream (protocol 2-5: PROTO opcode, version, ..., STOP) or joblib's wrappers."""
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") \
            and data.rstrip()[-1:] == b".":
        return True
    return data[:2] in (b"ZF",) or data[:6] == b"\x93NUMPY" and b"'O'" in data[:200]


def test_no_pickle_anywhere_in_the_demo_run_folder(demo_run):
    files = [p for p in demo_run.rglob("*") if p.is_file()]
    assert len(files) > 50
    bad = [p for p in files if p.suffix in (".pkl", ".pickle", ".joblib", ".pk")
           or _is_pickle(p.read_bytes()[:4096] + p.read_bytes()[-8:])]
    assert not bad, bad
    # the detector itself finds a pickle
    assert _is_pickle(pickle.dumps({"a": 1}, protocol=4))


# ------------------------------------------------------------------------------ globalflux map


def test_map_command_equals_the_demo_map_value_for_value(demo_run, tmp_path, capsys):
    out = tmp_path / "M.zarr"
    code, err = _map([demo_run / "model", demo_run / "maps" / "predictors.zarr",
                      "--out", out], capsys)
    assert code == 0, err
    a = xr.open_zarr(out)
    b = xr.open_zarr(demo_run / "maps" / "rh.zarr")
    for v in ("rh", "rh_sd", "zone", "di", "aoa", "land_mask"):
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    assert a.attrs["model_sha256"] == b.attrs["model_sha256"]
    assert a.attrs["synthetic"] == "true" and "SYNTHETIC" in a.attrs["title"]
    assert a.rio.crs.to_epsg() == 4326
    # --resume of the complete store changes nothing and succeeds
    code, err = _map([demo_run / "model", demo_run / "maps" / "predictors.zarr",
                      "--out", out, "--resume"], capsys)
    assert code == 0, err


def test_map_bbox_and_time_equal_the_subset_of_the_demo_map(demo_run, tmp_path, capsys):
    b = xr.open_zarr(demo_run / "maps" / "rh.zarr")
    x, y = b["x"].values, b["y"].values
    w, e = float(x[5]), float(x[40])
    s, n = float(y[50]), float(y[10])
    out = tmp_path / "sub.zarr"
    t0, t1 = pd.Timestamp(b["time"].values[3]), pd.Timestamp(b["time"].values[9])
    code, err = _map([demo_run / "model", demo_run / "maps" / "predictors.zarr", "--out", out,
                      "--bbox", f"{w},{s},{e},{n}", "--time", f"{t0:%Y-%m-%d}/{t1:%Y-%m-%d}",
                      "--cog", "--stac"], capsys)
    assert code == 0, err
    a = xr.open_zarr(out)
    ref = b.sel(x=slice(w, e), y=slice(n, s), time=slice(t0, t1))
    assert {d: a.sizes[d] for d in ("time", "y", "x")} == {"time": 7, "y": 41, "x": 36}
    np.testing.assert_array_equal(a["time_bnds"].values, ref["time_bnds"].values)  # CF bounds
    np.testing.assert_array_equal(a["rh"].values, ref["rh"].values)
    np.testing.assert_array_equal(a["aoa"].values, ref["aoa"].values)
    assert len(list((out / "cog").glob("rh_2*.tif"))) == 7
    collection = json.loads((out / "stac" / "collection.json").read_text())
    hrefs = [link["href"] for link in collection["links"] if link["rel"] == "item"]
    assert hrefs and all(not h.startswith("/") and "://" not in h for h in hrefs)


# ------------------------------------------------------------------------------ refusals


@pytest.fixture()
def package_copy(demo_run, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(demo_run / "model", dst)
    return dst


def _refused(capsys, demo_run, tmp_path, model, needle, cube=None):
    cube = cube or demo_run / "maps" / "predictors.zarr"
    code, err = _map([model, cube, "--out", tmp_path / "never.zarr"], capsys)
    assert code == 2, err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "never.zarr").exists()


def test_one_altered_byte_in_a_payload_is_refused(package_copy, demo_run, tmp_path, capsys):
    target = sorted(package_copy.glob("*.skops"))[0]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    _refused(capsys, demo_run, tmp_path, package_copy, f"{target.name}: sha256 does not match")


def test_a_truncated_payload_is_refused(package_copy, demo_run, tmp_path, capsys):
    target = package_copy / "zones.npz"
    target.write_bytes(target.read_bytes()[:-10])
    _refused(capsys, demo_run, tmp_path, package_copy, "zones.npz: has ")


def test_a_pickle_in_place_of_a_payload_is_refused(package_copy, demo_run, tmp_path, capsys):
    target = sorted(package_copy.glob("*.skops"))[0]
    target.write_bytes(pickle.dumps({"not": "a forest"}, protocol=4))
    _refused(capsys, demo_run, tmp_path, package_copy,
             f"{target.name}: holds a pickle/joblib stream")


def test_an_unlisted_file_in_a_package_is_refused(package_copy, demo_run, tmp_path, capsys):
    (package_copy / "extra.joblib").write_bytes(b"\x80\x04K\x01.")
    _refused(capsys, demo_run, tmp_path, package_copy, "extra.joblib: is not listed")


def test_a_future_manifest_version_is_refused(package_copy, demo_run, tmp_path, capsys):
    m = json.loads((package_copy / "model.json").read_text())
    m["manifest_version"] = MANIFEST_VERSION + 1
    (package_copy / "model.json").write_text(json.dumps(m))
    _refused(capsys, demo_run, tmp_path, package_copy,
             f"model.json: manifest_version {MANIFEST_VERSION + 1} is newer")


def test_a_folder_that_is_not_a_package_is_refused(demo_run, tmp_path, capsys):
    _refused(capsys, demo_run, tmp_path, demo_run / "maps",
             f"{demo_run / 'maps'}: is not a model package (no model.json)")


def test_a_cube_lacking_a_variable_is_refused(demo_run, tmp_path, capsys):
    cube = xr.open_zarr(demo_run / "maps" / "predictors.zarr").drop_vars("gpp")
    for v in cube.variables.values():
        v.encoding = {}
    cube.to_zarr(tmp_path / "nogpp.zarr")
    _refused(capsys, demo_run, tmp_path, demo_run / "model",
             "cube variable gpp: cube lacks the model's input variable(s) ['gpp']",
             cube=tmp_path / "nogpp.zarr")


def test_mismatched_units_and_missing_crs_are_refused(demo_run):
    model = globalflux.load_model(demo_run / "model")
    cube = xr.open_zarr(demo_run / "maps" / "predictors.zarr")
    bad = cube.copy()
    bad["lst_day"] = bad["lst_day"].assign_attrs(units="K")
    with pytest.raises(DataError, match=r"cube variable lst_day: has units 'K', the model was "
                       r"trained on 'degC'\. Convert lst_day to degC"):
        globalflux.map_cube(model, bad)
    nocrs = cube.drop_vars("spatial_ref")
    for v in nocrs.data_vars.values():
        v.attrs.pop("grid_mapping", None)
        v.encoding.pop("grid_mapping", None)
    with pytest.raises(GridError, match="the cube's grid has no CRS"):
        globalflux.map_cube(model, nocrs)


def test_map_cube_is_lazy(demo_run):
    from globalflux.mapping import graph_tasks

    model = globalflux.load_model(demo_run / "model")
    cube = xr.open_zarr(demo_run / "maps" / "predictors.zarr")
    ds = globalflux.map_cube(model, cube)
    assert set(ds.data_vars) == {"rh", "rh_sd", "zone", "di", "aoa"}
    assert all(ds[v].chunks is not None for v in ds.data_vars)
    assert graph_tasks(ds) > 0


def test_write_package_refuses_an_unknown_estimator(tmp_path):
    from sklearn.linear_model import LinearRegression

    with pytest.raises(ModelPackageError, match="a LinearRegression cannot be packaged"):
        write_package(tmp_path / "m", LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]))
    assert not (tmp_path / "m" / "model.json").exists()


def test_a_recipe_of_another_workflow_is_refused_as_cube(demo_run, tmp_path, capsys):
    _refused(capsys, demo_run, tmp_path, demo_run / "model",
             "demo.yaml: is a synthetic_zoned_rh recipe; a CUBE recipe must be a static_cube",
             cube=Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml")


@pytest.mark.slow
def test_map_from_a_static_cube_recipe_equals_map_cube_on_that_cube(shared_data, tmp_path, capsys):
    """A real static_cube recipe as CUBE: built lazily, never written, mapped like a Zarr cube."""
    import yaml

    from globalflux.models.forest import UnifiedForestRegressor
    from globalflux.io.model_package import input_statistics
    from globalflux.workflows.map_cli import cube_from_recipe

    recipe = tmp_path / "cube.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "alps", "workflow": "static_cube",
        "cube": {"source": "static", "static_root": str(shared_data / "grids"),
                 "grid": {"crs": "EPSG:4326", "resolution": 0.5, "bbox": [0.0, 40.0, 20.0, 52.0]},
                 "static_layers": ["land_mask", "ndvi_max", "ndvi_min", "elevation"],
                 "chunking": "fixed", "chunk_y": 12, "chunk_x": 20}}))
    cube = cube_from_recipe(recipe).load()
    feats = ["ndvi_max", "ndvi_min", "elevation"]
    table = cube[feats].to_dataframe()[feats].dropna()
    y = 100 * table["ndvi_max"].to_numpy() - 0.01 * table["elevation"].to_numpy()
    model = UnifiedForestRegressor(n_estimators=10, eliminate=False).fit(table, y)
    units = {f: cube[f].attrs.get("units") for f in feats}
    write_package(tmp_path / "model", model, inputs=input_statistics(table, units),
                  target={"name": "toy", "units": "1"})
    out = tmp_path / "toy.zarr"
    code, err = _map([tmp_path / "model", recipe, "--out", out], capsys)
    assert code == 0, err
    want = globalflux.map_cube(globalflux.load_model(tmp_path / "model"), cube)
    got = xr.open_zarr(out)
    np.testing.assert_array_equal(got["toy"].values, want["toy"].values)
    assert np.isfinite(got["toy"].values).sum() > 100
    assert not list(tmp_path.glob("*.zarr"))[1:]  # the cube itself was never written
