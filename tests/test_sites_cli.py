"""``globalflux sites cosore|srdb``: outputs, printed summary, exit code 2 naming dataset and file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from globalflux.cli import main
from globalflux.io.tables import read_table

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def tree(tmp_path) -> Path:
    dst = tmp_path / "cosore"
    shutil.copytree(FIXTURES / "cosore", dst)
    return dst


def test_cosore_cli_writes_tables_and_prints_summary(tree, tmp_path, capsys):
    out = tmp_path / "out" / "cosore.parquet"
    rc = main(["sites", "cosore", str(tree), "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    assert rc == 0
    text = capsys.readouterr().out
    long = read_table(out)
    sites = read_table(tmp_path / "out" / "cosore.sites.parquet")
    summary = pd.read_csv(tmp_path / "out" / "cosore.summary.csv")
    qc = pd.read_csv(tmp_path / "out" / "cosore.qc.csv")
    assert list(long.columns[:8]) == ["site_id", "lat", "lon", "igbp", "time", "variable", "value", "units"]
    assert set(sites["site_id"]) == set(long["site_id"])
    rs_days = int((long["variable"] == "Rs").sum())
    rh_days = int((long["variable"] == "Rh").sum())
    assert f"Rs days: {rs_days}; Rh days: {rh_days}" in text
    assert "loaded: 4; sites with data: 4" in text
    assert "not loaded: no data file: 1" in text
    assert "manipulated_port" in text and "percentile_1_99" in text
    assert set(summary["dataset"]) == {p.name for p in (tree / "datasets").iterdir()}
    assert qc["n_removed"].sum() == summary["removed"].sum()


def test_cosore_cli_8day_rh(tree, tmp_path):
    out = tmp_path / "rh8.parquet"
    rc = main(["sites", "cosore", str(tree), "--out", str(out), "--variable", "Rh", "--aggregation", "8day",
               "--min-year", "2000", "--cache-dir", str(tmp_path / "c")])
    assert rc == 0
    long = read_table(out)
    assert "Rs" not in set(long["variable"]) and "Rh" in set(long["variable"])
    assert (long["time"].dt.day_of_year % 8 == 1).all()


def _latitude(tree: Path, name: str, value: str) -> Path:
    p = tree / "datasets" / name / "DESCRIPTION.txt"
    p.write_text("\n".join(f"CSR_LATITUDE: {value}" if ln.startswith("CSR_LATITUDE:") else ln
                           for ln in p.read_text(encoding="utf-8").splitlines()) + "\n", encoding="utf-8")
    return p


def _tz(tree: Path, name: str) -> Path:
    p = tree / "datasets" / name / "DESCRIPTION.txt"
    p.write_text("\n".join("CSR_TIMEZONE: Etc/Nowhere" if ln.startswith("CSR_TIMEZONE:") else ln
                           for ln in p.read_text(encoding="utf-8").splitlines()) + "\n", encoding="utf-8")
    return p


def _no_lat(tree: Path, name: str) -> Path:
    p = tree / "datasets" / name / "DESCRIPTION.txt"
    p.write_text("\n".join(ln for ln in p.read_text(encoding="utf-8").splitlines()
                           if not ln.startswith("CSR_LATITUDE:")) + "\n", encoding="utf-8")
    return p


def _corrupt(tree: Path, name: str) -> Path:
    p = tree / "datasets" / name / "data" / "data.RDS"
    p.write_bytes(p.read_bytes()[:200])
    return p


def _port(tree: Path, name: str) -> Path:
    p = tree / "datasets" / name / "PORTS.txt"
    p.write_text(p.read_text(encoding="utf-8").rstrip("\n") + "\n8,\t\tRh,\t\tTrenched,\t\t317.8\n", encoding="utf-8")
    return p


CASES = {
    "truncated_rds": (_corrupt, "d20200213_SEIBT", "cannot read data.RDS: corrupt or truncated R file"),
    "no_latitude": (_no_lat, "d20200221_MATHES", "DESCRIPTION.txt has no CSR_LATITUDE"),
    "latitude_123": (lambda t, n: _latitude(t, n, "123"), "d20200221_MATHES", "CSR_LATITUDE 123 is outside -90..90"),
    "unknown_tz": (_tz, "d20200825_MINIAT", "CSR_TIMEZONE 'Etc/Nowhere' is not a known time zone"),
    "port_without_data": (_port, "d20190617_SCOTT_WKG", "PORTS.txt names port 8 (Rh) but data.RDS has no records for port 8"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cosore_cli_bad_input_exits_2_and_others_load(tree, tmp_path, capsys, case):
    make, name, wording = CASES[case]
    bad = make(tree, name)
    out = tmp_path / "o.parquet"
    rc = main(["sites", "cosore", str(tree), "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    assert rc == 2
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("globalflux: error:"))
    assert str(bad) in line and name in line and wording in line
    assert "1 dataset(s) rejected for bad input; the others were written" in err
    loaded = set(read_table(out)["site_id"])
    assert name not in loaded and len(loaded) == 3


def test_srdb_cli(tmp_path, capsys):
    out = tmp_path / "srdb.parquet"
    assert main(["sites", "srdb", str(FIXTURES / "srdb"), "--out", str(out), "--min-midyear", "2000.5"]) == 0
    text = capsys.readouterr().out
    assert "| before_min_midyear | 4 |" in text and "kept 12 records with Rh_annual" in text
    assert len(read_table(out)) == 12
    assert main(["sites", "srdb", str(FIXTURES / "srdb"), "--out", str(out), "--variable", "Rs"]) == 2
    assert main(["sites", "srdb", str(FIXTURES / "srdb"), "--out", str(out), "--variable", "Rs",
                 "--overwrite"]) == 0


def test_srdb_cli_renamed_column_exits_2(tmp_path, capsys):
    d = pd.read_csv(FIXTURES / "srdb" / "srdb-data.csv", encoding="latin-1")
    d.rename(columns={"Rh_annual": "RH_annual_gC"}).to_csv(tmp_path / "srdb-data.csv", index=False, encoding="latin-1")
    out = tmp_path / "out.parquet"
    assert main(["sites", "srdb", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"globalflux: error: {tmp_path / 'srdb-data.csv'}: column 'Rh_annual' is missing" in err
    assert not out.exists()


def test_missing_tree_exits_2(tmp_path, capsys):
    assert main(["sites", "cosore", str(tmp_path / "none"), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "COSORE folder not found" in capsys.readouterr().err
