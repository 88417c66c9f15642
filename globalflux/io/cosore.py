"""Read a COSORE tree (continuous soil respiration database) into per-dataset records.

COSORE (Bond-Lamberty et al. 2020, Global Change Biology, doi:10.1111/gcb.15353; CC BY 4.0)
stores one folder per dataset under ``PATH/datasets/<name>/``:

``DESCRIPTION.txt``
    ``KEY: value`` lines: ``CSR_SITE_NAME``, ``CSR_LATITUDE``, ``CSR_LONGITUDE`` (decimal
    degrees), ``CSR_ELEVATION`` (m), ``CSR_TIMEZONE`` (IANA name such as ``Etc/GMT+5``),
    ``CSR_IGBP`` (land cover, free text), ``CSR_PRIMARY_PUB`` (DOI), ...
``PORTS.txt``
    Comma-separated, ``#`` comments, tab-padded: ``CSR_PORT`` (``0`` = all ports),
    ``CSR_MSMT_VAR`` (``Rs`` total soil CO2 efflux, ``Rh`` heterotrophic respiration from
    trenched / girdled / root-exclusion plots, ``NEE``, ``Reco``), ``CSR_TREATMENT``, ...
``data/data.RDS``
    An R-serialised data frame (read with the pure-Python ``rdata`` package): ``CSR_PORT``,
    ``CSR_TIMESTAMP_BEGIN``/``CSR_TIMESTAMP_END`` (UTC, seconds since 1970), ``CSR_FLUX_CO2``
    (µmol CO2 m-2 s-1), soil temperature ``CSR_T<depth cm>`` (°C), soil moisture
    ``CSR_SM<depth cm>`` (documented m3 m-3; several datasets store percent), ``CSR_TAIR``,
    ``CSR_TAIR_AMB`` (°C), and more. ``CSR_RH`` is chamber relative humidity, not heterotrophic
    respiration.

Public API
----------
``read_cosore(path, *, cache_dir=None, datasets=None, progress=None) -> CosoreRaw``
    Reads every dataset. It never stops at one bad dataset: each gets a row in
    ``CosoreRaw.status`` with one of the statuses in :data:`STATUSES` and, when it was rejected,
    a message naming the dataset folder and the file at fault (``status == "error"``). Raise
    for them with :meth:`CosoreRaw.raise_for_errors`.

What is a bad input (status ``"error"``; the dataset is skipped, the others still load):
a DESCRIPTION.txt or PORTS.txt missing or unreadable; latitude/longitude missing, not a number or
out of range; a time zone that is neither an IANA name nor a fixed offset (``UTC+8``); a PORTS
row with an unknown ``CSR_MSMT_VAR``; a PORTS.txt naming an ``Rs`` or ``Rh`` port that has no
records in data.RDS (the port-to-variable mapping cannot be trusted); a corrupt or truncated
data.RDS, or one without ``CSR_PORT`` and a timestamp column.

What is not an error, but reported: no data file (``"no data file"``), an ``CSR_EMBARGO``
entry (``"embargoed"``), no finite ``CSR_FLUX_CO2`` (``"no CO2 flux"``), ports measuring only
NEE and/or Reco (``"NEE only"``, ``"Reco only"``, ``"NEE/Reco only"``). Notes (``status.notes``)
record NEE/Reco ports without data and data ports that PORTS.txt does not list (their records
get no variable and are not used).

Site identity: every COSORE dataset has one DESCRIPTION location, so ``site_id`` is the dataset
folder name (e.g. ``d20190409_ANJILELI``). Two datasets at the same place stay two sites.

Records keep the data.RDS columns unchanged and add ``time`` (UTC, naive ``datetime64[ns]``:
the middle of ``[CSR_TIMESTAMP_BEGIN, CSR_TIMESTAMP_END]`` where both exist, else whichever
exists), ``msmt_var`` and ``treatment`` (from PORTS.txt).
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from ..errors import GlobalfluxError, InputFileError
from .tables import ParquetCache, default_cache_dir, file_sha256

__all__ = [
    "CosoreRaw",
    "read_cosore",
    "read_description",
    "read_ports",
    "resolve_timezone",
    "normalise_igbp",
    "STATUSES",
    "MSMT_VARS",
    "IGBP_CLASSES",
]

log = logging.getLogger("globalflux.io.cosore")

#: Dataset statuses in ``CosoreRaw.status``.
STATUSES = ("loaded", "no data file", "embargoed", "no CO2 flux", "NEE only", "Reco only",
            "NEE/Reco only", "error")
#: Values of ``CSR_MSMT_VAR`` in PORTS.txt.
MSMT_VARS = ("Rs", "Rh", "NEE", "Reco")
#: IGBP classes (MODIS MCD12 type 1 codes) with their FLUXNET abbreviations.
IGBP_CLASSES = {
    "ENF": (1, "Evergreen needleleaf forest"),
    "EBF": (2, "Evergreen broadleaf forest"),
    "DNF": (3, "Deciduous needleleaf forest"),
    "DBF": (4, "Deciduous broadleaf forest"),
    "MF": (5, "Mixed forests"),
    "CSH": (6, "Closed shrubland"),
    "OSH": (7, "Open shrubland"),
    "WSA": (8, "Woody savanna"),
    "SAV": (9, "Savannas"),
    "GRA": (10, "Grassland"),
    "WET": (11, "Wetland"),
    "CRO": (12, "Cropland"),
    "URB": (13, "Urban"),
    "CVM": (14, "Cropland/natural vegetation mosaic"),
    "SNO": (15, "Snow and ice"),
    "BSV": (16, "Barren"),
    "WAT": (17, "Water"),
}
# Free-text CSR_IGBP values seen in COSORE that are not IGBP names; plantations are classed with
# the forest type they are; a desert woodland (sparse trees) is a savanna in IGBP terms.
_IGBP_ALIASES = {
    "broadleaf evergreen forest": "EBF",
    "deciduous broadleaf plantation": "DBF",
    "evergreen needleleaf plantation": "ENF",
    "desert woodland": "SAV",
    "mixed forest": "MF",
    "closed shrublands": "CSH",
    "open shrublands": "OSH",
    "woody savannas": "WSA",
    "savanna": "SAV",
    "grasslands": "GRA",
    "permanent wetlands": "WET",
    "croplands": "CRO",
    "urban and built-up": "URB",
    "barren or sparsely vegetated": "BSV",
}
_RDS_CACHE_NAMESPACE = "cosore-rds-v1"
#: Columns of ``CosoreRaw.sites``.
SITE_COLUMNS = ["site_id", "dataset", "site_name", "lat", "lon", "elevation", "igbp", "igbp_code",
                "igbp_source", "timezone", "primary_pub", "network", "network_site_id", "instrument"]
_DESC_LINE = re.compile(r"^\s*(CSR_[A-Z0-9_]+)\s*:\s*(.*?)\s*$")
_FIXED_OFFSET = re.compile(r"^(?:UTC|GMT)\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


@dataclass(frozen=True)
class CosoreRaw:
    """Everything read from a COSORE tree, before quality control.

    Attributes
    ----------
    path
        The tree read (folder holding ``datasets/``).
    records
        Per loaded dataset (key: dataset name = site_id), the sub-daily data.RDS frame with its
        columns unchanged plus ``time`` (UTC), ``msmt_var`` and ``treatment``.
    sites
        One row per dataset whose DESCRIPTION.txt was valid, indexed by ``site_id``: ``dataset``,
        ``site_name``, ``lat``, ``lon``, ``elevation`` (m), ``igbp`` (FLUXNET abbreviation),
        ``igbp_code`` (1-17), ``igbp_source`` (the CSR_IGBP text), ``timezone``,
        ``primary_pub``, ``network``, ``network_site_id``, ``instrument``.
    ports
        One row per PORTS.txt entry: ``dataset``, ``port``, ``msmt_var``, ``treatment``.
    status
        One row per dataset folder: ``dataset``, ``status`` (see :data:`STATUSES`), ``file``
        (the file at fault or read), ``message``, ``n_records``, ``variables`` (flux variables
        with data, comma-separated), ``notes``.
    """

    path: Path
    records: dict[str, pd.DataFrame] = field(repr=False)
    sites: pd.DataFrame = field(repr=False)
    ports: pd.DataFrame = field(repr=False)
    status: pd.DataFrame = field(repr=False)

    @property
    def errors(self) -> pd.DataFrame:
        """The rows of ``status`` rejected for a bad input."""
        return self.status[self.status["status"] == "error"]

    def raise_for_errors(self) -> None:
        """Raise :class:`InputFileError` naming the first rejected dataset (and how many)."""
        err = self.errors
        if len(err):
            first = err.iloc[0]
            more = f" ({len(err) - 1} more datasets rejected)" if len(err) > 1 else ""
            raise InputFileError(f"{first['message']}{more}", where=first["file"],
                                 fix="Fix or remove the dataset; the other datasets loaded")


# --------------------------------------------------------------------------- small parsers


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read ({exc.strerror})", where=str(path),
                             fix="Check that the file exists and is readable") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_description(path: str | Path) -> dict[str, str]:
    """Parse a DESCRIPTION.txt into ``{CSR_KEY: value}`` (comments and stray lines ignored)."""
    out: dict[str, str] = {}
    for line in _read_text(Path(path)).splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = _DESC_LINE.match(line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2)
    return out


def read_ports(path: str | Path) -> pd.DataFrame:
    """Parse a PORTS.txt into a frame with ``port`` (int), ``msmt_var`` and ``treatment``.

    COSORE PORTS files are comma-separated with tabs as padding, ``#`` comment lines, quoted
    fields holding commas, and rows that may have fewer or more fields than the header.
    """
    path = Path(path)
    lines = [ln.replace("\t", " ") for ln in _read_text(path).splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    rows = [[c.strip() for c in r] for r in csv.reader(lines, skipinitialspace=True)]
    if not rows:
        raise InputFileError("PORTS.txt has no header line", where=str(path),
                             fix="Add the header 'CSR_PORT, CSR_MSMT_VAR, CSR_TREATMENT' and one row per port")
    header = [h.strip().strip('"') for h in rows[0]]
    missing = [c for c in ("CSR_PORT", "CSR_MSMT_VAR") if c not in header]
    if missing:
        raise InputFileError(f"PORTS.txt has no column {', '.join(missing)} (header: {header})",
                             where=str(path), fix="Name the columns as COSORE does: CSR_PORT, CSR_MSMT_VAR")
    ip, iv = header.index("CSR_PORT"), header.index("CSR_MSMT_VAR")
    it = header.index("CSR_TREATMENT") if "CSR_TREATMENT" in header else None
    recs = []
    for k, row in enumerate(rows[1:], start=2):
        if len(row) <= max(ip, iv) or not row[ip]:
            continue
        try:
            port = int(float(row[ip]))
        except ValueError:
            raise InputFileError(f"PORTS.txt row {k}: CSR_PORT {row[ip]!r} is not a port number",
                                 where=str(path), fix="Give integer port numbers (0 = all ports)") from None
        var = _normalise_var(row[iv])
        if var is None:
            raise InputFileError(f"PORTS.txt row {k}: CSR_MSMT_VAR {row[iv]!r} for port {port} is not one "
                                 f"of {', '.join(MSMT_VARS)}", where=str(path),
                                 fix="Use Rs, Rh, NEE or Reco")
        treat = row[it] if it is not None and it < len(row) else ""
        recs.append((port, var, " ".join(treat.split()) or "None"))
    if not recs:
        raise InputFileError("PORTS.txt lists no ports", where=str(path),
                             fix="Add one row per port (CSR_PORT 0 means all ports)")
    df = pd.DataFrame(recs, columns=["port", "msmt_var", "treatment"])
    df["port"] = df["port"].astype("int64")
    # a port listed twice (seen in COSORE) keeps its first entry
    return df.drop_duplicates("port", keep="first").reset_index(drop=True)


def _normalise_var(text: str) -> str | None:
    t = text.strip().strip('"').lower()
    for v in MSMT_VARS:
        if t == v.lower():
            return v
    return None


def resolve_timezone(text: str) -> tzinfo:
    """Map a ``CSR_TIMEZONE`` value to a tzinfo.

    Accepted: IANA names (``Etc/GMT+5`` -- note the POSIX sign: UTC-5 --, ``Asia/Tokyo``,
    ``America/Puerto_Rico``, ``UTC``), and fixed offsets written ``UTC+8``, ``GMT-05:30``
    (ISO sign: UTC+8 is eight hours ahead of UTC).

    Raises
    ------
    ValueError
        For anything else (the caller names the file).
    """
    t = (text or "").strip()
    if not t:
        raise ValueError("is empty")
    m = _FIXED_OFFSET.match(t)
    if m:
        sign = 1 if m.group(1) == "+" else -1
        hours, minutes = int(m.group(2)), int(m.group(3) or 0)
        if hours > 14 or minutes >= 60:
            raise ValueError(f"{t!r} is not a valid UTC offset")
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    if t.upper() in ("UTC", "GMT", "Z"):
        return timezone.utc
    try:
        return ZoneInfo(t)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{t!r} is not a known time zone") from None


def normalise_igbp(text: str) -> str | None:
    """FLUXNET abbreviation (``"DBF"``) of a free-text IGBP class, or None if unrecognised."""
    t = " ".join((text or "").lower().split())
    if not t:
        return None
    if t.upper() in IGBP_CLASSES:
        return t.upper()
    for abbr, (_, name) in IGBP_CLASSES.items():
        if t == name.lower() or t.rstrip("s") == name.lower().rstrip("s"):
            return abbr
    return _IGBP_ALIASES.get(t)


def _number(desc: dict[str, str], key: str, lo: float, hi: float, where: Path, required: bool) -> float:
    text = desc.get(key, "").strip()
    if not text:
        if required:
            raise InputFileError(f"DESCRIPTION.txt has no {key}", where=str(where),
                                 fix=f"Add a line '{key}: <decimal degrees>'")
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        raise InputFileError(f"{key} {text!r} is not a number", where=str(where),
                             fix=f"Write {key} in decimal degrees/metres") from None
    if not (lo <= value <= hi):
        raise InputFileError(f"{key} {text} is outside {lo:g}..{hi:g}", where=str(where),
                             fix=f"Give {key} within {lo:g}..{hi:g} (are latitude and longitude swapped?)")
    return value


def _site_row(name: str, desc: dict[str, str], desc_path: Path) -> dict:
    lat = _number(desc, "CSR_LATITUDE", -90, 90, desc_path, True)
    lon = _number(desc, "CSR_LONGITUDE", -180, 180, desc_path, True)
    elev = desc.get("CSR_ELEVATION", "").strip()
    try:
        elevation = float(elev) if elev else float("nan")
    except ValueError:
        elevation = float("nan")
    tz_text = desc.get("CSR_TIMEZONE", "").strip()
    try:
        resolve_timezone(tz_text)
    except ValueError as exc:
        raise InputFileError(f"CSR_TIMEZONE {exc}", where=str(desc_path),
                             fix="Give an IANA time zone (e.g. Etc/GMT+5, America/New_York) or a fixed offset like UTC-5") from None
    igbp_text = desc.get("CSR_IGBP", "").strip()
    igbp = normalise_igbp(igbp_text)
    return {
        "site_id": name,
        "dataset": name,
        "site_name": desc.get("CSR_SITE_NAME", "").strip(),
        "lat": lat,
        "lon": lon,
        "elevation": elevation,
        "igbp": igbp if igbp else (igbp_text or "unknown"),
        "igbp_code": IGBP_CLASSES[igbp][0] if igbp else 0,
        "igbp_source": igbp_text,
        "timezone": tz_text,
        "primary_pub": desc.get("CSR_PRIMARY_PUB", "").strip(),
        "network": desc.get("CSR_NETWORK", "").strip(),
        "network_site_id": desc.get("CSR_SITE_ID", "").strip(),
        "instrument": desc.get("CSR_INSTRUMENT", "").strip(),
    }


def _embargoed(desc: dict[str, str]) -> bool:
    v = desc.get("CSR_EMBARGO", "").strip().lower()
    return v not in ("", "no", "false", "none", "na", "0")


# --------------------------------------------------------------------------- data.RDS


def _read_rds(path: Path, cache: ParquetCache | None) -> pd.DataFrame:
    key = None
    if cache is not None:
        try:
            key = file_sha256(path)
        except OSError as exc:
            raise InputFileError(f"cannot read ({exc.strerror})", where=str(path),
                                 fix="Check that the file is readable") from None
        hit = cache.get(key)
        if hit is not None:
            return hit
    try:
        import rdata
    except ImportError as exc:  # pragma: no cover - rdata is a dependency
        raise ImportError("reading COSORE needs the 'rdata' package: pip install rdata") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rdata warns about R classes it maps to data.frame
            obj = rdata.read_rds(path)
    except Exception as exc:  # noqa: BLE001 - rdata raises many types on broken files
        raise InputFileError(f"cannot read data.RDS: corrupt or truncated R file "
                             f"({exc.__class__.__name__}: {str(exc)[:120]})", where=str(path),
                             fix="Replace data.RDS with an intact copy from COSORE") from None
    if not isinstance(obj, pd.DataFrame):
        raise InputFileError(f"data.RDS holds a {type(obj).__name__}, not a data frame", where=str(path),
                             fix="data.RDS must be an R data frame of COSORE columns")
    df = obj.reset_index(drop=True)
    df.columns = [str(c) for c in df.columns]
    if cache is not None and key is not None:
        cache.put(key, df)
    return df


def _utc_seconds(col: pd.Series) -> np.ndarray:
    """Timestamps as float seconds since 1970 UTC (rdata gives floats for POSIXct)."""
    if pd.api.types.is_datetime64_any_dtype(col):
        t = pd.DatetimeIndex(col)
        if t.tz is not None:
            t = t.tz_convert("UTC").tz_localize(None)
        return (t.as_unit("ns").asi8 / 1e9).astype("float64")
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _attach_ports(name: str, df: pd.DataFrame, ports: pd.DataFrame, rds: Path, ports_path: Path
                  ) -> tuple[pd.DataFrame, list[str]]:
    notes: list[str] = []
    if "CSR_PORT" not in df.columns:
        if set(ports["port"]) == {0}:
            df = df.assign(CSR_PORT=0)
        else:
            raise InputFileError("data.RDS has no CSR_PORT column but PORTS.txt lists several ports",
                                 where=str(rds), fix="Add CSR_PORT to the data")
    port = pd.to_numeric(df["CSR_PORT"], errors="coerce").astype("Int64")
    flux = pd.to_numeric(df["CSR_FLUX_CO2"], errors="coerce") if "CSR_FLUX_CO2" in df else None
    data_ports = set(int(p) for p in port.dropna().unique())
    listed = dict(zip(ports["port"], zip(ports["msmt_var"], ports["treatment"], strict=True), strict=True))
    default = listed.get(0)
    for p, (var, _) in listed.items():
        if p == 0 or p in data_ports:
            continue
        if var in ("Rs", "Rh"):
            raise InputFileError(
                f"PORTS.txt names port {p} ({var}) but data.RDS has no records for port {p} "
                f"(ports with data: {sorted(data_ports)[:20]})", where=str(ports_path),
                fix="Correct the port numbers in PORTS.txt or remove the port")
        notes.append(f"PORTS.txt port {p} ({var}) has no data")
    unlisted = sorted(p for p in data_ports if p not in listed)
    if unlisted and default is None:
        notes.append(f"data ports {unlisted[:10]} not in PORTS.txt: records not used")
    var_map = {p: v for p, (v, _) in listed.items()}
    trt_map = {p: t for p, (_, t) in listed.items()}
    pser = port.astype("float64")
    msmt = pser.map(var_map)
    treat = pser.map(trt_map)
    if default is not None:
        msmt = msmt.fillna(default[0])
        treat = treat.fillna(default[1])
    out = df.assign(msmt_var=msmt.astype("string"), treatment=treat.astype("string"))
    if flux is not None:
        out["CSR_FLUX_CO2"] = flux
    return out, notes


def _load_dataset(folder: Path, cache: ParquetCache | None) -> tuple[dict, dict | None, pd.DataFrame | None, pd.DataFrame | None]:
    """Read one dataset folder: (status row, site row, ports, records). Raises GlobalfluxError."""
    name = folder.name
    desc_path = folder / "DESCRIPTION.txt"
    ports_path = folder / "PORTS.txt"
    rds = folder / "data" / "data.RDS"
    status = {"dataset": name, "status": "loaded", "file": str(rds), "message": "",
              "n_records": 0, "variables": "", "notes": ""}
    if not desc_path.is_file():
        raise InputFileError("dataset has no DESCRIPTION.txt", where=str(desc_path),
                             fix="Every COSORE dataset folder needs DESCRIPTION.txt")
    desc = read_description(desc_path)
    site = _site_row(name, desc, desc_path)
    if not ports_path.is_file():
        raise InputFileError("dataset has no PORTS.txt", where=str(ports_path),
                             fix="Every COSORE dataset folder needs PORTS.txt")
    ports = read_ports(ports_path).assign(dataset=name)
    if _embargoed(desc):
        status.update(status="embargoed", file=str(desc_path),
                      message=f"embargoed until {desc['CSR_EMBARGO']}")
        return status, site, ports, None
    if not rds.is_file():
        status.update(status="no data file", message="metadata only; data/data.RDS is absent")
        return status, site, ports, None
    df = _read_rds(rds, cache)
    tcols = [c for c in ("CSR_TIMESTAMP_BEGIN", "CSR_TIMESTAMP_END") if c in df.columns]
    if not tcols:
        raise InputFileError("data.RDS has neither CSR_TIMESTAMP_BEGIN nor CSR_TIMESTAMP_END",
                             where=str(rds), fix="COSORE data need UTC timestamps")
    secs = np.column_stack([_utc_seconds(df[c]) for c in tcols])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN
        mid = np.nanmean(secs, axis=1)
    time = pd.to_datetime(np.round(mid * 1e3), unit="ms").as_unit("ns")
    df = df.assign(time=time)
    status["n_records"] = len(df)
    if "CSR_FLUX_CO2" not in df.columns or not pd.to_numeric(df["CSR_FLUX_CO2"], errors="coerce").notna().any():
        status.update(status="no CO2 flux", message="data.RDS has no finite CSR_FLUX_CO2")
        return status, site, ports, None
    df, notes = _attach_ports(name, df, ports, rds, ports_path)
    has = df.loc[df["CSR_FLUX_CO2"].notna() & df["msmt_var"].notna(), "msmt_var"]
    variables = [v for v in MSMT_VARS if (has == v).any()]
    status["variables"] = ",".join(variables)
    status["notes"] = "; ".join(notes)
    if not ({"Rs", "Rh"} & set(variables)):
        kind = {("NEE",): "NEE only", ("Reco",): "Reco only", ("NEE", "Reco"): "NEE/Reco only"}
        status.update(status=kind.get(tuple(variables), "no CO2 flux"),
                      message=f"ports measure {'/'.join(variables) or 'no flux'}, not soil respiration (Rs/Rh)")
        return status, site, ports, None
    return status, site, ports, df


def read_cosore(
    path: str | Path,
    *,
    cache_dir: str | Path | None = None,
    datasets: Iterable[str] | None = None,
    progress: Callable[[str, int, int], None] | bool | None = None,
) -> CosoreRaw:
    """Read every dataset of a COSORE tree.

    Parameters
    ----------
    path
        Folder holding ``datasets/`` (or the ``datasets`` folder itself).
    cache_dir
        Folder of the Parquet cache of converted data.RDS files, keyed by each file's SHA-256
        (default ``~/.cache/globalflux``; ``False`` disables caching).
    datasets
        Only these dataset folder names (default: all).
    progress
        Called as ``progress(dataset, i, n)`` before each dataset is read; or True/False to
        show/hide a progress bar of datasets read (None: a bar unless bars are off,
        :func:`globalflux.progress.set_progress`).

    Returns
    -------
    CosoreRaw
        Records of the loaded datasets, site attributes, ports and a status row per dataset.

    Raises
    ------
    InputFileError
        Only when ``path`` is not a COSORE tree or a requested dataset does not exist. Problems
        inside a dataset are reported in ``status`` instead (see the module docstring).
    """
    root = Path(path)
    if not root.exists():
        raise InputFileError("COSORE folder not found", where=str(root),
                             fix="Give the folder holding datasets/ (e.g. ../shared/data/cosore)")
    dsroot = root / "datasets" if (root / "datasets").is_dir() else root
    folders = sorted(p for p in dsroot.iterdir() if p.is_dir() and (p / "DESCRIPTION.txt").exists()
                     or p.is_dir() and (p / "PORTS.txt").exists())
    if not folders:
        raise InputFileError("no COSORE datasets found (no folder with DESCRIPTION.txt)", where=str(dsroot),
                             fix="Give the folder holding datasets/<name>/DESCRIPTION.txt")
    if datasets is not None:
        wanted = list(dict.fromkeys(datasets))
        byname = {p.name: p for p in folders}
        unknown = [w for w in wanted if w not in byname]
        if unknown:
            raise InputFileError(f"no dataset {unknown[0]!r}", where=str(dsroot),
                                 fix=f"Choose among {len(byname)} datasets, e.g. {next(iter(byname))}")
        folders = [byname[w] for w in wanted]
    cache = None
    if cache_dir is not False:
        cache = ParquetCache(default_cache_dir() if cache_dir is None else cache_dir, _RDS_CACHE_NAMESPACE)

    from ..progress import track

    status_rows, site_rows, port_frames, records = [], [], [], {}
    bar_on = None if progress is None or callable(progress) else bool(progress)
    if callable(progress):
        bar_on = False
    for i, folder in enumerate(track(folders, "COSORE datasets", enabled=bar_on, unit="dataset")):
        if callable(progress):
            progress(folder.name, i, len(folders))
        try:
            st, site, ports, df = _load_dataset(folder, cache)
        except GlobalfluxError as exc:
            status_rows.append({"dataset": folder.name, "status": "error", "file": exc.where or str(folder),
                                "message": f"{folder.name}: {exc.message}", "n_records": 0,
                                "variables": "", "notes": ""})
            log.warning("COSORE dataset %s rejected: %s", folder.name, exc)
            continue
        status_rows.append(st)
        if site is not None:
            site_rows.append(site)
        if ports is not None:
            port_frames.append(ports)
        if df is not None:
            records[folder.name] = df
    sites = pd.DataFrame(site_rows, columns=SITE_COLUMNS).set_index("site_id", drop=False)
    sites.index.name = None
    ports_df = (pd.concat(port_frames, ignore_index=True) if port_frames
                else pd.DataFrame(columns=["port", "msmt_var", "treatment", "dataset"]))
    status = pd.DataFrame(status_rows, columns=["dataset", "status", "file", "message", "n_records",
                                                "variables", "notes"])
    return CosoreRaw(path=root, records=records, sites=sites, ports=ports_df[["dataset", "port", "msmt_var", "treatment"]],
                     status=status)

