"""Site observations: quality control, units, local days, MODIS 8-day periods, canonical tables.

Pure functions on pandas/xarray objects (no paths; reading is in :mod:`globalflux.io`).

Public API
----------
``cosore_tables(raw, *, aggregation="daily", variables=("Rs", "Rh"), min_year=None,
percentile_filter=True, rules=QCRules()) -> SiteTables``
    COSORE records (:class:`globalflux.io.cosore.CosoreRaw`) -> quality-controlled canonical
    tables at sub-daily (``"raw"``), local-day (``"daily"``) or MODIS 8-day (``"8day"``) steps.
``quality_control(records, *, site_id, timezone, variables, rules, min_year) -> QCResult``
    The documented QC of one dataset's records (see :class:`QCRules` and the steps below).
``percentile_filter(long, igbp, q=(1, 99)) -> (kept, removed_counts)``
    The 1st/99th percentile filter per IGBP class and variable (Smykalov et al.).
``soil_moisture_unit(values) -> "m3/m3" | "percent" | "unknown"``
``to_daily(records) -> long``, ``to_8day(long_daily) -> long``
``to_dataset(long, sites) -> xr.Dataset`` with dims (site, time) for the LSTM.
``annual_stats(long) -> DataFrame`` of annual mean/max/min (and sum) per site, year and variable.

The canonical long table (see DESIGN.md) has exactly these columns first: ``site_id, lat, lon,
igbp, time, variable, value, units``; then ``n`` (records behind a day, or days behind an 8-day
period) and QC columns (``n_ports``: chambers averaged; ``n_records`` in 8-day tables).
Variables:

======== ================ ==============================================================
variable units            meaning
======== ================ ==============================================================
Rs       g C m-2 d-1      total soil CO2 efflux (ports with CSR_MSMT_VAR = Rs)
Rh       g C m-2 d-1      heterotrophic respiration (Rh ports: trenched, girdled, root-excl.)
Ts       degC             soil temperature at the shallowest depth with valid data
SWC      m3 m-3           volumetric soil moisture at the shallowest depth with valid data
Tair     degC             air temperature (CSR_TAIR, else CSR_TAIR_AMB)
======== ================ ==============================================================

Flux unit: µmol CO2 m-2 s-1 x 1e-6 mol/µmol x 12.011 g C/mol x 86400 s/d = g C m-2 d-1
(factor :data:`UMOL_CO2_M2_S_TO_G_C_M2_D` = 1.0377504).

QC steps (each removed record is counted per reason in ``SiteTables.qc``):

1. ``manipulated_port``: Rs ports whose treatment is not None/control, and Rh ports whose
   treatment is not None or a partitioning method (trenched, girdled, root exclusion); warming,
   irrigation, drought, in-growth cores, litter removal etc. are experiments, not baseline
   efflux (``rules.exclude_manipulated``).
2. ``flux_missing``: no finite CSR_FLUX_CO2.
3. ``flux_out_of_bounds``: outside ``rules.flux_bounds`` (µmol m-2 s-1; default 0..50: soil
   respiration is an efflux, and 50 µmol m-2 s-1 exceeds any sustained field value).
4. ``ts_out_of_range`` / ``tair_out_of_range``: temperatures outside ``rules.ts_bounds`` /
   ``rules.tair_bounds`` (PANG's 104-131 °C, PENNINGTON's 144 °C, MINIAT's 301 °C).
5. Soil moisture, per dataset and column: values < -1 or > 100 are ``swc_absurd`` (the 1e12 and
   6.8e5 of PANG and PENNINGTON); the unit is then detected from the median of the rest
   (:func:`soil_moisture_unit`): <= 1 m3/m3, >= 2 percent (divided by 100), else unknown and
   the whole column is removed as ``swc_unknown_unit`` (ARAIN_TP74, values 1-2 of unknown
   unit); after conversion values outside 0..1 are ``swc_out_of_range``.
6. ``before_min_year``: local year < ``min_year`` (Zhu et al. 2024 use 2000 for RH).
7. ``percentile_1_99``: flux records outside the 1st-99th percentile of their IGBP class and
   variable over all sites (Smykalov et al.), after steps 1-6.

References
----------
Bond-Lamberty, B. et al. (2020) COSORE: A community database for continuous soil respiration and
other soil-atmosphere greenhouse gas flux data. Global Change Biology 26, 7268-7283.
Zhu, H. et al. (2024) global heterotrophic respiration with zoned random forests.
Smykalov et al.: global LSTM of daily soil CO2 efflux from COSORE.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .errors import DataError
from .grid import modis_8day_start, period_lengths

__all__ = [
    "SiteTables",
    "QCRules",
    "QCResult",
    "LONG_COLUMNS",
    "UNITS",
    "UMOL_CO2_M2_S_TO_G_C_M2_D",
    "QC_REASONS",
    "cosore_tables",
    "quality_control",
    "percentile_filter",
    "soil_moisture_unit",
    "is_baseline_treatment",
    "to_daily",
    "to_8day",
    "to_dataset",
    "annual_stats",
    "local_dates",
]

#: µmol CO2 m-2 s-1 -> g C m-2 d-1: 1e-6 mol/µmol x 12.011 g C/mol x 86400 s/d.
UMOL_CO2_M2_S_TO_G_C_M2_D = 1e-6 * 12.011 * 86400.0
#: The contract columns of every long site table, in order.
LONG_COLUMNS = ["site_id", "lat", "lon", "igbp", "time", "variable", "value", "units"]
#: Units of each variable in the long tables.
UNITS = {"Rs": "g C m-2 d-1", "Rh": "g C m-2 d-1", "Ts": "degC", "SWC": "m3 m-3", "Tair": "degC"}
FLUX_VARIABLES = ("Rs", "Rh")
DRIVER_VARIABLES = ("Ts", "SWC", "Tair")
#: Reasons a record is removed, in the order the checks run.
QC_REASONS = ("manipulated_port", "flux_missing", "flux_out_of_bounds", "ts_out_of_range",
              "tair_out_of_range", "swc_absurd", "swc_unknown_unit", "swc_out_of_range",
              "before_min_year", "percentile_1_99")
_BASELINE = {"", "none", "control", "ambient", "na", "n/a", "no treatment"}
_RH_METHODS = {"trench", "trenched", "trenching", "girdled", "girdling", "root exclusion",
               "root exclusion plot", "root-exclusion", "rootless"}
_T_COL = re.compile(r"^CSR_T(\d+(?:\.\d+)?)$")
_SM_COL = re.compile(r"^CSR_SM(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class QCRules:
    """Physical bounds and switches of :func:`quality_control`.

    Attributes
    ----------
    flux_bounds
        Allowed CSR_FLUX_CO2 (µmol CO2 m-2 s-1), inclusive.
    ts_bounds
        Allowed soil temperature (°C), inclusive.
    tair_bounds
        Allowed air temperature (°C), inclusive.
    swc_absurd
        Soil moisture outside this range is impossible in any unit (m3/m3 or %).
    exclude_manipulated
        Drop ports under experimental manipulation (see :func:`is_baseline_treatment`).
    percentile
        Lower/upper percentile of the per-IGBP flux filter.
    """

    flux_bounds: tuple[float, float] = field(default=(0.0, 50.0), metadata={"units": "umol m-2 s-1"})
    ts_bounds: tuple[float, float] = field(default=(-40.0, 60.0), metadata={"units": "degC"})
    tair_bounds: tuple[float, float] = field(default=(-60.0, 60.0), metadata={"units": "degC"})
    swc_absurd: tuple[float, float] = field(default=(-1.0, 100.0))
    exclude_manipulated: bool = True
    percentile: tuple[float, float] = (1.0, 99.0)


@dataclass(frozen=True)
class QCResult:
    """Output of :func:`quality_control` for one dataset.

    Attributes
    ----------
    records
        Sub-daily long records: ``site_id, time`` (UTC), ``local_time``, ``variable, value``
        (target units), ``port``.
    removed
        ``{(variable, reason): n}`` records removed.
    info
        Which columns were used (``ts_column``, ``swc_column``, ``tair_column``) and the detected
        soil moisture unit (``swc_unit``).
    """

    records: pd.DataFrame
    removed: dict[tuple[str, str], int]
    info: dict[str, str]


@dataclass(frozen=True)
class SiteTables:
    """Canonical site tables.

    Attributes
    ----------
    long
        ``site_id, lat, lon, igbp, time, variable, value, units, n, ...`` (one row per site,
        period and variable).
    sites
        One row per site (index and column ``site_id``): lat, lon, elevation, igbp, timezone,
        dataset, primary_pub, ...
    summary
        One row per dataset: status, days (with Rs or Rh), Rs_days, Rh_days, driver days, drivers
        available, soil moisture unit, first/last day, records removed.
    qc
        Records removed: ``site_id, variable, reason, n_removed``.
    """

    long: pd.DataFrame
    sites: pd.DataFrame
    summary: pd.DataFrame
    qc: pd.DataFrame


# --------------------------------------------------------------------------- helpers


def is_baseline_treatment(treatment: str, variable: str) -> bool:
    """True when a port's treatment is the unmanipulated baseline for ``variable``.

    ``Rs``: no treatment ("None", "Control", empty). ``Rh``: additionally a partitioning method
    (trenched, girdled, root exclusion) and nothing else ("Trench and warm" is an experiment).
    """
    t = " ".join(str(treatment if treatment is not None and treatment is not pd.NA else "").lower().split())
    if t in _BASELINE:
        return True
    return variable == "Rh" and t in _RH_METHODS


def soil_moisture_unit(values) -> str:
    """Detect the unit of a soil moisture series: ``"m3/m3"``, ``"percent"`` or ``"unknown"``.

    The median of the finite values within -1..100 decides: <= 1 is volumetric fraction
    (m3/m3), >= 2 is percent; 1-2 is ambiguous (fraction with a calibration problem or percent
    of a very dry soil) and reported as unknown. Robust to the absurd outliers of single records.
    """
    x = np.asarray(values, dtype="float64")
    x = x[np.isfinite(x) & (x >= -1.0) & (x <= 100.0)]
    if x.size == 0:
        return "unknown"
    med = float(np.median(x))
    if med <= 1.0:
        return "m3/m3"
    if med >= 2.0:
        return "percent"
    return "unknown"


def _depth_columns(columns: Iterable[str], pattern: re.Pattern) -> list[str]:
    found = [(float(m.group(1)), c) for c in columns if (m := pattern.match(c))]
    return [c for _, c in sorted(found)]


def local_dates(time_utc: pd.Series | pd.DatetimeIndex, tz) -> pd.DatetimeIndex:
    """Local calendar day (naive midnight) of naive-UTC timestamps in time zone ``tz``."""
    t = pd.DatetimeIndex(time_utc)
    return t.tz_localize("UTC").tz_convert(tz).tz_localize(None).normalize()


def _count(removed: dict, variable: str, reason: str, n: int) -> None:
    if n:
        removed[(variable, reason)] = removed.get((variable, reason), 0) + int(n)


# --------------------------------------------------------------------------- QC


def quality_control(
    records: pd.DataFrame,
    *,
    site_id: str,
    timezone,
    variables: Iterable[str] = FLUX_VARIABLES,
    drivers: Iterable[str] = DRIVER_VARIABLES,
    rules: QCRules = QCRules(),
    min_year: int | None = None,
) -> QCResult:
    """Quality-control one COSORE dataset's records (steps 1-6 of the module docstring).

    Parameters
    ----------
    records
        A ``CosoreRaw.records`` frame: CSR columns plus ``time`` (UTC), ``msmt_var``,
        ``treatment``.
    site_id
        Written into the output.
    timezone
        tzinfo or name for local times (``CSR_TIMEZONE`` resolved).
    variables
        Flux variables kept (``"Rs"``, ``"Rh"``). Drivers are taken from the records of the
        ports kept for these variables (so a warmed chamber's soil temperature is never used).
    drivers
        Driver variables to extract (``"Ts"``, ``"SWC"``, ``"Tair"``).
    rules
        Bounds and switches.
    min_year
        Drop records whose local year is earlier.

    Returns
    -------
    QCResult
        Long sub-daily records in target units, counts removed per (variable, reason), info.
    """
    variables = [v for v in variables if v in FLUX_VARIABLES]
    removed: dict[tuple[str, str], int] = {}
    info = {"ts_column": "", "swc_column": "", "tair_column": "", "swc_unit": ""}
    # msmt_var and treatment are per port: decide per port, then select records by port number
    port_all = pd.to_numeric(records["CSR_PORT"], errors="coerce").fillna(-1).astype("int64").to_numpy()
    first = pd.DataFrame({"port": port_all, "msmt_var": records["msmt_var"].to_numpy(dtype=object, na_value=None),
                          "treatment": records["treatment"].to_numpy(dtype=object, na_value=None)}
                         ).drop_duplicates("port") if len(records) else pd.DataFrame(columns=["port", "msmt_var", "treatment"])
    pvar = {int(p): v for p, v in zip(first["port"], first["msmt_var"], strict=True)}
    wanted = np.array([p for p, v in pvar.items() if v in variables], dtype="int64")
    sel = np.isin(port_all, wanted)
    used = [c for c in records.columns if c in ("CSR_PORT", "time", "CSR_FLUX_CO2", "CSR_TAIR", "CSR_TAIR_AMB")
            or _T_COL.match(c) or _SM_COL.match(c)]
    df = records.loc[sel, used]
    port_sel = port_all[sel]
    if rules.exclude_manipulated and len(df):
        ok_ports = np.array([p for p, v, t in first.itertuples(index=False)
                             if v in variables and is_baseline_treatment(t, v)], dtype="int64")
        ok = np.isin(port_sel, ok_ports)
        for v in variables:
            vports = np.array([p for p, pv in pvar.items() if pv == v], dtype="int64")
            _count(removed, v, "manipulated_port", int((np.isin(port_sel, vports) & ~ok).sum()))
        df = df.loc[ok]
        port_sel = port_sel[ok]
    local = local_dates(df["time"], timezone) if len(df) else pd.DatetimeIndex([])
    local_time = (pd.DatetimeIndex(df["time"]).tz_localize("UTC").tz_convert(timezone).tz_localize(None)
                  if len(df) else pd.DatetimeIndex([]))
    year_ok = np.ones(len(df), dtype=bool) if min_year is None else (local.year >= min_year)
    port = port_sel
    out = []

    def emit(variable: str, values: np.ndarray, keep: np.ndarray) -> None:
        _count(removed, variable, "before_min_year", int((keep & ~year_ok).sum()))
        keep = keep & year_ok
        n = int(keep.sum())
        out.append(pd.DataFrame({
            "site_id": pd.Categorical.from_codes(np.zeros(n, dtype="int8"), categories=[site_id]),
            "time": pd.DatetimeIndex(df["time"])[keep],
            "local_time": local_time[keep],
            "variable": pd.Categorical.from_codes(np.zeros(n, dtype="int8"), categories=[variable]),
            "value": values[keep],
            "port": port[keep],
        }))

    flux = pd.to_numeric(df["CSR_FLUX_CO2"], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    lo, hi = rules.flux_bounds
    for v in variables:
        isv = np.isin(port, np.array([p for p, pv in pvar.items() if pv == v], dtype="int64"))
        fin = np.isfinite(flux)
        _count(removed, v, "flux_missing", int((isv & ~fin).sum()))
        inb = fin & (flux >= lo) & (flux <= hi)
        _count(removed, v, "flux_out_of_bounds", int((isv & fin & ~inb).sum()))
        emit(v, flux * UMOL_CO2_M2_S_TO_G_C_M2_D, isv & inb)

    def numeric(col: str) -> np.ndarray:
        return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)

    drivers = list(drivers)
    if "Ts" in drivers:
        for col in _depth_columns(df.columns, _T_COL):
            x = numeric(col)
            fin = np.isfinite(x)
            good = fin & (x >= rules.ts_bounds[0]) & (x <= rules.ts_bounds[1])
            if good.any():
                info["ts_column"] = col
                _count(removed, "Ts", "ts_out_of_range", int((fin & ~good).sum()))
                emit("Ts", x, good)
                break
    if "Tair" in drivers:
        for col in ("CSR_TAIR", "CSR_TAIR_AMB"):
            if col not in df.columns:
                continue
            x = numeric(col)
            fin = np.isfinite(x)
            good = fin & (x >= rules.tair_bounds[0]) & (x <= rules.tair_bounds[1])
            if good.any():
                info["tair_column"] = col
                _count(removed, "Tair", "tair_out_of_range", int((fin & ~good).sum()))
                emit("Tair", x, good)
                break
    if "SWC" in drivers:
        units = []
        for col in _depth_columns(df.columns, _SM_COL):
            x = numeric(col)
            fin = np.isfinite(x)
            if not fin.any():
                continue
            absurd = fin & ((x < rules.swc_absurd[0]) | (x > rules.swc_absurd[1]))
            unit = soil_moisture_unit(x[fin & ~absurd])
            units.append(f"{col}:{unit}")
            if unit == "unknown":
                _count(removed, "SWC", "swc_absurd", int(absurd.sum()))
                _count(removed, "SWC", "swc_unknown_unit", int((fin & ~absurd).sum()))
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                y = x / 100.0 if unit == "percent" else x
                good = fin & ~absurd & (y >= 0.0) & (y <= 1.0)
            if not good.any():
                continue
            _count(removed, "SWC", "swc_absurd", int(absurd.sum()))
            _count(removed, "SWC", "swc_out_of_range", int((fin & ~absurd & ~good).sum()))
            info["swc_column"], info["swc_unit"] = col, unit
            emit("SWC", y, good)
            break
        if not info["swc_unit"] and units:
            info["swc_unit"] = ",".join(units)
    recs = (_concat_categorical(out) if out else
            pd.DataFrame({"site_id": pd.Categorical([]), "time": pd.Series(dtype="datetime64[ns]"),
                          "local_time": pd.Series(dtype="datetime64[ns]"), "variable": pd.Categorical([]),
                          "value": pd.Series(dtype="float64"), "port": pd.Series(dtype="int64")}))
    return QCResult(records=recs, removed=removed, info=info)


def _concat_categorical(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate frames whose ``site_id``/``variable`` are categoricals, keeping them categorical."""
    from pandas.api.types import union_categoricals

    cats = ["site_id", "variable"]
    out = pd.concat([f.drop(columns=cats) for f in frames], ignore_index=True)
    for col in cats:
        out[col] = union_categoricals([f[col] for f in frames])
    return out[list(frames[0].columns)]


def percentile_filter(
    long: pd.DataFrame,
    igbp: Mapping[str, str] | pd.Series,
    q: tuple[float, float] = (1.0, 99.0),
    variables: Iterable[str] = FLUX_VARIABLES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Remove flux records outside the ``q`` percentiles of their IGBP class (Smykalov et al.).

    Percentiles (linear interpolation) are computed over all sites of a class for each flux
    variable; records of other variables pass unchanged.

    Returns
    -------
    kept, removed
        The filtered frame, and ``site_id, variable, reason, n_removed`` counts.
    """
    site = long["site_id"].astype("category")
    igbp = dict(pd.Series(igbp))
    site_cls = np.array([str(igbp.get(c, "unknown")) for c in site.cat.categories], dtype=object)
    cls_names, cls_of_site = np.unique(site_cls, return_inverse=True) if len(site_cls) else (np.array([]), np.array([], dtype=int))
    cls_codes = np.asarray(cls_of_site)[site.cat.codes.to_numpy()]
    variable = long["variable"].astype("category")
    isflux = variable.isin(list(variables)).to_numpy(dtype=bool)
    value = long["value"].to_numpy(dtype="float64")
    keep = np.ones(len(long), dtype=bool)
    nvar = max(len(variable.cat.categories), 1)
    group = cls_codes.astype("int64") * nvar + variable.cat.codes.to_numpy().astype("int64")
    fl = pd.DataFrame({"g": group[isflux], "v": value[isflux]})
    # linear interpolation, as numpy.percentile's default
    thr = fl.groupby("g")["v"].quantile([q[0] / 100.0, q[1] / 100.0]).unstack()
    lo = thr.iloc[:, 0].reindex(fl["g"]).to_numpy()
    hi = thr.iloc[:, 1].reindex(fl["g"]).to_numpy()
    keep[isflux] = (fl["v"].to_numpy() >= lo) & (fl["v"].to_numpy() <= hi)
    del fl
    dropped = pd.DataFrame({"site_id": site[~keep], "variable": variable[~keep]})
    counts = (dropped.groupby(["site_id", "variable"], observed=True).size().rename("n_removed").reset_index()
              .astype({"site_id": str, "variable": str})
              .assign(reason="percentile_1_99")[["site_id", "variable", "reason", "n_removed"]])
    return long.loc[keep].reset_index(drop=True), counts


# --------------------------------------------------------------------------- aggregation


def to_daily(records: pd.DataFrame) -> pd.DataFrame:
    """Sub-daily QC'd records -> one value per site, local calendar day and variable.

    Fluxes are averaged per port and day first, then across ports (a chamber with more records
    does not outweigh the others); drivers are the mean of all records of the day.

    Returns
    -------
    DataFrame
        ``site_id, time`` (local day, naive midnight), ``variable, value, n`` (records),
        ``n_ports`` (chambers averaged; 0 for drivers).
    """
    if not len(records):
        return pd.DataFrame({"site_id": pd.Series(dtype="string"), "time": pd.Series(dtype="datetime64[ns]"),
                             "variable": pd.Series(dtype="string"), "value": pd.Series(dtype="float64"),
                             "n": pd.Series(dtype="int64"), "n_ports": pd.Series(dtype="int64")})
    r = records.assign(time=pd.DatetimeIndex(records["local_time"]).normalize(),
                       port=records["port"].astype("int64"))
    isflux = r["variable"].isin(FLUX_VARIABLES)
    keys = ["site_id", "variable", "time"]
    f = (r[isflux].groupby(keys + ["port"], observed=True, sort=False)["value"]
         .agg(["mean", "size"]).reset_index())
    f = (f.groupby(keys, observed=True, sort=False)
         .agg(value=("mean", "mean"), n=("size", "sum"), n_ports=("port", "size")).reset_index())
    d = (r[~isflux].groupby(keys, observed=True, sort=False)["value"].agg(["mean", "size"])
         .reset_index().rename(columns={"mean": "value", "size": "n"}).assign(n_ports=0))
    out = pd.concat([f, d], ignore_index=True)
    out["n"] = out["n"].astype("int64")
    out["n_ports"] = out["n_ports"].astype("int64")
    return out.sort_values(["site_id", "variable", "time"], kind="stable").reset_index(drop=True)


def to_8day(long_daily: pd.DataFrame) -> pd.DataFrame:
    """Daily long table -> MODIS 8-day periods (mean of the days; ``n`` = days behind a period).

    Periods start on day of year 1, 9, 17, ... of each year; the last period of a year is 5 or 6
    days long (:func:`globalflux.grid.modis_8day_start`). ``time`` is the period's start date;
    ``period_days`` its length; ``n_records`` sums the daily ``n``. Any other columns that are
    constant per site (lat, lon, igbp, units) are carried.
    """
    if not len(long_daily):
        out = long_daily.copy()
        out["period_days"] = pd.Series(dtype="int64")
        return out
    d = long_daily.assign(time=modis_8day_start(long_daily["time"]))
    carry = [c for c in ("lat", "lon", "igbp", "units") if c in d.columns]
    keys = ["site_id", "variable", "time"]
    agg = {"value": ("value", "mean"), "n": ("value", "size")}
    if "n" in d.columns:
        agg["n_records"] = ("n", "sum")
    for c in carry:
        agg[c] = (c, "first")
    out = d.groupby(keys, observed=True, sort=True).agg(**agg).reset_index()
    out["n"] = out["n"].astype("int64")
    out["period_days"] = period_lengths(out["time"]).astype("int64")
    front = [c for c in LONG_COLUMNS if c in out.columns]
    return out[front + [c for c in out.columns if c not in front]].reset_index(drop=True)


def _canonical(long: pd.DataFrame, sites: pd.DataFrame) -> pd.DataFrame:
    s = sites.set_index("site_id", drop=False) if "site_id" in sites.columns else sites
    out = long.copy()
    out["lat"] = out["site_id"].map(s["lat"]).astype("float64")
    out["lon"] = out["site_id"].map(s["lon"]).astype("float64")
    out["igbp"] = out["site_id"].map(s["igbp"]).astype("string")
    out["units"] = out["variable"].map(UNITS).astype("string")
    out["site_id"] = out["site_id"].astype("string")
    out["variable"] = out["variable"].astype("string")
    rest = [c for c in out.columns if c not in LONG_COLUMNS]
    return out[LONG_COLUMNS + rest].reset_index(drop=True)


# --------------------------------------------------------------------------- COSORE tables


def cosore_tables(
    raw,
    *,
    aggregation: str = "daily",
    variables: Iterable[str] = FLUX_VARIABLES,
    min_year: int | None = None,
    percentile_filter: bool = True,
    drivers: Iterable[str] = DRIVER_VARIABLES,
    rules: QCRules = QCRules(),
) -> SiteTables:
    """Quality-controlled canonical tables from COSORE records.

    Parameters
    ----------
    raw
        :class:`globalflux.io.cosore.CosoreRaw`.
    aggregation
        ``"raw"`` (sub-daily records; ``time`` UTC, plus ``local_time`` and ``port``),
        ``"daily"`` (local calendar days) or ``"8day"`` (MODIS 8-day periods).
    variables
        Flux variables: any of ``"Rs"``, ``"Rh"``.
    min_year
        Drop records before this local year (the RH method uses 2000).
    percentile_filter
        Apply the per-IGBP 1st/99th percentile filter to fluxes.
    drivers
        In-situ drivers to include (``"Ts"``, ``"SWC"``, ``"Tair"``).
    rules
        QC bounds (:class:`QCRules`).

    Returns
    -------
    SiteTables
    """
    from .io.cosore import resolve_timezone

    if aggregation not in ("raw", "daily", "8day"):
        raise DataError(f"aggregation {aggregation!r} is not one of raw, daily, 8day", where="aggregation",
                        fix="Choose raw, daily or 8day")
    variables = tuple(variables)
    bad = [v for v in variables if v not in FLUX_VARIABLES]
    if bad:
        raise DataError(f"variable {bad[0]!r} is not Rs or Rh", where="variables",
                        fix="Choose Rs and/or Rh (drivers Ts, SWC, Tair come with them)")
    sites = raw.sites[raw.sites["site_id"].isin(list(raw.records))].copy()
    parts, removed_rows, infos = [], [], {}
    for name, rec in raw.records.items():
        tz = resolve_timezone(raw.sites.loc[name, "timezone"])
        res = quality_control(rec, site_id=name, timezone=tz, variables=variables, drivers=drivers,
                              rules=rules, min_year=min_year)
        parts.append(res.records)
        infos[name] = res.info
        removed_rows += [(name, v, r, n) for (v, r), n in res.removed.items()]
    records = (_concat_categorical(parts) if parts else
               quality_control(pd.DataFrame({"msmt_var": pd.Series(dtype="string"),
                                             "treatment": pd.Series(dtype="string"),
                                             "time": pd.Series(dtype="datetime64[ns]"),
                                             "CSR_PORT": pd.Series(dtype="Int64"),
                                             "CSR_FLUX_CO2": pd.Series(dtype="float64")}),
                               site_id="", timezone="UTC").records)
    del parts
    qc = pd.DataFrame(removed_rows, columns=["site_id", "variable", "reason", "n_removed"])
    if percentile_filter and len(records):
        records, pcounts = percentile_filter_fn(records, sites["igbp"], rules.percentile, variables)
        qc = pd.concat([qc, pcounts], ignore_index=True)
    qc["n_removed"] = qc["n_removed"].astype("int64")
    qc = qc.sort_values(["site_id", "variable", "reason"]).reset_index(drop=True)

    daily = to_daily(records)
    summary = _summary(raw, daily, qc, infos)
    if aggregation == "raw":
        long = records
    elif aggregation == "daily":
        long = daily
    else:
        long = to_8day(daily)
    long = _canonical(long, sites)
    long.attrs = {"source": "COSORE (Bond-Lamberty et al. 2020, doi:10.1111/gcb.15353), CC BY 4.0",
                  "aggregation": aggregation, "flux_units": UNITS["Rs"],
                  "flux_conversion": "umol CO2 m-2 s-1 x 1e-6 x 12.011 x 86400 = g C m-2 d-1"}
    return SiteTables(long=long, sites=sites.reset_index(drop=True).set_index("site_id", drop=False).rename_axis(None),
                      summary=summary, qc=qc)


percentile_filter_fn = percentile_filter  # cosore_tables' keyword shadows the function name


def _summary(raw, daily: pd.DataFrame, qc: pd.DataFrame, infos: dict) -> pd.DataFrame:
    st = raw.status[["dataset", "status", "message"]].copy()
    d = daily.assign(dataset=daily["site_id"].astype(str))
    flux = d[d["variable"].isin(FLUX_VARIABLES)]
    cols = {
        "days": flux.groupby("dataset")["time"].nunique(),
        "Rs_days": d[d["variable"] == "Rs"].groupby("dataset").size(),
        "Rh_days": d[d["variable"] == "Rh"].groupby("dataset").size(),
        "Ts_days": d[d["variable"] == "Ts"].groupby("dataset").size(),
        "SWC_days": d[d["variable"] == "SWC"].groupby("dataset").size(),
        "Tair_days": d[d["variable"] == "Tair"].groupby("dataset").size(),
    }
    for k, s in cols.items():
        st[k] = st["dataset"].map(s).fillna(0).astype("int64")
    st["drivers"] = [",".join(v for v in DRIVER_VARIABLES if row[f"{v}_days"] > 0) for _, row in st.iterrows()]
    units = {k: v["swc_unit"] for k, v in infos.items()}
    st["swc_unit"] = [str(units.get(d, "") or "") for d in st["dataset"]]
    first = flux.groupby("dataset")["time"].min()
    last = flux.groupby("dataset")["time"].max()
    # reindex, not map: mapping through an empty datetime Series fails in pandas 3
    keys = st["dataset"].to_numpy()
    st["first_day"] = pd.DatetimeIndex(first.reindex(keys).to_numpy(dtype="datetime64[ns]"))
    st["last_day"] = pd.DatetimeIndex(last.reindex(keys).to_numpy(dtype="datetime64[ns]"))
    st["removed"] = st["dataset"].map(qc.groupby("site_id")["n_removed"].sum()).fillna(0).astype("int64")
    return st.reset_index(drop=True)


# --------------------------------------------------------------------------- xarray and stats


def to_dataset(long: pd.DataFrame, sites: pd.DataFrame) -> xr.Dataset:
    """Long table -> Dataset with dims ``(site, time)``, one data variable per ``variable``.

    Each variable ``v`` gets ``v`` (float, NaN where missing; attrs ``units``) and ``v_n``
    (records or days behind each value, 0 where missing). Site attributes (lat, lon, igbp,
    elevation, timezone, ... whatever ``sites`` holds) become coordinates along ``site``.
    """
    if not len(long):
        raise DataError("the site table is empty", where="to_dataset",
                        fix="Check the QC summary: every record was removed or no dataset loaded")
    s = sites.set_index("site_id", drop=False) if "site_id" in sites.columns else sites
    site_ids = sorted(pd.unique(long["site_id"].astype(str)))
    times = pd.DatetimeIndex(sorted(pd.unique(long["time"])))
    ds = xr.Dataset(coords={"site": np.array(site_ids, dtype=object), "time": times})
    si = pd.Index(site_ids)
    for v, g in long.groupby("variable", observed=True, sort=True):
        grid = np.full((len(site_ids), len(times)), np.nan)
        ngrid = np.zeros((len(site_ids), len(times)), dtype="int64")
        i = si.get_indexer(g["site_id"].astype(str))
        j = times.get_indexer(pd.DatetimeIndex(g["time"]))
        grid[i, j] = g["value"].to_numpy(dtype="float64")
        if "n" in g.columns:
            ngrid[i, j] = g["n"].to_numpy(dtype="int64")
        units = str(g["units"].iloc[0]) if "units" in g.columns else UNITS.get(str(v), "")
        ds[str(v)] = (("site", "time"), grid, {"units": units})
        ds[f"{v}_n"] = (("site", "time"), ngrid, {"long_name": f"records or days behind {v}"})
    for col in s.columns:
        if col == "site_id":
            continue
        vals = s[col].reindex(site_ids)
        if pd.api.types.is_numeric_dtype(vals.dtype) and not pd.api.types.is_bool_dtype(vals.dtype):
            ds = ds.assign_coords({col: ("site", vals.to_numpy(dtype="float64", na_value=np.nan))})
        else:
            ds = ds.assign_coords({col: ("site", vals.astype(object).where(vals.notna(), "").to_numpy(dtype=object))})
    return ds


def annual_stats(long: pd.DataFrame, *, sum_variables: Iterable[str] = ()) -> pd.DataFrame:
    """Annual mean, max and min of each site's series (and sum for ``sum_variables``).

    Parameters
    ----------
    long
        ``site_id, time, variable, value`` (any time step: 8-day, monthly, daily).
    sum_variables
        Variables whose annual total is also wanted (``<v>_sum``), e.g. precipitation.

    Returns
    -------
    DataFrame
        One row per ``site_id`` and ``year``; columns ``<v>_mean``, ``<v>_max``, ``<v>_min``,
        ``<v>_count`` (values behind) and ``<v>_sum`` where asked.
    """
    d = long.assign(year=pd.DatetimeIndex(long["time"]).year)
    g = d.groupby(["site_id", "year", "variable"], observed=True)["value"]
    stats = g.agg(["mean", "max", "min", "count", "sum"])
    wide = stats.unstack("variable")
    wide.columns = [f"{v}_{s}" for s, v in wide.columns]
    sums = set(sum_variables)
    keep = [c for c in wide.columns if not c.endswith("_sum") or c[:-4] in sums]
    out = wide[keep]
    order = sorted(keep, key=lambda c: (c.rsplit("_", 1)[0], ["mean", "max", "min", "sum", "count"].index(c.rsplit("_", 1)[1])))
    return out[order].reset_index()


# --------------------------------------------------------------------------------------------
# SRDB annual records: quality control with counts
# --------------------------------------------------------------------------------------------
#: SRDB ``Partition_method`` values that measure the heterotrophic flux in the field: root
#: exclusion or trenching, root extraction, comparison of rooted and root-free plots,
#: subtraction of separately measured root respiration, isotopes, gap/clear-cut/clip plots,
#: deep collars, girdling. Not in the list (so dropped by default): ``Model``, ``Regression``,
#: ``TBCA`` (mass balance), ``Incubation`` (laboratory), ``Other`` and records without a method
#: (token ``unknown``).
SRDB_MEASURED_PARTITIONS = ("Exclusion", "Trench", "Extraction", "Comparison", "Subtraction",
                            "Isotope", "Gap/clear cut/clip", "DeepPVC", "Girdling")
#: SRDB QC steps in the order :func:`srdb_quality_control` applies them.
SRDB_QC_STEPS = ("exact_duplicate", "rh_above_rs", "rh_rs_ratio", "partition_method",
                 "location_year_average")


@dataclass(frozen=True)
class SrdbQCRules:
    """Switches and thresholds of :func:`srdb_quality_control` (recipe keys ``sites.srdb_*``).

    Attributes
    ----------
    drop_duplicates
        Drop exact duplicates: the same site, first and last year and ``Rh_annual`` value (the
        same measurement entered twice, e.g. from two papers); the first record is kept.
    drop_rh_above_rs
        Drop records whose ``Rh_annual`` exceeds their ``Rs_annual`` (impossible: RH is a part
        of RS).
    max_rh_rs
        Drop records with ``Rh_annual / Rs_annual`` above this ratio (typical trenching
        artefacts: decomposing severed roots, no root-free control); None keeps all. Applied
        after ``drop_rh_above_rs``, so it counts only ratios in (max_rh_rs, 1].
    partition_methods
        ``Partition_method`` values to keep; ``"unknown"`` keeps records without one; empty
        keeps every record.
    average_location_year
        Average ``Rh_annual`` (and ``Rs_annual``) of the records of one location and calendar
        year span into one record (needs a ``location_id`` column).
    """

    drop_duplicates: bool = True
    drop_rh_above_rs: bool = True
    max_rh_rs: float | None = 0.9
    partition_methods: tuple[str, ...] = SRDB_MEASURED_PARTITIONS
    average_location_year: bool = False


def srdb_quality_control(records: pd.DataFrame, rules: SrdbQCRules = SrdbQCRules()
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the SRDB QC steps in order and count what each one drops.

    Parameters
    ----------
    records
        SRDB records (:func:`globalflux.io.srdb.read_srdb`): ``site_id, year_start, year_end,
        Rh_annual, Rs_annual, Partition_method``; ``location_id`` for the location-year average.
    rules
        Which steps run (see :class:`SrdbQCRules`).

    Returns
    -------
    kept
        The records that pass (index reset).
    counts
        One row per step: ``step, rule, n_before, n_removed, n_after`` (``n_removed`` 0 and rule
        ``off`` for a step that did not run; for the average, the records merged away).
    """
    need = ["site_id", "year_start", "year_end", "Rh_annual", "Rs_annual", "Partition_method"]
    missing = [c for c in need if c not in records.columns]
    if missing:
        raise DataError(f"SRDB records lack column(s) {missing}", where="srdb_quality_control",
                        fix="Pass the records of globalflux.io.srdb.read_srdb.")
    if rules.max_rh_rs is not None and not (np.isfinite(rules.max_rh_rs) and rules.max_rh_rs > 0):
        raise DataError(f"max_rh_rs={rules.max_rh_rs!r}", where="sites.srdb_max_rh_rs",
                        fix="Give a positive ratio such as 0.9, or null to keep every ratio.")
    rec = records.reset_index(drop=True)
    counts: list[dict[str, Any]] = []

    def step(name: str, rule: str, drop: np.ndarray | None) -> None:
        nonlocal rec
        n0 = len(rec)
        if drop is not None:
            rec = rec.loc[~np.asarray(drop, dtype=bool)].reset_index(drop=True)
        counts.append({"step": name, "rule": rule if drop is not None else "off",
                       "n_before": n0, "n_removed": n0 - len(rec), "n_after": len(rec)})

    step("exact_duplicate", "same site, years and Rh_annual",
         rec.duplicated(["site_id", "year_start", "year_end", "Rh_annual"]).to_numpy()
         if rules.drop_duplicates else None)
    rh = pd.to_numeric(rec["Rh_annual"], errors="coerce").to_numpy(dtype="float64")
    rs = pd.to_numeric(rec["Rs_annual"], errors="coerce").to_numpy(dtype="float64")
    step("rh_above_rs", "Rh_annual > Rs_annual",
         (np.isfinite(rs) & (rh > rs)) if rules.drop_rh_above_rs else None)
    if rules.max_rh_rs is not None:
        rh = pd.to_numeric(rec["Rh_annual"], errors="coerce").to_numpy(dtype="float64")
        rs = pd.to_numeric(rec["Rs_annual"], errors="coerce").to_numpy(dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = rh / rs
        step("rh_rs_ratio", f"Rh_annual / Rs_annual > {rules.max_rh_rs:g}",
             np.isfinite(ratio) & (rs > 0) & (ratio > rules.max_rh_rs))
    else:
        step("rh_rs_ratio", "", None)
    if rules.partition_methods:
        keep = {str(m).strip().lower() for m in rules.partition_methods}
        pm = rec["Partition_method"].astype("object").where(rec["Partition_method"].notna(), "")
        pm = pm.astype(str).str.strip().str.lower().replace("", "unknown")
        step("partition_method", "Partition_method not in " + ", ".join(rules.partition_methods),
             ~pm.isin(keep).to_numpy())
    else:
        step("partition_method", "", None)
    if rules.average_location_year:
        if "location_id" not in rec.columns:
            raise DataError("no location_id column", where="sites.srdb_average_location_year",
                            fix="Add location ids (globalflux.validation.location_groups) first.")
        n0 = len(rec)
        keys = ["location_id", "year_start", "year_end"]
        num = {c: "mean" for c in ("Rh_annual", "Rs_annual")}
        first = {c: "first" for c in rec.columns if c not in keys and c not in num}
        rec = (rec.groupby(keys, sort=False, dropna=False).agg({**num, **first})
               .reset_index()[list(records.columns)])
        counts.append({"step": "location_year_average", "rule": "mean per location and years",
                       "n_before": n0, "n_removed": n0 - len(rec), "n_after": len(rec)})
    else:
        counts.append({"step": "location_year_average", "rule": "off", "n_before": len(rec),
                       "n_removed": 0, "n_after": len(rec)})
    return rec, pd.DataFrame(counts, columns=["step", "rule", "n_before", "n_removed", "n_after"])
