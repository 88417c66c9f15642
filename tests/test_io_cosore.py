"""COSORE reader: layout parsing, statuses, cache, bad inputs, an unseen dataset, the whole folder."""

from __future__ import annotations

import csv
import io
import shutil
import warnings
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from globalflux.errors import InputFileError
from globalflux.io.cosore import (
    normalise_igbp,
    read_cosore,
    read_description,
    read_ports,
    resolve_timezone,
)
from globalflux.sites import cosore_tables

FIXTURE = Path(__file__).parent / "fixtures" / "cosore"


@pytest.fixture
def tree(tmp_path) -> Path:
    """A writable copy of the fixture tree."""
    dst = tmp_path / "cosore"
    shutil.copytree(FIXTURE, dst)
    return dst


def test_fixture_statuses_and_sites():
    raw = read_cosore(FIXTURE, cache_dir=False)
    st = raw.status.set_index("dataset")["status"].to_dict()
    assert st == {
        "d20190526_MINIONS_BNZ": "no data file",
        "d20190617_SCOTT_WKG": "loaded",
        "d20200213_SEIBT": "loaded",
        "d20200221_MATHES": "loaded",
        "d20200825_MINIAT": "loaded",
    }
    assert raw.errors.empty
    assert set(raw.records) == {"d20190617_SCOTT_WKG", "d20200213_SEIBT", "d20200221_MATHES", "d20200825_MINIAT"}
    wkg = raw.sites.loc["d20190617_SCOTT_WKG"]
    desc = read_description(FIXTURE / "datasets" / "d20190617_SCOTT_WKG" / "DESCRIPTION.txt")
    assert wkg["lat"] == float(desc["CSR_LATITUDE"]) and wkg["lon"] == float(desc["CSR_LONGITUDE"])
    assert wkg["timezone"] == desc["CSR_TIMEZONE"]
    assert wkg["primary_pub"] == "10.3390/soilsystems3010006"
    assert raw.status.set_index("dataset").loc["d20190617_SCOTT_WKG", "variables"] == "Rs,Rh"
    rec = raw.records["d20190617_SCOTT_WKG"]
    assert {"time", "msmt_var", "treatment", "CSR_FLUX_CO2"} <= set(rec.columns)
    assert set(rec.loc[rec["CSR_PORT"].isin([5, 6, 7]), "msmt_var"]) == {"Rh"}
    # time is the middle of [begin, end] in UTC
    mid = (rec["CSR_TIMESTAMP_BEGIN"] + rec["CSR_TIMESTAMP_END"]) / 2
    assert np.allclose(rec["time"].astype("int64") / 1e9, mid, atol=1e-3)


def test_ports_parser_handles_cosore_quirks(tmp_path):
    p = tmp_path / "PORTS.txt"
    p.write_text(
        "# comment\n#\nCSR_PORT,\tCSR_MSMT_VAR,\tCSR_TREATMENT,\tCSR_AREA,\tCSR_SPECIES\n"
        '1,\t\trs,\t\tNone,\t\t314,\t\t"Acer rubrum, Quercus spp."\n'
        '2,\t\tRh,\t\t"Root exclusion",\t314\n'          # short row
        "2,\t\tRs,\t\tNone,\t\t314,\t\tdup\n"            # duplicate port keeps the first entry
        '0601,\tReco,\t"Irrigated,\t in-growth core",\t1,\tx,\textra\n',
        encoding="utf-8",
    )
    ports = read_ports(p)
    assert ports["port"].tolist() == [1, 2, 601]
    assert ports["msmt_var"].tolist() == ["Rs", "Rh", "Reco"]
    assert ports["treatment"].tolist() == ["None", "Root exclusion", "Irrigated, in-growth core"]


