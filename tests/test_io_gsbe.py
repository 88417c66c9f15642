"""gsbe caches: GPP scale and fill values, ERA5 K -> degC, annual stats, the join to SRDB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from globalflux.errors import DataError, InputFileError
from globalflux.io.gsbe import join_srdb_gsbe, read_gsbe
from globalflux.io.srdb import coordinate_site_id, read_srdb

FIXTURE = Path(__file__).parent / "fixtures" / "srdb"


@pytest.fixture(scope="module")
def gsbe():
    return read_gsbe(FIXTURE / "gsbe")


def test_gpp_scale_and_fill(gsbe):
    raw = pd.read_parquet(FIXTURE / "gsbe" / "caches" / "MODIS_GPP_cache.parquet").dropna(subset=["calendar_date"])
    raw = raw.drop_duplicates(["Longitude", "Latitude", "calendar_date"])
    raw["site_id"] = coordinate_site_id(raw["Latitude"], raw["Longitude"])
    raw["time"] = pd.to_datetime(raw["calendar_date"])
    m = gsbe.gpp.merge(raw, on=["site_id", "time"])
    assert len(m) == len(gsbe.gpp)
    fill = m["MODIS_GPP"] >= 32761
    assert fill.any() and m.loc[fill, "value"].isna().all()
    ok = ~fill & m["MODIS_GPP"].notna()
    # DN x 0.0001 kg C m-2 per composite -> g C m-2 d-1 over 8 days (5 or 6 for the last of a year)
    days = np.where(m["time"].dt.day_of_year == 361, np.where(m["time"].dt.is_leap_year, 6, 5), 8)
    assert np.allclose(m.loc[ok, "value"], m.loc[ok, "MODIS_GPP"] * 0.1 / days[ok])
    assert (m.loc[ok, "period_days"] == days[ok]).all()
    assert (gsbe.gpp["units"] == "g C m-2 d-1").all()


def test_era5_units(gsbe):
    raw = pd.read_parquet(FIXTURE / "gsbe" / "caches" / "ERA5_data_cache.parquet")
    t = raw[raw["short_name"] == "Tair"].iloc[0]
    sid = coordinate_site_id([t["Latitude"]], [t["Longitude"]])[0]
    month = pd.Timestamp(t["time"]).tz_localize(None).to_period("M").to_timestamp()
    e = gsbe.era5
    got = e[(e["site_id"] == sid) & (e["variable"] == "t2m") & (e["time"] == month)]
    assert got["value"].item() == pytest.approx(t["value"] - 273.15)
    assert got["units"].item() == "degC"
    assert set(e["variable"]) == {"t2m", "stl1", "stl2", "swvl1", "swvl2", "tp", "tp_month", "lai_hv", "lai_lv"}
    tp = e[e["variable"] == "tp"]
    assert (tp["units"] == "mm d-1").all() and tp["value"].max() < 100


def test_annual_and_join(gsbe):
    a = gsbe.annual
    assert {"site_id", "year", "gpp_mean", "gpp_max", "gpp_min", "t2m_mean", "swvl1_mean", "tp_sum"} <= set(a.columns)
    recs = read_srdb(FIXTURE).records
    j = join_srdb_gsbe(recs, gsbe)
    assert len(j) == len(recs) and (j["gsbe_years"] > 0).any()
    row = j[(j["gsbe_years"] == 1) & j["gpp_mean"].notna()].iloc[0]
    # recompute that record's GPP mean from the 8-day series of its study year
    g = gsbe.gpp
    sel = g[(g["site_id"] == row["site_id"]) & (g["time"].dt.year.between(row["year_start"], row["year_end"]))]
    assert row["gpp_mean"] == pytest.approx(sel["value"].mean())
    assert row["gpp_max"] == pytest.approx(sel["value"].max())
    tp = gsbe.era5[(gsbe.era5["site_id"] == row["site_id"]) & (gsbe.era5["variable"] == "tp_month")
                   & gsbe.era5["time"].dt.year.between(row["year_start"], row["year_end"])]
    assert row["tp_sum"] == pytest.approx(tp["value"].sum())
    with pytest.raises(DataError, match="records lack"):
        join_srdb_gsbe(recs.drop(columns=["year_start"]), gsbe)


def test_missing_cache(tmp_path):
    with pytest.raises(InputFileError, match="gsbe cache file not found"):
        read_gsbe(tmp_path)


@pytest.mark.realdata
def test_real_gsbe(shared_data):
    g = read_gsbe(shared_data / "gsbe")
    assert g.gpp["value"].max() < 30 and g.gpp["value"].min() >= 0
    assert g.gpp["site_id"].nunique() > 1000
    t2m = g.era5.loc[g.era5["variable"] == "t2m", "value"]
    assert -60 < t2m.min() and t2m.max() < 50
