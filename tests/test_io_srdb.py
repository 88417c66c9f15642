"""SRDB reader: the RH-method filters counted per reason, stable site ids, renamed columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from globalflux.errors import InputFileError
from globalflux.io.srdb import coordinate_site_id, read_srdb, srdb_igbp

FIXTURE = Path(__file__).parent / "fixtures" / "srdb"


def _removed(t) -> dict[str, int]:
    return dict(zip(t.removed["reason"], t.removed["n_removed"], strict=True))


def test_default_filters_on_fixture():
    t = read_srdb(FIXTURE)
    assert _removed(t) == {"read": 27, "missing_Rh_annual": 5, "duplicate_record": 1, "method": 4,
                           "manipulated": 0, "quality_flag": 1, "coordinates": 0, "negative_flux": 0,
                           "kept": 16}
    r = t.records
    assert len(r) == 16 and r["Rh_annual"].notna().all()
    assert set(r["Meas_method"]) <= {"IRGA", "Gas chromatography"}
    assert r["Quality_flag"].fillna("").str.contains("Q10|Q11").sum() == 0
    assert r.attrs["units"].startswith("Rh_annual, Rs_annual: g C m-2 yr-1")
    # sites: one per location, same id for the same coordinates
    assert t.sites["site_id"].is_unique
    assert r.groupby("site_id")[["lat", "lon"]].nunique().max().max() == 1


def test_min_midyear_and_other_switches():
    t = read_srdb(FIXTURE, min_midyear=2000.5)
    assert _removed(t)["before_min_midyear"] == 4 and _removed(t)["kept"] == 12
    assert (t.records["Study_midyear"] >= 2000.5).all()
    a = read_srdb(FIXTURE, methods=())
    assert _removed(a) == {"read": 27, "missing_Rh_annual": 5, "duplicate_record": 1, "manipulated": 2,
                           "quality_flag": 2, "coordinates": 1, "negative_flux": 0, "kept": 16}
    rs = read_srdb(FIXTURE, require=("Rs_annual",))
    assert rs.records["Rs_annual"].notna().all() and _removed(rs)["missing_Rs_annual"] == 1


def test_study_years():
    r = read_srdb(FIXTURE).records.set_index("Record_number")
    # midyear 2004.0 with one year of data covers 2003.5..2004.5 -> years 2003 and 2004
    row = r.loc[133]
    assert (row["year_start"], row["year_end"]) == (2003, 2004)


def test_site_ids_are_stable_and_readable():
    ids = coordinate_site_id([45.59, -42.87], [-84.7, 147.33])
    assert ids.tolist() == ["srdb_+45.5900_-084.7000", "srdb_-42.8700_+147.3300"]
    assert coordinate_site_id([45.590001], [-84.7])[0] == ids[0]


def test_igbp_mapping():
    assert srdb_igbp("Forest", "Evergreen", "Tropical") == "EBF"
    assert srdb_igbp("Forest", "Evergreen", "Boreal") == "ENF"
    assert srdb_igbp("Forest ", "Deciduous", "Temperate") == "DBF"
    assert srdb_igbp("Agriculture", np.nan, "Temperate") == "CRO"
    assert srdb_igbp("Waterlogged depression", None, None) == "unknown"


def test_renamed_column_names_file_and_column(tmp_path):
    d = pd.read_csv(FIXTURE / "srdb-data.csv", encoding="latin-1")
    d.rename(columns={"Meas_method": "Measurement_method"}).to_csv(tmp_path / "srdb-data.csv", index=False,
                                                                   encoding="latin-1")
    with pytest.raises(InputFileError) as exc:
        read_srdb(tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "srdb-data.csv") in msg
    assert "column 'Meas_method' is missing (found 'Measurement_method': renamed?)" in msg


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="SRDB data file not found"):
        read_srdb(tmp_path)


@pytest.mark.realdata
def test_real_srdb_counts(shared_data):
    t = read_srdb(shared_data / "srdb", min_midyear=2000.5)
    rem = _removed(t)
    assert rem["read"] == 12272
    assert rem["read"] - rem["missing_Rh_annual"] == 1330     # PROVENANCE.md: Rh_annual in 1,330 records
    assert (t.records["Study_midyear"] >= 2000.5).all() and rem["kept"] == len(t.records) > 500