def test_ports_unknown_variable_names_the_file(tmp_path):
    p = tmp_path / "PORTS.txt"
    p.write_text("CSR_PORT, CSR_MSMT_VAR\n1, CH4\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"PORTS.txt.*CSR_MSMT_VAR 'CH4' for port 1 is not one of Rs, Rh, NEE, Reco"):
        read_ports(p)


def test_timezones():
    jan = pd.Timestamp("2020-01-01 12:00")
    assert resolve_timezone("Etc/GMT+5").utcoffset(jan.to_pydatetime()) == timedelta(hours=-5)
    assert resolve_timezone("Asia/Tokyo") == ZoneInfo("Asia/Tokyo")
    assert resolve_timezone("UTC+8").utcoffset(None) == timedelta(hours=8)
    assert resolve_timezone("GMT-05:30").utcoffset(None) == -timedelta(hours=5, minutes=30)
    assert resolve_timezone("UTC").utcoffset(None) == timedelta(0)
    for bad in ("Mars/Olympus_Mons", "", "UTC+25"):
        with pytest.raises(ValueError):
            resolve_timezone(bad)


def test_igbp_names():
    assert normalise_igbp("Deciduous broadleaf forest") == "DBF"
    assert normalise_igbp("Broadleaf evergreen forest") == "EBF"
    assert normalise_igbp("Evergreen needleleaf plantation") == "ENF"
    assert normalise_igbp("Savannas") == "SAV" and normalise_igbp("Woody savanna") == "WSA"
    assert normalise_igbp("grassland") == "GRA" and normalise_igbp("") is None


def test_cache_is_keyed_by_checksum(tree, tmp_path):
    cache = tmp_path / "cache"
    a = read_cosore(tree, cache_dir=cache)
    entries = sorted((cache / "cosore-rds-v1").glob("*.parquet"))
    assert len(entries) == 4
    b = read_cosore(tree, cache_dir=cache)  # read back from the cache
    for k in a.records:
        pd.testing.assert_frame_equal(a.records[k], b.records[k])
    # a changed file gets a new key: the stale entry is never used
    rds = tree / "datasets" / "d20200221_MATHES" / "data" / "data.RDS"
    shutil.copyfile(tree / "datasets" / "d20200213_SEIBT" / "data" / "data.RDS", rds)
    c = read_cosore(tree, cache_dir=cache, datasets=["d20200221_MATHES"])
    assert len(c.records["d20200221_MATHES"]) == len(a.records["d20200213_SEIBT"])


def test_datasets_selection_and_missing_tree(tmp_path):
    raw = read_cosore(FIXTURE, cache_dir=False, datasets=["d20200221_MATHES"])
    assert list(raw.records) == ["d20200221_MATHES"]
    with pytest.raises(InputFileError, match="no dataset 'd_NOPE'"):
        read_cosore(FIXTURE, cache_dir=False, datasets=["d_NOPE"])
    with pytest.raises(InputFileError, match="COSORE folder not found"):
        read_cosore(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no COSORE datasets found"):
        read_cosore(tmp_path / "empty")


# --------------------------------------------------------------------------- bad inputs


def _edit_description(tree: Path, name: str, key: str, value: str | None) -> Path:
    p = tree / "datasets" / name / "DESCRIPTION.txt"
    lines = p.read_text(encoding="utf-8").splitlines()
    out = []
    for ln in lines:
        if ln.startswith(key + ":"):
            if value is None:
                continue
            ln = f"{key}: {value}"
        out.append(ln)
    p.write_text("\n".join(out) + "\n", encoding="utf-8")
    return p


def _corrupt(tree: Path, name: str) -> Path:
    p = tree / "datasets" / name / "data" / "data.RDS"
    p.write_bytes(b"this is not an R file" * 10)
    return p


def _truncate(tree: Path, name: str) -> Path:
    p = tree / "datasets" / name / "data" / "data.RDS"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _bad_port(tree: Path, name: str) -> Path:
    p = tree / "datasets" / name / "PORTS.txt"
    p.write_text(p.read_text(encoding="utf-8").rstrip("\n") + "\n9,\t\tRs,\t\tNone,\t\t317.8\n", encoding="utf-8")
    return p


BAD_INPUTS = {
    "corrupt_rds": (lambda t: _corrupt(t, "d20200213_SEIBT"), "data.RDS", r"corrupt or truncated"),
    "truncated_rds": (lambda t: _truncate(t, "d20190617_SCOTT_WKG"), "data.RDS", r"corrupt or truncated"),
    "no_latitude": (lambda t: _edit_description(t, "d20200213_SEIBT", "CSR_LATITUDE", None),
                    "DESCRIPTION.txt", r"DESCRIPTION.txt has no CSR_LATITUDE"),
    "latitude_123": (lambda t: _edit_description(t, "d20200213_SEIBT", "CSR_LATITUDE", "123"),
                     "DESCRIPTION.txt", r"CSR_LATITUDE 123 is outside -90..90"),
    "unknown_tz": (lambda t: _edit_description(t, "d20200221_MATHES", "CSR_TIMEZONE", "Mars/Olympus_Mons"),
                   "DESCRIPTION.txt", r"CSR_TIMEZONE 'Mars/Olympus_Mons' is not a known time zone"),
    "port_without_data": (lambda t: _bad_port(t, "d20200221_MATHES"), "PORTS.txt",
                          r"PORTS.txt names port 9 \(Rs\) but data.RDS has no records for port 9"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_dataset_is_reported_and_others_load(tree, case):
    make, fname, pattern = BAD_INPUTS[case]
    bad_file = make(tree)
    dataset = bad_file.parent.name if fname != "data.RDS" else bad_file.parent.parent.name
    raw = read_cosore(tree, cache_dir=False)
    err = raw.errors
    assert err["dataset"].tolist() == [dataset]
    row = err.iloc[0]
    assert row["file"] == str(bad_file) and fname in row["file"]
    assert row["message"].startswith(dataset + ": ")
    assert pd.Series([row["message"]]).str.contains(pattern).all(), row["message"]
    loaded = set(raw.status.loc[raw.status["status"] == "loaded", "dataset"])
    assert loaded == {"d20190617_SCOTT_WKG", "d20200213_SEIBT", "d20200221_MATHES", "d20200825_MINIAT"} - {dataset}
    with pytest.raises(InputFileError, match=dataset):
        raw.raise_for_errors()


def test_nee_and_reco_ports_without_data_are_notes_not_errors(tree):
    p = tree / "datasets" / "d20200221_MATHES" / "PORTS.txt"
    p.write_text(p.read_text(encoding="utf-8").rstrip("\n") + "\n12,\tReco,\tNone,\t78.5\n", encoding="utf-8")
    raw = read_cosore(tree, cache_dir=False, datasets=["d20200221_MATHES"])
    row = raw.status.iloc[0]
    assert row["status"] == "loaded" and "port 12 (Reco) has no data" in row["notes"]


def test_nee_only_and_no_flux_and_embargo(tree):
    d = tree / "datasets" / "d20200221_MATHES"
    (d / "PORTS.txt").write_text("CSR_PORT, CSR_MSMT_VAR, CSR_TREATMENT\n0, NEE, None\n", encoding="utf-8")
    e = tree / "datasets" / "d20200213_SEIBT"
    with open(e / "DESCRIPTION.txt", "a", encoding="utf-8") as fh:
        fh.write("CSR_EMBARGO: 2030-01-01\n")
    raw = read_cosore(tree, cache_dir=False)
    st = raw.status.set_index("dataset")["status"]
    assert st["d20200221_MATHES"] == "NEE only"
    assert st["d20200213_SEIBT"] == "embargoed"
    assert "d20200221_MATHES" not in raw.records and "d20200213_SEIBT" not in raw.records


# --------------------------------------------------------------------------- a dataset never seen


def test_unseen_dataset_with_same_layout_loads(tree):
    """A new dataset (new name, fixed-offset time zone, new depths, extra columns, port 0)."""
    import rdata

    name = "d20991231_NEWSITE"
    d = tree / "datasets" / name
    (d / "data").mkdir(parents=True)
    (d / "DESCRIPTION.txt").write_text(
        "# DESCRIPTION.txt\n# comment: CSR_LATITUDE: 0\nCSR_SITE_NAME: Somewhere new\n"
        "CSR_LONGITUDE: 10.5\nCSR_LATITUDE: -45.25\nCSR_ELEVATION:\nCSR_TIMEZONE: UTC+10\n"
        "CSR_IGBP: Mixed forests\nCSR_PRIMARY_PUB: 10.0000/new\nCSR_SOMETHING_NEW: yes\n", encoding="utf-8")
    (d / "PORTS.txt").write_text("CSR_PORT,\tCSR_MSMT_VAR,\tCSR_TREATMENT,\tCSR_NEWFIELD\n0,\tRs,\tNone,\t1\n",
                                 encoding="utf-8")
    t0 = pd.Timestamp("2019-03-01 00:00", tz="UTC").timestamp()
    n = 48
    begin = t0 + np.arange(n) * 1800.0
    df = pd.DataFrame({
        "CSR_PORT": pd.array(np.tile([1, 2], n // 2), dtype="Int32"),
        "CSR_TIMESTAMP_BEGIN": begin,
        "CSR_TIMESTAMP_END": begin + 120.0,
        "CSR_FLUX_CO2": np.full(n, 2.0),
        "CSR_T2.5": np.full(n, 11.0),
        "CSR_T10": np.full(n, 9.0),
        "CSR_SM7": np.full(n, 30.0),          # percent
        "CSR_NEWTHING": np.arange(n, dtype=float),
    })
    rdata.write_rds(d / "data" / "data.RDS", df, compression="gzip")
    raw = read_cosore(tree, cache_dir=False)
    assert raw.status.set_index("dataset").loc[name, "status"] == "loaded"
    tabs = cosore_tables(raw, percentile_filter=False)
    long = tabs.long[tabs.long["site_id"] == name]
    rs = long[long["variable"] == "Rs"]
    # UTC+10: 2019-03-01 00:00..23:30 UTC covers local 1 March 10:00 .. 2 March 09:30
    assert rs["time"].tolist() == [pd.Timestamp("2019-03-01"), pd.Timestamp("2019-03-02")]
    assert rs["n"].tolist() == [28, 20] and (rs["n_ports"] == 2).all()
    assert np.allclose(rs["value"], 2.0 * 1e-6 * 12.011 * 86400)
    ts = long[long["variable"] == "Ts"]
    assert np.allclose(ts["value"], 11.0)                      # shallowest depth (2.5 cm)
    assert np.allclose(long.loc[long["variable"] == "SWC", "value"], 0.30)  # percent -> m3/m3
    assert tabs.sites.loc[name, "igbp"] == "MF"


# --------------------------------------------------------------------------- the whole folder


def _independent_counts(root: Path) -> pd.DataFrame:
    """Sites, Rs days and Rh days of the COSORE folder, computed without globalflux.

    Plain reading: DESCRIPTION time zone, PORTS.txt variable and treatment per port (port 0 =
    all), data.RDS with rdata; a record counts when its flux is finite and within 0..50 µmol
    m-2 s-1 and its port is unmanipulated (Rs: treatment None; Rh: None, trenched, girdled, root
    exclusion); a day is a local calendar day (midpoint of begin/end).
    """
    import rdata

    rows = []
    for d in sorted((root / "datasets").iterdir()):
        rds = d / "data" / "data.RDS"
        if not rds.is_file():
            continue
        tz = None
        for ln in (d / "DESCRIPTION.txt").read_text(encoding="utf-8").splitlines():
            if ln.startswith("CSR_TIMEZONE:"):
                tz = ln.split(":", 1)[1].strip()
        text = [ln.replace("\t", " ") for ln in (d / "PORTS.txt").read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.startswith("#")]
        table = list(csv.reader(io.StringIO("\n".join(text)), skipinitialspace=True))
        hdr = [h.strip() for h in table[0]]
        ports = {}
        for r in table[1:]:
            r = [c.strip() for c in r]
            port = int(r[hdr.index("CSR_PORT")])
            trt = " ".join(r[hdr.index("CSR_TREATMENT")].split()) if len(r) > hdr.index("CSR_TREATMENT") else "None"
            ports.setdefault(port, (r[hdr.index("CSR_MSMT_VAR")], trt))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = rdata.read_rds(rds)
        if "CSR_FLUX_CO2" not in df:
            continue
        flux = df["CSR_FLUX_CO2"].astype(float)
        mid = (df["CSR_TIMESTAMP_BEGIN"].astype(float) + df["CSR_TIMESTAMP_END"].astype(float)) / 2
        day = pd.to_datetime(mid, unit="s", utc=True).dt.tz_convert(tz).dt.date
        port = df["CSR_PORT"].astype(int)
        var = port.map(lambda p: ports.get(p, ports.get(0, (None, None)))[0])
        trt = port.map(lambda p: ports.get(p, ports.get(0, (None, None)))[1]).str.lower()
        good = flux.notna() & (flux >= 0) & (flux <= 50)
        base_rs = (var == "Rs") & trt.isin(["none", ""])
        base_rh = (var == "Rh") & trt.isin(["none", "", "trenched", "girdled", "root exclusion", "trench"])
        rs_days = day[good & base_rs].nunique()
        rh_days = day[good & base_rh].nunique()
        if rs_days or rh_days:
            rows.append((d.name, rs_days, rh_days))
    return pd.DataFrame(rows, columns=["dataset", "Rs_days", "Rh_days"]).set_index("dataset")


@pytest.fixture(scope="module")
def full_raw(shared_data, tmp_path_factory):
    return read_cosore(shared_data / "cosore", cache_dir=tmp_path_factory.mktemp("rds-cache"))


@pytest.mark.slow
@pytest.mark.realdata
def test_whole_cosore_folder_loads_and_counts_match(shared_data, full_raw):
    raw = full_raw
    assert raw.errors.empty, raw.errors.to_string()
    n_folders = sum(1 for p in (shared_data / "cosore" / "datasets").iterdir() if p.is_dir())
    assert len(raw.status) == n_folders
    st = raw.status.set_index("dataset")["status"]
    # the known problems of PROVENANCE.md are reported, not crashes
    assert st["d20200328_UEYAMA_FAIRBANKS"] == "NEE only" and st["d20200328_UEYAMA_HOKUROKU"] == "NEE only"
    assert st["d20200407_WANG"] == "no CO2 flux"
    for name in ("LIU", "20190830_LIANG", "MIGLIAVACCA", "JASSAL", "BLACK", "ARAIN_TP39"):
        assert (st[st.index.str.contains(name)] == "no data file").all()
    tabs = cosore_tables(raw, percentile_filter=False)
    mine = tabs.summary.set_index("dataset")
    mine = mine[mine["days"] > 0][["Rs_days", "Rh_days"]]
    theirs = _independent_counts(shared_data / "cosore")
    assert len(mine) == len(theirs)                       # sites
    pd.testing.assert_frame_equal(mine.sort_index(), theirs.sort_index(), check_dtype=False)
    assert int(mine["Rh_days"].gt(0).sum()) == 9           # Rh at 9 datasets (PROVENANCE.md)
