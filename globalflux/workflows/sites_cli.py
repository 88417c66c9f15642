"""``globalflux sites cosore|srdb``: ingest site observations into canonical Parquet tables.

``globalflux sites cosore PATH --out F.parquet [--variable Rs|Rh|all] [--aggregation raw|daily|8day]
[--min-year N] [--cache-dir D]``
    Reads every COSORE dataset under PATH, applies the QC of :mod:`globalflux.sites`, writes the
    long table to ``F.parquet``, the site attributes to ``F.sites.parquet``, the per-dataset
    summary to ``F.summary.csv`` and the QC counts to ``F.qc.csv``, and prints the summary
    (sites, days, Rs/Rh days, drivers available, records removed per QC reason).

    Exit codes: 0 when every dataset loaded or was reported as having nothing to load (no data
    file, NEE only, ...); **2 when any dataset was rejected for a bad input** (corrupt RDS,
    latitude out of range, unknown time zone, PORTS.txt naming a port without data, ...). The
    other datasets are still ingested and written first, so one broken dataset never costs the
    rest; the error lines name each rejected dataset and file.

``globalflux sites srdb PATH --out F.parquet [--min-midyear X] [--variable Rh|Rs]``
    Reads SRDB, applies the RH-method filters of :mod:`globalflux.io.srdb`, writes the kept
    records and prints the rows removed per reason. A renamed column exits 2 naming it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputFileError

__all__ = ["main", "cosore_main", "srdb_main"]


def _sibling(out: Path, suffix: str) -> Path:
    name = out.name[: -len(".parquet")] if out.name.endswith(".parquet") else out.name
    return out.with_name(name + suffix)


def _check_outputs(args, suffixes: tuple[str, ...]) -> Path:
    """Check --out and its sibling files before reading anything (existing ones need --overwrite)."""
    from ..io.paths import check_output_file

    out = Path(args.out)
    if out.suffix.lower() != ".parquet":
        raise InputFileError(f"got {out.name!r}", where=f"--out {out}",
                             fix="Give a file name ending in .parquet.")
    overwrite = bool(getattr(args, "overwrite", False))
    for p in (out, *(_sibling(out, s) for s in suffixes)):
        check_output_file(p, what="--out", overwrite=overwrite)
    return out


def _print(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")


def cosore_main(args) -> int:
    from ..io.cosore import read_cosore
    from ..io.tables import write_table
    from ..report import markdown_table
    from ..sites import cosore_tables

    out = _check_outputs(args, (".sites.parquet", ".summary.csv", ".qc.csv"))
    variables = ("Rs", "Rh") if args.variable == "all" else (args.variable,)
    cache = getattr(args, "cache_dir", None)
    raw = read_cosore(args.path, cache_dir=cache)
    tabs = cosore_tables(raw, aggregation=args.aggregation, variables=variables, min_year=args.min_year)
    write_table(tabs.long, out)
    write_table(tabs.sites, _sibling(out, ".sites.parquet"))
    from ..io.paths import atomic_write_text

    atomic_write_text(_sibling(out, ".summary.csv"), tabs.summary.to_csv(index=False))
    atomic_write_text(_sibling(out, ".qc.csv"), tabs.qc.to_csv(index=False))

    s = tabs.summary
    show = s[["dataset", "status", "days", "Rs_days", "Rh_days", "drivers", "swc_unit", "removed"]]
    _print(markdown_table(show))
    loaded = s[s["status"] == "loaded"]
    _print("")
    _print(f"datasets: {len(s)}; loaded: {len(loaded)}; sites with data: {(loaded['days'] > 0).sum()}; "
           f"days: {int(loaded['days'].sum())}; Rs days: {int(loaded['Rs_days'].sum())}; "
           f"Rh days: {int(loaded['Rh_days'].sum())}")
    not_loaded = s[s["status"] != "loaded"].groupby("status").size()
    if len(not_loaded):
        _print("not loaded: " + ", ".join(f"{k}: {v}" for k, v in not_loaded.items()))
    if len(tabs.qc):
        per_reason = tabs.qc.groupby(["reason", "variable"])["n_removed"].sum().reset_index()
        _print("")
        _print("records removed per QC reason:")
        _print(markdown_table(per_reason))
    _print("")
    _print(f"wrote {out} ({len(tabs.long)} rows, {args.aggregation}), {_sibling(out, '.sites.parquet').name}, "
           f"{_sibling(out, '.summary.csv').name}, {_sibling(out, '.qc.csv').name}")
    errors = raw.errors
    if len(errors):
        for _, row in errors.iterrows():
            print(f"globalflux: error: {row['file']}: {row['message']}", file=sys.stderr)
        print(f"globalflux: {len(errors)} dataset(s) rejected for bad input; the others were written. "
              "Fix or remove the rejected datasets.", file=sys.stderr)
        return 2
    return 0


def srdb_main(args) -> int:
    from ..io.srdb import read_srdb
    from ..io.tables import write_table
    from ..report import markdown_table

    out = _check_outputs(args, (".sites.parquet",))
    variable = getattr(args, "variable", None) or "Rh"
    require = (f"{variable}_annual",)
    tabs = read_srdb(args.path, require=require, min_midyear=args.min_midyear,
                     lenient=bool(getattr(args, "lenient", False)))
    write_table(tabs.records, out)
    write_table(tabs.sites, _sibling(out, ".sites.parquet"))
    _print(markdown_table(tabs.removed))
    r = tabs.records
    _print("")
    _print(f"kept {len(r)} records with {require[0]} at {r['site_id'].nunique()} locations "
           f"(Study_midyear {r['Study_midyear'].min():.1f}-{r['Study_midyear'].max():.1f})"
           if len(r) else f"kept 0 records with {require[0]}")
    _print(f"wrote {out} and {_sibling(out, '.sites.parquet').name}")
    return 0


def main(args) -> int:
    """Entry point of ``globalflux sites``; returns the exit code."""
    if args.source == "cosore":
        return cosore_main(args)
    if args.source == "srdb":
        return srdb_main(args)
    raise InputFileError(f"unknown source {args.source!r}", where="sites", fix="Use cosore or srdb")

