"""The cosore_efflux_daily recipe end to end on real COSORE data, and its bad inputs (exit code 2)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from globalflux.cli import main

pytestmark = pytest.mark.realdata

RECIPE = "recipes/cosore_efflux_daily.yaml"
# two sites with Rs, Ts and SWC: a fast real-data run (reads only these datasets)
TWO = "lstm.sites=[d20190409_ANJILELI, d20200305_VARGAS]"


def _run(repo_root, shared_data, out, *sets, monkeypatch=None):
    args = ["run", str(repo_root / RECIPE), "--out", str(out),
            "--set", f"sites.cosore_path={shared_data / 'cosore'}",
            "--set", f"lstm.static_grids_path={shared_data / 'grids'}"]
    for s in sets:
        args += [s] if s.startswith("--") else ["--set", s]
    return main(args)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, shared_data, repo_root):
    out = tmp_path_factory.mktemp("cosore_small") / "run"
    rc = _run(repo_root, shared_data, out, TWO, "lstm.epochs=2")
    return rc, out


def test_small_real_run_writes_the_protocol_outputs(small_run):
    rc, out = small_run
    assert rc == 0
    table = pd.read_csv(out / "metrics" / "lstm_sites.csv")
    need = ["site_id", "n_train", "n_test", "nse_train", "nse_test", "kge_train", "kge_test",
            "r_train", "r_test"]
    need += [f"{b}_{m}_{p}" for b in ("q10", "lt", "clim") for m in ("nse", "kge", "r")
             for p in ("train", "test")]
    assert set(need) <= set(table.columns)
    assert sorted(table["site_id"]) == ["d20190409_ANJILELI", "d20200305_VARGAS"]
    assert set(table["split"]) == {"temporal"}
    assert {"gq10_nse_test", "gq10_kge_test", "lstm_spread_test", "missing_drivers"} <= set(table.columns)
    # 80% of each site's own observed days train
    frac = table["n_train"] / (table["n_train"] + table["n_test"])
    np.testing.assert_allclose(frac, 0.8, atol=0.01)
    assert set(table["class"]) <= {"good", "fair", "poor", "n/a"}
    report = (out / "report.md").read_text()
    assert "| median test NSE |" in report and "0.020" in report and "0.300" in report
    assert "Where the LSTM wins and loses" in report
    for f in ("timeseries_examples.png", "temperature_response.png", "metric_distributions.png",
              "training_loss.png"):
        assert (out / "figures" / f).stat().st_size > 1000
    meta = json.loads((out / "models" / "lstm" / "config.json").read_text())
    assert meta["epoch"] == 2 and meta["config"]["hidden_size"] == 128
    # the trained LSTM as a model package that loads back (verified) and predicts the same
    from globalflux import load_model

    pkg = json.loads((out / "model" / "model.json").read_text())
    assert pkg["kind"] == "lstm" and pkg["time_step"] == "daily" and pkg["synthetic"] is False
    assert {"Ts", "SWC"} <= {i["name"] for i in pkg["inputs"]}
    assert pkg["validation"]["temporal"]["sites"] == 2
    assert load_model(out / "model").package_.kind == "lstm"
    for p in out.rglob("*"):  # no pickle anywhere in the run folder
        if p.is_file():
            head = p.read_bytes()[:2]
            assert p.suffix not in (".joblib", ".pkl", ".pickle"), p
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), p


def test_checkpoint_from_another_configuration_exit_2(small_run, tmp_path, shared_data, repo_root,
                                                      capsys):
    _, out = small_run
    rc = _run(repo_root, shared_data, tmp_path / "again", TWO, "lstm.epochs=3",
              f"lstm.checkpoint={out / 'models' / 'lstm'}", "lstm.hidden_size=16")
    assert rc == 2
    err = capsys.readouterr().err
    assert "checkpoint was made with another configuration (hidden_size: checkpoint 128 vs now 16)" in err
    assert "train afresh" in err


def test_init_from_matching_checkpoint_continues(small_run, tmp_path, shared_data, repo_root):
    _, out = small_run
    rc = _run(repo_root, shared_data, tmp_path / "more", TWO, "lstm.epochs=3",
              f"lstm.checkpoint={out / 'models' / 'lstm'}")
    assert rc == 0
    meta = json.loads((tmp_path / "more" / "models" / "lstm" / "config.json").read_text())
    assert meta["epoch"] == 3 and len(meta["loss_history"]) == 3


def test_resume_reuses_the_trained_checkpoint(small_run, tmp_path, shared_data, repo_root):
    import shutil

    _, out = small_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    weights = (copy / "models" / "lstm" / "weights.pt").read_bytes()
    (copy / "report.md").unlink()
    (copy / "metrics" / "lstm_sites.csv").unlink()
    assert _run(repo_root, shared_data, copy, TWO, "lstm.epochs=2", "--resume") == 0
    # the finished checkpoint was reused, not retrained; the outputs are back and identical
    assert (copy / "models" / "lstm" / "weights.pt").read_bytes() == weights
    pd.testing.assert_frame_equal(pd.read_csv(copy / "metrics" / "lstm_sites.csv"),
                                  pd.read_csv(out / "metrics" / "lstm_sites.csv"))
    assert (copy / "report.md").is_file()


@pytest.mark.parametrize("site, message", [
    ("d20200825_MINIAT", "site d20200825_MINIAT: has 22 days of Rs, fewer than the sequence length 30"),
    ("d20200328_UEYAMA_FAIRBANKS", "site d20200328_UEYAMA_FAIRBANKS: all Rs values are NaN at this site"),
    ("d2099_NOPE", "lstm.sites: no COSORE dataset 'd2099_NOPE'"),
])
def test_bad_sites_exit_2_naming_the_cause(site, message, tmp_path, shared_data, repo_root, capsys):
    rc = _run(repo_root, shared_data, tmp_path / "bad", f"lstm.sites=[{site}]", "lstm.epochs=1")
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "bad" / "models").exists()  # nothing trained, nothing half-written


def test_recipe_mismatch_exit_2(tmp_path, shared_data, repo_root, capsys):
    rc = _run(repo_root, shared_data, tmp_path / "r", "sites.aggregation=8day")
    assert rc == 2
    assert "sites.aggregation: got '8day'" in capsys.readouterr().err
    rc = main(["validate", str(repo_root / RECIPE), "--set", "lstm.min_days=10"])
    assert rc == 2
    assert "min_days (10) is shorter than seq_len (30)" in capsys.readouterr().err


def test_missing_driver_dropped_only_when_asked(tmp_path, shared_data, repo_root, capsys):
    rc = _run(repo_root, shared_data, tmp_path / "bad", "lstm.sites=[d20190409_ZOU]",
              "lstm.epochs=1", "lstm.missing_drivers=drop")
    assert rc == 2
    assert "site d20190409_ZOU: driver 'Ts' missing (all NaN on days with Rs)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def holdout_run(tmp_path_factory, shared_data, repo_root):
    """ZOU has no Ts and no SWC (masked); SCOTT_WKG is never seen; 2 members; 2 location folds."""
    out = tmp_path_factory.mktemp("cosore_holdout") / "run"
    rc = _run(repo_root, shared_data, out,
              "lstm.sites=[d20190409_ANJILELI, d20200305_VARGAS, d20190409_ZOU, d20190617_SCOTT_WKG]",
              "lstm.holdout_sites=[d20190617_SCOTT_WKG]", "lstm.epochs=2", "lstm.ensemble=2",
              "lstm.validation=location_kfold", "lstm.folds=2", "lstm.batches_per_epoch=3")
    return rc, out


def test_holdout_masked_ensemble_and_folds(holdout_run):
    rc, out = holdout_run
    assert rc == 0
    t = pd.read_csv(out / "metrics" / "lstm_sites.csv")
    hold = t[t["split"] == "holdout"]
    assert hold["site_id"].tolist() == ["d20190617_SCOTT_WKG"]
    # scored over the whole record: every observed day is a test day, none trains
    pred = pd.read_csv(out / "predictions.csv")
    wkg = pred[pred["site_id"] == "d20190617_SCOTT_WKG"]
    assert int(hold["n_train"].iloc[0]) == 0
    assert int(hold["n_test"].iloc[0]) == int(wkg["observed"].notna().sum()) > 300
    assert set(wkg["part"]) == {"holdout"}
    assert np.isfinite(hold[["nse_test", "kge_test", "gq10_nse_test"]].to_numpy()).all()
    assert hold["q10_nse_test"].isna().all()  # a per-site Q10 needs the site's own data
    # the holdout site never reached training: its IGBP class (GRA) is no input column
    meta = json.loads((out / "models" / "lstm" / "config.json").read_text())
    assert "igbp_GRA" not in meta["config"]["statics"]
    assert meta["config"]["masked_drivers"] == ["Ts", "SWC"]
    # the masked site (no Ts, no SWC) trains and predicts
    zou = t[(t["site_id"] == "d20190409_ZOU") & (t["split"] == "temporal")].iloc[0]
    assert zou["missing_drivers"] == "Ts;SWC" and zou["n_train"] > 100
    assert np.isfinite(zou["nse_test"]) and np.isnan(zou["q10_nse_test"])
    # ensemble: 2 members, spread column, member 0 is the single seed
    assert (out / "models" / "lstm_member1" / "config.json").is_file()
    assert (pred["lstm_spread"].dropna() >= 0).all() and (pred["lstm_spread"] > 0).any()
    assert t.loc[t["split"] != "fold", "seed0_nse_test"].notna().all()
    # location folds: every training site once, scored over its whole record
    fold = t[t["split"] == "fold"]
    assert sorted(fold["site_id"]) == ["d20190409_ANJILELI", "d20190409_ZOU", "d20200305_VARGAS"]
    assert set(fold["fold"]) == {1, 2} and (fold["n_train"] == 0).all()
    report = (out / "report.md").read_text()
    for h in ("Sites never seen in training (split holdout)", "Location k-fold beside the temporal",
              "Seed ensemble beside the single-seed run", "Sites added by masking missing drivers",
              "This adds **1 site(s)**"):
        assert h in report


@pytest.mark.parametrize("sets, message", [
    (["lstm.holdout_sites=[d2099_NOPE]"], "lstm.holdout_sites: no COSORE dataset 'd2099_NOPE'"),
    (["lstm.holdout_sites=[d20200825_MINIAT]"],
     "lstm.holdout_sites: site d20200825_MINIAT: holdout site cannot be scored: 22 days of Rs"),
    (["lstm.ensemble=0"], "lstm.ensemble: got 0"),
    (["lstm.holdout_sites=[d20190409_ANJILELI, d20200305_VARGAS]"],
     "lstm.holdout_sites: every site in lstm.sites is a holdout site"),
])
def test_bad_holdout_and_ensemble_exit_2(sets, message, tmp_path, shared_data, repo_root, capsys):
    rc = _run(repo_root, shared_data, tmp_path / "bad", TWO, "lstm.epochs=1", *sets)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "models").exists()


@pytest.mark.slow
def test_full_recipe_runs_with_reduced_epochs(tmp_path, shared_data, repo_root):
    """The committed recipe over every COSORE site, 2 epochs (the full run uses 200)."""
    out = tmp_path / "full"
    assert _run(repo_root, shared_data, out, "lstm.epochs=2") == 0
    table = pd.read_csv(out / "metrics" / "lstm_sites.csv")
    assert len(table) >= 30
    sel = pd.read_csv(out / "metrics" / "sites_selection.csv")
    assert sel["used"].sum() == len(table)
    assert (sel.loc[~sel["used"], "reason"].str.len() > 0).all()
