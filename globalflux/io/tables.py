"""Parquet tables: lossless round trips of canonical site tables, and the RDS -> Parquet cache.

Public API
----------
``write_table(df, path)``
    Write a DataFrame to Parquet atomically (a temporary file renamed into place, so an existing
    file is never half-overwritten). Dtypes (including nullable integers, pyarrow strings,
    categoricals and time-zone-aware datetimes), the index and ``df.attrs`` survive.
``read_table(path)``
    Read it back: ``read_table(p)`` equals the frame given to ``write_table(df, p)``.
``read_csv_strict(path, *, lenient=False, encoding="utf-8") -> (DataFrame, CsvReport)``
    A CSV read that loses no row silently: records are counted by a strict CSV tokenizer before
    pandas parses them; a record with the wrong number of fields, a quote left open (a stray
    ``"`` that would swallow the rows after it), or a file cut mid-row is an
    :class:`~globalflux.errors.InputFileError` naming the line; ``lenient=True`` drops such
    records instead and counts them in the report. An empty or header-only file is an error.
``file_sha256(path)``
    Hex SHA-256 of a file (the key of cached conversions).
``ParquetCache(root)``
    A folder of Parquet files keyed by the checksum of the file they were converted from.
    :func:`globalflux.io.cosore.read_cosore` uses it for ``data.RDS`` (reading RDS with the
    pure-Python ``rdata`` package takes seconds per large file; the cache makes reruns fast).
    The default root is ``~/.cache/globalflux`` (``$GLOBALFLUX_CACHE`` overrides it); never put
    it inside the repository.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import InputFileError

__all__ = ["write_table", "read_table", "read_csv_strict", "CsvReport", "file_sha256", "ParquetCache",
           "default_cache_dir"]

log = logging.getLogger("globalflux.io.tables")


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to a Parquet file at ``path``, atomically.

    Parameters
    ----------
    df
        Any DataFrame whose columns pyarrow can store. ``df.attrs`` (JSON-serialisable values)
        are kept in the file's pandas metadata.
    path
        Target file; its parent folder is created. An existing file is replaced only once the new
        one is completely written.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    if path.exists() and path.is_dir():
        raise InputFileError("is a folder, not a file", where=str(path),
                             fix="Give a file name ending in .parquet for --out.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, engine="pyarrow", index=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet table written by :func:`write_table` (identical dtypes, index and attrs)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("Parquet table not found", where=str(path), fix="Check the path.")
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise InputFileError(f"cannot read as Parquet ({exc.__class__.__name__}: {exc})",
                             where=str(path), fix="Rewrite the file; it is corrupt or not Parquet.") from None


@dataclass(frozen=True)
class CsvReport:
    """Row accounting of :func:`read_csv_strict`.

    Attributes
    ----------
    n_records
        Data records found by the tokenizer (the header excluded).
    n_malformed
        Records dropped as malformed (only with ``lenient=True``).
    malformed_lines
        First physical line number (1-based, header = line 1) of each dropped record.
    """

    n_records: int
    n_malformed: int = 0
    malformed_lines: tuple[int, ...] = field(default_factory=tuple)


def _problem(row: list[str], n: int) -> str | None:
    if len(row) != n:
        return f"has {len(row)} fields, the header has {n}"
    wide = max(8, n // 4)
    for value in row:
        if ("\n" in value or "\r" in value) and any(
            part.count(",") >= wide for part in value.splitlines()
        ):
            return "has a quote that is not closed on its line (a stray '\"' joins the rows after it)"
    return None


def read_csv_strict(path: str | Path, *, lenient: bool = False, encoding: str = "utf-8",
                    what: str = "CSV") -> tuple[pd.DataFrame, CsvReport]:
    """Read a CSV table, counting records before and after parsing; see the module docstring.

    Parameters
    ----------
    path
        The CSV file.
    lenient
        Drop malformed records (counted in the report) instead of failing.
    encoding
        Text encoding of the file (SRDB is latin-1).
    what
        Name of the table used in messages (e.g. ``"SRDB"``).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode(encoding)
    except UnicodeDecodeError as exc:
        raise InputFileError(f"is not {encoding} text (byte offset {exc.start})", where=str(path),
                             fix=f"Save the {what} table as {encoding}.") from None
    except OSError as exc:
        raise InputFileError(f"cannot read ({exc.strerror or exc.__class__.__name__})", where=str(path),
                             fix="Check the path and its permissions.") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        header = []
    except csv.Error as exc:
        raise InputFileError(f"line 1: not a CSV header ({exc})", where=str(path),
                             fix=f"Give an unmodified {what} table.") from None
    if not header or not any(h.strip() for h in header):
        raise InputFileError("is empty (no header)", where=str(path), fix=f"Give a {what} table with data rows.")
    n = len(header)
    good: list[list[str]] = []
    bad: list[int] = []
    line = reader.line_num
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a quote still open at the end of the file
            problem = f"cannot be tokenized ({exc}); the file may be cut mid-row"
            if not lenient:
                raise InputFileError(f"line {start}: a record {problem}", where=str(path),
                                     fix="Repair that line, or pass the lenient option to drop such "
                                     "records (they are counted).") from None
            bad.append(start)
            break
        line = reader.line_num
        if not row:  # a blank line
            continue
        problem = _problem(row, n)
        if problem is not None:
            if not lenient:
                raise InputFileError(f"line {start}: the record {problem}", where=str(path),
                                     fix="Repair that line, or pass the lenient option to drop such "
                                     "records (they are counted).")
            bad.append(start)
            continue
        good.append(row)
    if not good:
        raise InputFileError("has a header but no data rows" + (f" ({len(bad)} malformed)" if bad else ""),
                             where=str(path), fix=f"Give a {what} table with data rows.")
    if text and not text.endswith(("\n", "\r")):
        log.warning("%s: the last line (%d) has no line end; if the file was cut, its last record "
                    "may be incomplete", path, line)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(good)
    buf.seek(0)
    df = pd.read_csv(buf, low_memory=False)
    if len(df) != len(good):  # pragma: no cover - the tokenizers disagree: never silently
        raise InputFileError(f"{len(good)} records tokenized but {len(df)} parsed", where=str(path),
                             fix="Report this file; it is read inconsistently.")
    return df, CsvReport(n_records=len(good) + len(bad), n_malformed=len(bad), malformed_lines=tuple(bad))


