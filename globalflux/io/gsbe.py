"""Read the gsbe caches: MODIS GPP (8-day) and ERA5-Land (monthly) series at SRDB sites.

gsbe (github.com/bpbond/gsbe, MIT) holds the time series of MODIS and ERA5-Land at every SRDB
location, as Parquet caches keyed by ``Longitude, Latitude, Year``:

``caches/MODIS_GPP_cache.parquet``
    MOD17A2HGF ``Gpp_500m`` raw digital numbers at the site's 500 m pixel, one row per 8-day
    composite (``calendar_date`` = first day). Scale 0.0001 kg C m-2 per composite; values
    >= 32761 are fill codes (water, barren, urban, not classified, ...) and become NaN.
    Converted here to g C m-2 d-1: DN x 0.0001 kg/DN x 1000 g/kg / (days in the composite: 8,
    or 5-6 for the last one of a year, :func:`globalflux.grid.period_lengths`).
``caches/ERA5_data_cache.parquet``
    ERA5-Land monthly means: ``Tair`` (2 m air temperature, K), ``Tsoil_lev1``/``Tsoil_lev2``
    (soil temperature 0-7 / 7-28 cm, K), ``VWC_lev1``/``VWC_lev2`` (volumetric soil water,
    m3 m-3), ``Precip`` (total precipitation, m d-1 as a monthly mean of daily totals),
    ``LAI_high``/``LAI_low`` (m2 m-2). Converted to ERA5 short names and units: ``t2m``,
    ``stl1``, ``stl2`` (°C = K - 273.15), ``swvl1``, ``swvl2`` (m3 m-3), ``tp`` (mm d-1 = m d-1
    x 1000), ``tp_month`` (mm per month = tp x days in the month), ``lai_hv``, ``lai_lv``.

Public API
----------
``read_gsbe(path) -> GsbeTables``
    ``gpp`` and ``era5`` long tables (``site_id, lat, lon, time, variable, value, units``) with
    ``site_id`` from :func:`globalflux.io.srdb.coordinate_site_id` (same place, same id as the
    SRDB records), and ``annual``: :func:`globalflux.sites.annual_stats` per site-year
    (``gpp_mean``, ``gpp_max``, ``gpp_min``, ``t2m_mean``, ..., ``tp_sum`` in mm yr-1).
``join_srdb_gsbe(srdb_records, gsbe) -> DataFrame``
    Adds those annual predictors to each SRDB record, averaged over the calendar years the study
    covers (``year_start..year_end``); ``gsbe_years`` says how many years had data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, InputFileError
from ..grid import period_lengths
from .srdb import coordinate_site_id

__all__ = ["GsbeTables", "read_gsbe", "join_srdb_gsbe", "GPP_SCALE", "GPP_FILL_MIN", "ERA5_VARIABLES"]

#: kg C m-2 per composite per digital number of MOD17A2HGF Gpp_500m.
GPP_SCALE = 0.0001
#: Digital numbers at or above this are fill codes.
GPP_FILL_MIN = 32761
#: gsbe ERA5 names -> (short name, units, offset, factor): value_out = (value + offset) * factor.
ERA5_VARIABLES = {
    "Tair": ("t2m", "degC", -273.15, 1.0),
    "Tsoil_lev1": ("stl1", "degC", -273.15, 1.0),
    "Tsoil_lev2": ("stl2", "degC", -273.15, 1.0),
    "VWC_lev1": ("swvl1", "m3 m-3", 0.0, 1.0),
    "VWC_lev2": ("swvl2", "m3 m-3", 0.0, 1.0),
    "Precip": ("tp", "mm d-1", 0.0, 1000.0),
    "LAI_high": ("lai_hv", "m2 m-2", 0.0, 1.0),
    "LAI_low": ("lai_lv", "m2 m-2", 0.0, 1.0),
}


@dataclass(frozen=True)
class GsbeTables:
    """MODIS GPP and ERA5-Land series at SRDB sites.

    Attributes
    ----------
    gpp
        8-day GPP, long: ``site_id, lat, lon, time`` (composite start), ``variable`` ("gpp"),
        ``value`` (g C m-2 d-1), ``units``, ``period_days``.
    era5
        Monthly ERA5-Land, long: ``site_id, lat, lon, time`` (first of month), ``variable``,
        ``value``, ``units``.
    annual
        One row per ``site_id`` and ``year``: ``<v>_mean/_max/_min/_count`` for gpp and each
        ERA5 variable, and ``tp_sum`` (mm yr-1).
    """

    gpp: pd.DataFrame = field(repr=False)
    era5: pd.DataFrame = field(repr=False)
    annual: pd.DataFrame = field(repr=False)


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise InputFileError("gsbe cache file not found", where=str(path),
                             fix="Give the gsbe folder holding caches/ (e.g. ../shared/data/gsbe)")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(f"cannot read as Parquet ({exc.__class__.__name__})", where=str(path),
                             fix="Replace it with an intact copy of the gsbe cache") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputFileError(f"column {missing[0]!r} is missing (columns: {list(df.columns)})",
                             where=str(path), fix=f"The gsbe cache needs columns {columns}")
    return df


def read_gsbe(path: str | Path) -> GsbeTables:
    """Read and convert the gsbe MODIS GPP and ERA5-Land caches (see the module docstring)."""
    from ..sites import annual_stats

    root = Path(path)
    caches = root / "caches" if (root / "caches").is_dir() else root
    g = _read(caches / "MODIS_GPP_cache.parquet", ["calendar_date", "Longitude", "Latitude", "MODIS_GPP"])
    g = g.dropna(subset=["calendar_date", "Longitude", "Latitude"])
    t = pd.DatetimeIndex(pd.to_datetime(g["calendar_date"].astype(str), errors="coerce"))
    ok = ~t.isna()
    g, t = g.loc[ok], t[ok]
    dn = pd.to_numeric(g["MODIS_GPP"], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    dn = np.where(dn >= GPP_FILL_MIN, np.nan, dn)
    days = period_lengths(t)
    gpp = pd.DataFrame({
        "site_id": pd.array(coordinate_site_id(g["Latitude"], g["Longitude"]), dtype="string"),
        "lat": g["Latitude"].to_numpy(dtype="float64"),
        "lon": g["Longitude"].to_numpy(dtype="float64"),
        "time": t.as_unit("ns"),
        "variable": pd.array(["gpp"] * len(g), dtype="string"),
        "value": dn * GPP_SCALE * 1000.0 / days,
        "units": pd.array(["g C m-2 d-1"] * len(g), dtype="string"),
        "period_days": days.astype("int64"),
    })
    # the cache holds a site's year once per SRDB record asking for it: keep one row per composite
    gpp = gpp.drop_duplicates(["site_id", "time"]).sort_values(["site_id", "time"]).reset_index(drop=True)

    e = _read(caches / "ERA5_data_cache.parquet", ["Longitude", "Latitude", "time", "short_name", "value"])
    e = e[e["short_name"].isin(list(ERA5_VARIABLES))].dropna(subset=["Longitude", "Latitude", "time"])
    te = pd.DatetimeIndex(pd.to_datetime(e["time"], utc=True)).tz_localize(None)
    month = te.to_period("M").to_timestamp().as_unit("ns")
    spec = e["short_name"].map(ERA5_VARIABLES)
    name = spec.map(lambda s: s[0])
    units = spec.map(lambda s: s[1])
    off = spec.map(lambda s: s[2]).to_numpy(dtype="float64")
    fac = spec.map(lambda s: s[3]).to_numpy(dtype="float64")
    val = (pd.to_numeric(e["value"], errors="coerce").to_numpy(dtype="float64", na_value=np.nan) + off) * fac
    era5 = pd.DataFrame({
        "site_id": pd.array(coordinate_site_id(e["Latitude"], e["Longitude"]), dtype="string"),
        "lat": e["Latitude"].to_numpy(dtype="float64"),
        "lon": e["Longitude"].to_numpy(dtype="float64"),
        "time": month,
        "variable": pd.array(name.to_numpy(dtype=object), dtype="string"),
        "value": val,
        "units": pd.array(units.to_numpy(dtype=object), dtype="string"),
    })
    tp = era5[era5["variable"] == "tp"]
    tp_month = tp.assign(variable="tp_month", units="mm month-1",
                         value=tp["value"].to_numpy() * pd.DatetimeIndex(tp["time"]).days_in_month.to_numpy())
    era5 = (pd.concat([era5, tp_month], ignore_index=True)
            .drop_duplicates(["site_id", "variable", "time"])
            .sort_values(["site_id", "variable", "time"]).reset_index(drop=True))
    era5["variable"] = era5["variable"].astype("string")
    era5["units"] = era5["units"].astype("string")

    both = pd.concat([gpp[["site_id", "time", "variable", "value"]],
                      era5[["site_id", "time", "variable", "value"]]], ignore_index=True)
    annual = annual_stats(both.dropna(subset=["value"]), sum_variables=("tp_month",))
    annual = annual.rename(columns={"tp_month_sum": "tp_sum"})
    annual = annual.drop(columns=[c for c in annual.columns if c.startswith("tp_month_")])
    return GsbeTables(gpp=gpp, era5=era5, annual=annual)


def join_srdb_gsbe(srdb_records: pd.DataFrame, gsbe: GsbeTables) -> pd.DataFrame:
    """Add per-site-year predictors from gsbe to SRDB records.

    Each record is matched on its ``site_id`` (coordinates rounded to 1e-4 degree) and its study
    years ``year_start..year_end``; the predictors (every column of ``gsbe.annual`` except
    ``site_id``/``year``) are averaged over the study years that have data. ``gsbe_years`` counts
    them (0: no match, predictors NaN).
    """
    need = {"site_id", "year_start", "year_end"}
    if not need <= set(srdb_records.columns):
        raise DataError(f"records lack {sorted(need - set(srdb_records.columns))}", where="join_srdb_gsbe",
                        fix="Pass SrdbTables.records from globalflux.io.srdb.read_srdb")
    rec = srdb_records.reset_index(drop=True)
    ys = rec["year_start"].astype("float64").to_numpy()
    ye = rec["year_end"].astype("float64").to_numpy()
    nyears = np.where(np.isfinite(ys) & np.isfinite(ye), np.maximum(ye - ys + 1, 1), 1).astype(int)
    rows = np.repeat(np.arange(len(rec)), nyears)
    offs = np.concatenate([np.arange(n) for n in nyears]) if len(rec) else np.array([], dtype=int)
    years = np.where(np.isfinite(ys), ys, 0)[rows] + offs
    expanded = pd.DataFrame({"_row": rows, "site_id": rec["site_id"].astype(str).to_numpy()[rows],
                             "year": years.astype("int64")})
    ann = gsbe.annual.assign(site_id=gsbe.annual["site_id"].astype(str))
    m = expanded.merge(ann, on=["site_id", "year"], how="inner")
    preds = [c for c in ann.columns if c not in ("site_id", "year") and not c.endswith("_count")]
    agg = m.groupby("_row")[preds].mean()
    agg["gsbe_years"] = m.groupby("_row")["year"].nunique()
    out = rec.join(agg, how="left")
    out["gsbe_years"] = out["gsbe_years"].fillna(0).astype("int64")
    return out
