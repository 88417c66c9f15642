"""QC, unit conversion, local days, MODIS 8-day periods, canonical tables and the (site, time) Dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from globalflux.errors import DataError
from globalflux.io.cosore import read_cosore
from globalflux.sites import (
    LONG_COLUMNS,
    UMOL_CO2_M2_S_TO_G_C_M2_D,
    QCRules,
    annual_stats,
    cosore_tables,
    is_baseline_treatment,
    percentile_filter,
    quality_control,
    soil_moisture_unit,
    to_8day,
    to_daily,
    to_dataset,
)

FIXTURE = Path(__file__).parent / "fixtures" / "cosore"


def _records(n, *, start="2020-01-01 00:15", freq="30min", port=1, var="Rs", treatment="None", **cols):
    t = pd.date_range(start, periods=n, freq=freq)
    df = pd.DataFrame({"CSR_PORT": pd.array(np.full(n, port), dtype="Int32"),
                       "time": t.as_unit("ns"),
                       "msmt_var": pd.array([var] * n, dtype="string"),
                       "treatment": pd.array([treatment] * n, dtype="string"),
                       "CSR_FLUX_CO2": np.full(n, 1.0)})
    for k, v in cols.items():
        df[k] = v
    return df


def test_flux_unit_factor():
    # 1 umol CO2 m-2 s-1 = 1e-6 mol x 12.011 g C/mol x 86400 s/d
    assert UMOL_CO2_M2_S_TO_G_C_M2_D == pytest.approx(1.0377504)
    res = quality_control(_records(4), site_id="s", timezone="UTC")
    assert np.allclose(res.records["value"], 1.0377504)


def test_soil_moisture_unit_detection():
    assert soil_moisture_unit([0.1, 0.25, 0.4]) == "m3/m3"
    assert soil_moisture_unit([12.0, 25.0, 40.0]) == "percent"
    assert soil_moisture_unit([1.12, 1.36, 1.6, 2.05]) == "unknown"       # ARAIN_TP74
    assert soil_moisture_unit([0.3] * 50 + [1.45e12] * 10) == "m3/m3"      # PANG-like outliers
    assert soil_moisture_unit([np.nan]) == "unknown"


def test_treatments():
    assert is_baseline_treatment("None", "Rs") and is_baseline_treatment("", "Rs")
    assert not is_baseline_treatment("Trenched", "Rs")
    assert is_baseline_treatment("Trenched", "Rh") and is_baseline_treatment("Root exclusion", "Rh")
    assert is_baseline_treatment("Girdled", "Rh")
    for t in ("Trench and warm", "Irrigated", "Symmetrically warmed", "Drought"):
        assert not is_baseline_treatment(t, "Rh") and not is_baseline_treatment(t, "Rs")


def test_quality_control_counts_each_reason():
    n = 10
    a = _records(n, port=1, CSR_T5=np.r_[np.full(8, 20.0), 104.0, np.nan],
                 CSR_T0=np.full(n, np.nan),
                 CSR_SM5=np.r_[np.full(7, 25.0), 1.45e12, -3.0, 150.0],
                 CSR_TAIR=np.r_[np.full(9, 15.0), 80.0])
    a.loc[0, "CSR_FLUX_CO2"] = np.nan
    a.loc[1, "CSR_FLUX_CO2"] = -2.0
    a.loc[2, "CSR_FLUX_CO2"] = 60.0
    b = _records(5, port=2, treatment="Warmed", CSR_T5=np.full(5, 30.0), CSR_T0=np.full(5, np.nan),
                 CSR_SM5=np.full(5, 30.0), CSR_TAIR=np.full(5, 15.0))
    res = quality_control(pd.concat([a, b], ignore_index=True), site_id="s", timezone="UTC")
    assert res.removed == {
        ("Rs", "manipulated_port"): 5,
        ("Rs", "flux_missing"): 1,
        ("Rs", "flux_out_of_bounds"): 2,
        ("Ts", "ts_out_of_range"): 1,
        ("Tair", "tair_out_of_range"): 1,
        ("SWC", "swc_absurd"): 3,        # 1.45e12, -3 and 150 are impossible in any unit
    }
    r = res.records
    assert (r.loc[r["variable"] == "Rs", "value"].size == 7)
    assert np.allclose(r.loc[r["variable"] == "SWC", "value"], 0.25)   # percent -> m3/m3
    assert res.info["swc_unit"] == "percent" and res.info["ts_column"] == "CSR_T5"
    assert (r.loc[r["variable"] == "Ts", "value"] == 20.0).all()        # warmed port's Ts not used


def test_unknown_soil_moisture_unit_drops_column():
    rec = _records(6, CSR_SM5=np.array([1.1, 1.3, 1.4, 1.5, 1.6, 2.0]))
    res = quality_control(rec, site_id="s", timezone="UTC")
    assert res.removed[("SWC", "swc_unknown_unit")] == 6
    assert not (res.records["variable"] == "SWC").any()


def test_min_year_and_local_days():
    # 04:30 and 05:30 UTC on 1 Jan 2000 are 23:30 on 31 Dec 1999 and 00:30 on 1 Jan in Etc/GMT+5
    # (UTC-5), and both afternoon of 1 Jan 2000 in Tokyo
    rec = _records(2, start="2000-01-01 04:30", freq="1h")
    tokyo = quality_control(rec, site_id="s", timezone="Asia/Tokyo", min_year=2000)
    assert len(tokyo.records) == 2 and not tokyo.removed
    west = quality_control(rec, site_id="s", timezone="Etc/GMT+5", min_year=2000)
    assert len(west.records) == 1 and west.removed == {("Rs", "before_min_year"): 1}
    d = to_daily(quality_control(rec, site_id="s", timezone="Asia/Tokyo").records)
    assert d["time"].tolist() == [pd.Timestamp("2000-01-01")] and d["n"].tolist() == [2]


def test_daily_mean_is_mean_of_port_means():
    a = _records(4, port=1)                         # 4 records of 1.0
    b = _records(1, port=2)                         # 1 record of 3.0
    b["CSR_FLUX_CO2"] = 3.0
    res = quality_control(pd.concat([a, b], ignore_index=True), site_id="s", timezone="UTC")
    d = to_daily(res.records)
    assert d["value"].iloc[0] == pytest.approx(2.0 * UMOL_CO2_M2_S_TO_G_C_M2_D)
    assert d["n"].iloc[0] == 5 and d["n_ports"].iloc[0] == 2


def test_to_8day_periods_and_counts():
    days = pd.date_range("2020-12-20", "2021-01-10", freq="D")         # 2020 is a leap year
    daily = pd.DataFrame({"site_id": "s", "time": days, "variable": "Rs", "value": np.arange(len(days), dtype=float),
                          "n": 10, "lat": 1.0, "lon": 2.0, "igbp": "DBF", "units": "g C m-2 d-1"})
    e = to_8day(daily)
    assert list(e.columns[:8]) == LONG_COLUMNS
    assert e["time"].tolist() == [pd.Timestamp("2020-12-18"), pd.Timestamp("2020-12-26"),
                                  pd.Timestamp("2021-01-01"), pd.Timestamp("2021-01-09")]
    assert e["period_days"].tolist() == [8, 6, 8, 8]        # doy 361..366 of a leap year
    assert e["n"].tolist() == [6, 6, 8, 2]                 # days behind each period
    assert e["n_records"].tolist() == [60, 60, 80, 20]
    assert e["value"].iloc[1] == pytest.approx(np.mean(np.arange(6, 12)))


def test_percentile_filter_per_igbp_class():
    vals = np.arange(1, 101, dtype=float)
    long = pd.DataFrame({"site_id": ["a"] * 100 + ["b"] * 100, "variable": "Rs",
                         "value": np.r_[vals, vals * 10]})
    kept, counts = percentile_filter(long, {"a": "DBF", "b": "ENF"}, (1, 99))
    # per class: the 1st/99th percentiles of 1..100 are 1.99 and 99.01 -> 1 and 100 go
    assert len(kept) == 196
    assert counts.set_index("site_id")["n_removed"].to_dict() == {"a": 2, "b": 2}
    kept2, _ = percentile_filter(long, {"a": "DBF", "b": "DBF"}, (1, 99))
    assert len(kept2) == 196 and kept2["value"].min() > 1 and kept2["value"].max() < 1000


def test_cosore_tables_on_fixture():
    raw = read_cosore(FIXTURE, cache_dir=False)
    t = cosore_tables(raw)
    assert list(t.long.columns[:8]) == LONG_COLUMNS and "n" in t.long.columns
    assert set(t.long["variable"]) == {"Rs", "Rh", "Ts", "SWC", "Tair"}
    units = t.long.groupby("variable")["units"].first().to_dict()
    assert units == {"Rs": "g C m-2 d-1", "Rh": "g C m-2 d-1", "Ts": "degC", "SWC": "m3 m-3", "Tair": "degC"}
    swc = t.long.loc[t.long["variable"] == "SWC", "value"]
    assert swc.between(0, 1).all()
    s = t.summary.set_index("dataset")
    assert s.loc["d20200825_MINIAT", "swc_unit"] == "percent"
    assert s.loc["d20190617_SCOTT_WKG", "Rh_days"] > 0
    assert s.loc["d20190526_MINIONS_BNZ", "status"] == "no data file"
    assert t.qc.set_index(["site_id", "reason"]).loc[("d20200825_MINIAT", "manipulated_port"), "n_removed"] > 0
    assert t.sites.loc["d20190617_SCOTT_WKG", "igbp"] == "GRA"
    # days counted in the summary equal the rows of the daily table
    rs_days = t.long[t.long["variable"] == "Rs"].groupby("site_id").size()
    assert (s.loc[rs_days.index, "Rs_days"] == rs_days).all()
    e = cosore_tables(raw, aggregation="8day", variables=("Rh",))
    assert set(e.long["variable"]) <= {"Rh", "Ts", "SWC", "Tair"}
    assert (e.long["n"] <= e.long["period_days"]).all()
    r = cosore_tables(raw, aggregation="raw", variables=("Rs",))
    assert {"port", "local_time"} <= set(r.long.columns)
    with pytest.raises(DataError, match="aggregation 'weekly'"):
        cosore_tables(raw, aggregation="weekly")
    with pytest.raises(DataError, match="variable 'NEE' is not Rs or Rh"):
        cosore_tables(raw, variables=("NEE",))


def test_qc_rules_change_outcome():
    raw = read_cosore(FIXTURE, cache_dir=False, datasets=["d20200825_MINIAT"])
    strict = cosore_tables(raw, percentile_filter=False)
    loose = cosore_tables(raw, percentile_filter=False, rules=QCRules(exclude_manipulated=False))
    assert len(loose.long) > len(strict.long)


def test_to_dataset_layout():
    raw = read_cosore(FIXTURE, cache_dir=False)
    t = cosore_tables(raw)
    ds = to_dataset(t.long, t.sites)
    assert ds["Rs"].dims == ("site", "time") and ds["Rs"].attrs["units"] == "g C m-2 d-1"
    assert set(ds["site"].values) == set(t.long["site_id"])
    row = t.long[t.long["variable"] == "Rh"].iloc[3]
    assert ds["Rh"].sel(site=row["site_id"], time=row["time"]).item() == pytest.approx(row["value"])
    assert ds["Rh_n"].sel(site=row["site_id"], time=row["time"]).item() == row["n"]
    assert float(ds["lat"].sel(site="d20200213_SEIBT")) == t.sites.loc["d20200213_SEIBT", "lat"]
    assert ds["igbp"].sel(site="d20190617_SCOTT_WKG").item() == "GRA"
    with pytest.raises(DataError, match="empty"):
        to_dataset(t.long.iloc[:0], t.sites)


def test_annual_stats():
    t = pd.date_range("2001-01-01", "2002-12-31", freq="MS")
    long = pd.DataFrame({"site_id": "s", "time": t, "variable": "tp", "value": np.arange(24, dtype=float)})
    a = annual_stats(long, sum_variables=("tp",))
    assert a["year"].tolist() == [2001, 2002]
    assert a["tp_mean"].tolist() == [5.5, 17.5] and a["tp_max"].tolist() == [11, 23]
    assert a["tp_min"].tolist() == [0, 12] and a["tp_sum"].tolist() == [66, 210]


@pytest.mark.realdata
def test_cosore_tables_with_no_usable_dataset(shared_data, tmp_path):
    """An NEE-only dataset alone gives an empty long table and a summary, not a crash."""
    raw = read_cosore(shared_data / "cosore", datasets=["d20200328_UEYAMA_FAIRBANKS"],
                      cache_dir=tmp_path / "cache")
    tables = cosore_tables(raw, aggregation="daily", variables=("Rs",))
    assert len(tables.long) == 0
    row = tables.summary.set_index("dataset").loc["d20200328_UEYAMA_FAIRBANKS"]
    assert row["status"] == "NEE only" and row["days"] == 0 and pd.isna(row["first_day"])


def test_srdb_quality_control_counts_each_step():
    from globalflux.sites import SrdbQCRules, srdb_quality_control

    rec = pd.DataFrame({
        "site_id": ["a", "a", "b", "c", "d", "e", "f", "g"],
        "year_start": [2001, 2001, 2002, 2003, 2004, 2005, 2006, 2006],
        "year_end": [2001, 2001, 2002, 2003, 2004, 2005, 2006, 2006],
        "Rh_annual": [300.0, 300.0, 500.0, 460.0, 200.0, 250.0, 100.0, 120.0],
        "Rs_annual": [700.0, 710.0, 400.0, 500.0, np.nan, 600.0, 300.0, 300.0],
        "Partition_method": ["Exclusion", "Exclusion", "Exclusion", "Trench", "Model", None,
                             "Comparison", "Exclusion"],
        "location_id": ["L0", "L0", "L1", "L2", "L3", "L4", "L5", "L5"],
    })
    kept, counts = srdb_quality_control(rec)
    assert counts["step"].tolist() == ["exact_duplicate", "rh_above_rs", "rh_rs_ratio",
                                       "partition_method", "location_year_average"]
    assert counts["n_removed"].tolist() == [1, 1, 1, 2, 0]
    assert (counts["n_before"] - counts["n_removed"] == counts["n_after"]).all()
    assert kept["site_id"].tolist() == ["a", "f", "g"]
    # steps switch off; "unknown" keeps records without a partition method
    kept2, counts2 = srdb_quality_control(rec, SrdbQCRules(
        drop_duplicates=False, max_rh_rs=None, partition_methods=("Exclusion", "Comparison", "unknown"),
        average_location_year=True))
    assert counts2.set_index("step")["rule"]["exact_duplicate"] == "off"
    assert sorted(kept2["site_id"]) == ["a", "e", "f"]  # f and g averaged into one record
    assert kept2.loc[kept2["location_id"] == "L5", "Rh_annual"].item() == pytest.approx(110.0)
    with pytest.raises(DataError, match="max_rh_rs=-1"):
        srdb_quality_control(rec, SrdbQCRules(max_rh_rs=-1))
