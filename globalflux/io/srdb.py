"""Read SRDB (global soil respiration database, annual values) and filter it for the RH method.

SRDB: Jian, J. et al. (2021) A restructured and updated global soil respiration database
(SRDB-V5). Earth System Science Data 13, 255-267, doi:10.5194/essd-13-255-2021 (MIT licence).
``srdb-data.csv`` is latin-1 encoded, one row per site-year(s) record.

Public API
----------
``read_srdb(path, *, require=("Rh_annual",), min_midyear=None,
methods=("IRGA", "Gas chromatography"), exclude_manipulated=True,
quality_flags=EXCLUDED_QUALITY_FLAGS) -> SrdbTables``

``SrdbTables.records`` has one row per kept record: ``site_id`` (from the coordinates, see
:func:`coordinate_site_id`: the same place always gets the same id), ``lat``, ``lon``, ``igbp``
(approximate, from ``Ecosystem_type``/``Leaf_habit``/``Biome``; see :func:`srdb_igbp`),
``ecosystem``, ``Study_number``, ``Record_number``, ``Study_midyear``, ``YearsOfData``,
``year_start``/``year_end`` (calendar years the study covers), ``Rh_annual``, ``Rs_annual``
(g C m-2 yr-1), ``Meas_method``, ``Partition_method``, ``Manipulation``, ``Quality_flag``,
``Biome``, ``Ecosystem_type``, ``Leaf_habit``, ``MAT``, ``MAP``, ``Elevation``.
``SrdbTables.removed`` counts the rows removed per reason, in the order applied.

The filters, in order. They adapt the data screening of Zhu et al. (2024) to SRDB annual values:
Zhu et al. mapped heterotrophic respiration with zoned random forests from 8-day RH (DGRsD and
COSORE), not from SRDB annual records, so this is an adaptation, not their filtering. Further
quality control of the annual records (duplicates, Rh > Rs, Rh/Rs ratio, partition methods) is
:func:`globalflux.sites.srdb_quality_control`:

1. ``missing_<col>``: a required flux (``require``) is missing.
2. ``duplicate_record``: SRDB marks the record a known duplicate (``Duplicate_record``).
3. ``method``: ``Meas_method`` is not IRGA or gas chromatography (alkali absorption and soda
   lime underestimate fluxes; EC, gradient and model estimates are not chamber measurements).
   Obvious spellings are normalised first ("Gas chromatograph" -> "Gas chromatography",
   "IGRA" -> "IRGA").
4. ``manipulated``: ``Manipulation`` is anything but empty/"None" (fertilised, warmed, CO2,
   irrigated, ...: not the natural state the maps describe).
5. ``quality_flag``: ``Quality_flag`` holds one of ``quality_flags`` (Q10 potential problem,
   Q11 suspected problem, Q12 known problem, Q13 duplicate?, Q14 inconsistency). Q01-Q04
   (estimated from a figure, from another study, ...) are kept, as SRDB users do.
6. ``coordinates``: latitude/longitude missing, outside -90..90 / -180..180, or exactly (0, 0).
7. ``negative_flux``: a required flux is negative (heterotrophic respiration cannot be).
8. ``before_min_midyear``: ``Study_midyear`` below ``min_midyear`` (e.g. 2000.5 for the MODIS
   era, as Zhu et al. 2024's 8-day data start in 2000; the recipe decides).

A renamed or missing column raises :class:`InputFileError` naming the file and the column.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputFileError
from .tables import read_csv_strict

__all__ = ["SrdbTables", "read_srdb", "coordinate_site_id", "srdb_igbp", "EXCLUDED_QUALITY_FLAGS",
           "REQUIRED_COLUMNS"]

#: Quality_flag codes whose records are dropped by default.
EXCLUDED_QUALITY_FLAGS = ("Q10", "Q11", "Q12", "Q13", "Q14")
#: Columns read_srdb needs besides the ``require`` fluxes.
REQUIRED_COLUMNS = ("Record_number", "Study_number", "Latitude", "Longitude", "Study_midyear",
                    "YearsOfData", "Meas_method", "Manipulation", "Quality_flag", "Ecosystem_type",
                    "Rs_annual", "Rh_annual")
_OPTIONAL = ("Duplicate_record", "Partition_method", "Biome", "Leaf_habit", "MAT", "MAP",
             "Elevation", "Site_name", "Country", "Author")
_METHOD_ALIASES = {"gas chromatograph": "Gas chromatography", "gas chromatography": "Gas chromatography",
                   "gc": "Gas chromatography", "irga": "IRGA", "igra": "IRGA"}


@dataclass(frozen=True)
class SrdbTables:
    """Filtered SRDB records.

    Attributes
    ----------
    records
        Kept records (see the module docstring for the columns).
    removed
        ``reason, n_removed`` in the order the filters ran, plus ``read`` and ``kept`` rows.
    sites
        One row per ``site_id``: lat, lon, igbp, ecosystem, n_records.
    path
        The CSV read.
    """

    records: pd.DataFrame
    removed: pd.DataFrame
    sites: pd.DataFrame = field(repr=False)
    path: Path = field(default=Path("."))


def coordinate_site_id(lat, lon) -> np.ndarray:
    """Stable site ids from coordinates: ``"srdb_+56.6300_-099.9400"`` (rounded to 1e-4 degree)."""
    la = np.round(np.asarray(lat, dtype="float64"), 4)
    lo = np.round(np.asarray(lon, dtype="float64"), 4)
    return np.array([f"srdb_{a:+08.4f}_{b:+09.4f}" for a, b in zip(la.ravel(), lo.ravel(), strict=True)],
                    dtype=object).reshape(la.shape)


def srdb_igbp(ecosystem, leaf_habit, biome) -> str:
    """Approximate IGBP abbreviation of an SRDB record.

    Forest: Deciduous -> DBF, Mixed -> MF, Evergreen -> EBF in tropical/subtropical biomes and ENF
    elsewhere; Grassland -> GRA; Agriculture/Cropland/Orchard -> CRO; Shrubland/Tundra -> OSH;
    Savanna -> SAV; Wetland/Peatland -> WET; Desert/Bare -> BSV; Urban -> URB; else "unknown".
    """
    def s(x) -> str:
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA else str(x).strip().lower()

    e, leaf, b = s(ecosystem), s(leaf_habit), s(biome)
    if e == "forest":
        if leaf == "deciduous":
            return "DBF"
        if leaf == "mixed":
            return "MF"
        if leaf == "evergreen":
            return "EBF" if b in ("tropical", "subtropical", "sub-tropical") else "ENF"
        return "MF"
    return {"grassland": "GRA", "agriculture": "CRO", "cropland": "CRO", "orchard": "CRO",
            "shrubland": "OSH", "tundra": "OSH", "savanna": "SAV", "wetland": "WET", "peatland": "WET",
            "desert": "BSV", "bare": "BSV", "urban": "URB"}.get(e, "unknown")


def _find_csv(path: Path) -> Path:
    if path.is_dir():
        path = path / "srdb-data.csv"
    if not path.is_file():
        raise InputFileError("SRDB data file not found", where=str(path),
                             fix="Give the SRDB folder or its srdb-data.csv (e.g. ../shared/data/srdb)")
    return path


def _has_flag(flags: pd.Series, codes: tuple[str, ...]) -> np.ndarray:
    wanted = {c.strip().upper() for c in codes}
    # flags are comma/space separated ("Q01, Q11"); "Q1" in old rows means Q01
    def hit(text) -> bool:
        if text is None or text is pd.NA or (isinstance(text, float) and math.isnan(text)):
            return False
        return any(tok.strip().upper() in wanted for tok in str(text).replace(";", ",").replace(" ", ",").split(","))
    return np.fromiter((hit(t) for t in flags.to_numpy(dtype=object)), dtype=bool, count=len(flags))


def read_srdb(
    path: str | Path,
    *,
    require: tuple[str, ...] = ("Rh_annual",),
    min_midyear: float | None = None,
    methods: tuple[str, ...] = ("IRGA", "Gas chromatography"),
    exclude_manipulated: bool = True,
    quality_flags: tuple[str, ...] = EXCLUDED_QUALITY_FLAGS,
    lenient: bool = False,
) -> SrdbTables:
    """Read ``srdb-data.csv`` and apply the RH-method filters (see the module docstring).

    Parameters
    ----------
    path
        SRDB folder or the ``srdb-data.csv`` file.
    require
        Flux columns that must be present and non-negative (``"Rh_annual"``, ``"Rs_annual"``).
    min_midyear
        Keep ``Study_midyear >= min_midyear`` (e.g. 2000.5); None keeps every year.
    methods
        Allowed ``Meas_method`` values (after normalisation); empty keeps all.
    exclude_manipulated
        Drop manipulated records.
    quality_flags
        Drop records carrying any of these ``Quality_flag`` codes.
    lenient
        False (default): a malformed CSV record (wrong field count, stray quote, file cut
        mid-row) is an :class:`InputFileError` naming its line. True: such records are dropped
        and counted as ``malformed_row`` in ``removed``.

    Returns
    -------
    SrdbTables
    """
    csv = _find_csv(Path(path))
    df, report = read_csv_strict(csv, lenient=lenient, encoding="latin-1", what="SRDB")
    needed = list(dict.fromkeys(list(REQUIRED_COLUMNS) + list(require)))
    missing = [c for c in needed if c not in df.columns]
    if missing:
        hint = difflib.get_close_matches(missing[0], [str(c) for c in df.columns], n=1)
        also = f" (found {hint[0]!r}: renamed?)" if hint else ""
        raise InputFileError(f"column {missing[0]!r} is missing{also}", where=str(csv),
                             fix=f"srdb-data.csv needs the SRDB V5 columns {', '.join(needed)}")
    for c in _OPTIONAL:
        if c not in df.columns:
            df[c] = np.nan
    n_read = report.n_records
    removed: list[tuple[str, int]] = [("malformed_row", report.n_malformed)] if lenient else []

    def drop(mask: np.ndarray, reason: str) -> None:
        nonlocal df
        mask = np.asarray(mask, dtype=bool)
        removed.append((reason, int(mask.sum())))
        df = df.loc[~mask]

    for c in ("Latitude", "Longitude", "Study_midyear", "YearsOfData", "Rs_annual", "Rh_annual", *require):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in require:
        drop(df[c].isna().to_numpy(), f"missing_{c}")
    dup = df["Duplicate_record"].astype("string").str.strip().fillna("")
    drop((dup != "").to_numpy(dtype=bool), "duplicate_record")
    meth = df["Meas_method"].astype("string").str.strip()
    df["Meas_method"] = meth.map(lambda m: _METHOD_ALIASES.get(str(m).lower(), m) if m is not pd.NA else m)
    if methods:
        allowed = {_METHOD_ALIASES.get(m.lower(), m) for m in methods}
        drop((~df["Meas_method"].isin(allowed)).to_numpy(dtype=bool), "method")
    if exclude_manipulated:
        man = df["Manipulation"].astype("string").str.strip().fillna("").str.lower()
        drop((~man.isin(["", "none"])).to_numpy(dtype=bool), "manipulated")
    if quality_flags:
        drop(_has_flag(df["Quality_flag"], tuple(quality_flags)), "quality_flag")
    lat, lon = df["Latitude"].to_numpy(), df["Longitude"].to_numpy()
    with np.errstate(invalid="ignore"):
        badc = (~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90) | (np.abs(lon) > 180)
                | ((lat == 0) & (lon == 0)))
    drop(badc, "coordinates")
    neg = np.zeros(len(df), dtype=bool)
    for c in require:
        neg |= (df[c] < 0).to_numpy(dtype=bool)
    drop(neg, "negative_flux")
    if min_midyear is not None:
        drop((~(df["Study_midyear"] >= min_midyear)).to_numpy(dtype=bool), "before_min_midyear")

    years = df["YearsOfData"].where(df["YearsOfData"] > 0, 1.0).fillna(1.0)
    start = df["Study_midyear"] - years / 2.0
    end = df["Study_midyear"] + years / 2.0
    out = pd.DataFrame({
        "site_id": pd.array(coordinate_site_id(df["Latitude"], df["Longitude"]), dtype="string"),
        "lat": df["Latitude"].astype("float64"),
        "lon": df["Longitude"].astype("float64"),
        "igbp": pd.array([srdb_igbp(e, le, b) for e, le, b in
                          zip(df["Ecosystem_type"], df["Leaf_habit"], df["Biome"], strict=True)], dtype="string"),
        "ecosystem": df["Ecosystem_type"].astype("string").str.strip(),
        "Study_number": pd.to_numeric(df["Study_number"], errors="coerce").astype("Int64"),
        "Record_number": pd.to_numeric(df["Record_number"], errors="coerce").astype("Int64"),
        "Study_midyear": df["Study_midyear"].astype("float64"),
        "YearsOfData": df["YearsOfData"].astype("float64"),
        "year_start": np.floor(start + 1e-9).astype("Int64"),
        "year_end": (np.ceil(end - 1e-9) - 1).astype("Int64"),
        "Rh_annual": df["Rh_annual"].astype("float64"),
        "Rs_annual": df["Rs_annual"].astype("float64"),
    })
    for c in ("Meas_method", "Partition_method", "Manipulation", "Quality_flag", "Biome",
              "Ecosystem_type", "Leaf_habit", "Site_name", "Country", "Author"):
        out[c] = df[c].astype("string").str.strip()
    for c in ("MAT", "MAP", "Elevation"):
        out[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    out = out.reset_index(drop=True)
    out.attrs = {"source": "SRDB V5 (Jian et al. 2021, doi:10.5194/essd-13-255-2021), MIT",
                 "units": "Rh_annual, Rs_annual: g C m-2 yr-1"}
    rem = pd.DataFrame([("read", n_read), *removed, ("kept", len(out))], columns=["reason", "n_removed"])
    sites = (out.groupby("site_id", sort=True)
             .agg(lat=("lat", "first"), lon=("lon", "first"), igbp=("igbp", "first"),
                  ecosystem=("ecosystem", "first"), n_records=("lat", "size")).reset_index())
    return SrdbTables(records=out, removed=rem, sites=sites, path=csv)