def file_sha256(path: str | Path, *, block: int = 1 << 20) -> str:
    """Hex SHA-256 digest of the bytes of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$GLOBALFLUX_CACHE`` or ``~/.cache/globalflux``."""
    env = os.environ.get("GLOBALFLUX_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "globalflux"


class ParquetCache:
    """Converted tables keyed by the SHA-256 of their source file.

    ``get(key)`` returns the cached frame or ``None``; ``put(key, df)`` stores it (atomically).
    A cache that cannot be written (read-only folder, full disk) only logs: caching is an
    optimisation, never a reason to fail.

    Parameters
    ----------
    root
        Cache folder; entries go to ``root / namespace / <key>.parquet``.
    namespace
        Sub-folder per kind of conversion (e.g. ``"cosore-rds-v1"``); bump its version when the
        conversion changes so stale entries are never read.
    """

    def __init__(self, root: str | Path, namespace: str) -> None:
        self.root = Path(root)
        self.namespace = namespace

    def _path(self, key: str) -> Path:
        return self.root / self.namespace / f"{key}.parquet"

    def get(self, key: str) -> pd.DataFrame | None:
        p = self._path(key)
        if not p.is_file():
            return None
        try:
            return pd.read_parquet(p, engine="pyarrow")
        except Exception as exc:  # a broken entry is dropped and rebuilt
            log.warning("cache entry %s unreadable (%s); rebuilding it", p, exc)
            p.unlink(missing_ok=True)
            return None

    def put(self, key: str, df: pd.DataFrame) -> None:
        try:
            write_table(df, self._path(key))
        except Exception as exc:  # noqa: BLE001 - caching must never fail a run
            log.info("could not write cache entry %s (%s)", self._path(key), exc)
