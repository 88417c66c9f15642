"""Parquet tables: lossless round trips of canonical site tables, and the RDS -> Parquet cache.

Public API
----------
``write_table(df, path)``
    Write a DataFrame to Parquet atomically (a temporary file renamed into place, so an existing
    file is never half-overwritten). Dtypes (including nullable integers, pyarrow strings,
    categoricals and time-zone-aware datetimes), the index and ``df.attrs`` survive.
``read_table(path)``
    Read it back: ``read_table(p)`` equals the frame given to ``write_table(df, p)``.
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

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import pandas as pd

from ..errors import InputFileError

__all__ = ["write_table", "read_table", "file_sha256", "ParquetCache", "default_cache_dir"]

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
