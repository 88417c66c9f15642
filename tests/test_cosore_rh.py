"""Workflow cosore_rh: the 8-day training table, errors, and the real run (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from globalflux.cli import main
from globalflux.errors import DataError
from globalflux.workflows.cosore_rh import location_ids, rh_datasets, training_table

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "cosore_rh.yaml"


def _long():
    t = pd.to_datetime(["2015-01-01", "2015-07-04", "2016-01-01", "2015-01-01"])
    rows = []
    for site, times in (("a", t[:3]), ("b", t[3:])):
        for i, tt in enumerate(times):
            rows.append((site, 40.0, -80.0, "DBF", tt, "Rh", 1.0 + i))
            rows.append((site, 40.0, -80.0, "DBF", tt, "Ts", 10.0 * (i + 1)))
    rows.append(("a", 40.0, -80.0, "DBF", pd.Timestamp("2015-09-06"), "Ts", 99.0))  # no Rh
    return pd.DataFrame(rows, columns=["site_id", "lat", "lon", "igbp", "time", "variable", "value"])


def test_training_table_wide_seasonality_and_annual_means():
    tab = training_table(_long())
    assert len(tab) == 4 and tab["Rh"].notna().all()
    assert list(tab.columns[:6]) == ["site_id", "lat", "lon", "igbp", "time", "Rh"]
    a = tab[tab["site_id"] == "a"].set_index("time")
    # site-year mean of Ts over the 8-day rows with Rh
    assert a.loc["2015-01-01", "Ts_annual_mean"] == pytest.approx(15.0)
    assert a.loc["2016-01-01", "Ts_annual_mean"] == pytest.approx(30.0)
    assert a.loc["2015-07-04", "sin_doy"] == pytest.approx(np.sin(2 * np.pi * 185 / 365.25))
    assert tab["SWC"].isna().all() and tab["Tair"].isna().all()  # absent drivers are NaN
    with pytest.raises(DataError, match="long table lacks \\['value'\\]"):
        training_table(_long().drop(columns="value"))


def test_location_ids_merge_datasets_at_the_same_place():
    t = pd.DataFrame({"lat": [39.32321, 39.3232, 45.0], "lon": [-86.4131, -86.41311, 10.0]})
    ids = location_ids(t)
    assert ids[0] == ids[1] != ids[2]


def test_bad_source_exits_2(tmp_path, capsys):
    code = main(["run", str(RECIPE), "--out", str(tmp_path / "r"), "--set", "sites.source=srdb"])
    assert code == 2
    assert "sites.source: sites.source is 'srdb'. The cosore_rh workflow reads COSORE" in capsys.readouterr().err


def test_missing_cosore_folder_exits_2(tmp_path, capsys):
    code = main(["run", str(RECIPE), "--out", str(tmp_path / "r"), "--set",
                 f"sites.cosore_path={tmp_path / 'nope'}"])
    assert code == 2
    assert "COSORE folder not found" in capsys.readouterr().err


@pytest.mark.realdata
def test_rh_datasets_on_real_cosore(shared_data):
    names = rh_datasets(shared_data / "cosore")
    assert "d20190424_ZHANG_maple" in names and "d20200331_PEICHL" in names
    assert len(names) >= 9


@pytest.mark.slow
@pytest.mark.realdata
def test_real_run_reduced(shared_data, tmp_path):
    out = tmp_path / "run"
    code = main(["run", str(RECIPE), "--out", str(out),
                 "--set", f"sites.cosore_path={shared_data / 'cosore'}",
                 "--set", f"cube.static_root={shared_data / 'grids'}",
                 "--set", "forest.n_estimators=10", "--set", "forest.selection_n_estimators=5",
                 "--set", "forest.inner_folds=3"])
    assert code == 0
    schemes = pd.read_csv(out / "metrics" / "validation_schemes.csv")
    assert set(schemes["scheme"]) == {"record_kfold", "loso", "lolo"}
    assert set(schemes["model"]) == {"zoned", "unified", "zone_choice", "zone_feature"}
    assert list(schemes.columns) == ["scheme", "model", "predictors", "n", "n_groups", "r2",
                                     "rmse", "bias"]
    skill = pd.read_csv(out / "metrics" / "skill.csv")
    overall = skill[skill["by"] == "all"].set_index("model")
    assert set(overall.index) == {"zoned", "unified"}
    assert overall.loc["zoned", "n_sites"] >= 7 and np.isfinite(overall["rmse"]).all()
    report = (out / "report.md").read_text()
    assert "Validation: three schemes (headline: lolo)" in report
    assert "Few locations" in report and "| model | n | n_sites | r2 | rmse | bias |" in report
    pred = pd.read_csv(out / "metrics" / "pred_zoned.csv")
    # folds hold out whole locations: the two ZHANG plots share coordinates and a fold
    assert (pred.groupby("dataset")["fold"].nunique() == 1).all()
    zhang = pred[pred["dataset"].str.contains("ZHANG")]
    assert zhang["fold"].nunique() == 1 and zhang["dataset"].nunique() == 2
    from globalflux.io.model_package import read_package

    pkg = read_package(out / "model")  # the final zoned forest, verified, no pickle
    assert pkg.kind == "zoned_forest" and pkg.applicability is not None
    assert not [p for p in out.rglob("*") if p.suffix in (".joblib", ".pkl", ".pickle")]
