"""Bad inputs, table-driven: every one exits 2 with ONE first stderr line naming the input, and
nothing is written or deleted anywhere (issue 12).

Each case runs the CLI in-process (``globalflux.cli.main``) inside a scratch tree that holds

* ``work/keep.txt``  -- a sentinel file beside every output (outputs go to ``work/...``),
* ``keep/``          -- a sentinel folder that recipe inputs point at (``cube.static_root``,
  ``synthetic.sites_file``, ``--out`` of ``--overwrite``...),
* inputs built by the case (recipes, SRDB tables, map stores, marked run folders).

The whole tree (bytes, modification times, folder listings) is snapshotted before the call and
compared after it: a bad input may not create, change or delete any file, not even a temporary.
Most cases fail in the preflight, within a fraction of a second.
"""

from __future__ import annotations

import csv
import http.server
import io
import json
import os
import shutil
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

import _mapjob
from globalflux.cli import main

REPO = Path(__file__).resolve().parents[1]
SRDB_FIXTURE = REPO / "tests" / "fixtures" / "srdb" / "srdb-data.csv"

# --------------------------------------------------------------------------------- scaffolding


@dataclass
class Ctx:
    tmp: Path
    work: Path
    keep: Path
    recipe: Path
    out: Path
    store: Path
    srdb: Path
    http_port: int

    def fmt(self, text: str) -> str:
        return text.format(tmp=self.tmp, work=self.work, keep=self.keep, recipe=self.recipe,
                           out=self.out, store=self.store, srdb=self.srdb, port=self.http_port)


def _snapshot(root: Path) -> dict[str, Any]:
    snap: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        st = os.lstat(d)
        snap[str(d.relative_to(root)) + "/"] = (sorted(dirnames), sorted(filenames), st.st_mtime_ns)
        for f in filenames:
            p = d / f
            st = os.lstat(p)
            snap[str(p.relative_to(root))] = (p.read_bytes(), st.st_mtime_ns, st.st_mode)
    return snap


# base recipes (as data); a case changes keys with `edit` ---------------------------------------

def demo_recipe(ctx: Ctx) -> dict:
    return {"name": "t", "workflow": "synthetic_zoned_rh",
            "synthetic": {"ny": 32, "nx": 32, "n_sites": 20},
            "forest": {"n_estimators": 5}}


def static_recipe(ctx: Ctx) -> dict:
    return {"name": "s", "workflow": "static_cube",
            "cube": {"source": "static", "static_root": str(ctx.keep),
                     "grid": {"crs": "EPSG:4326", "resolution": 0.5, "bbox": [0.0, 0.0, 10.0, 10.0]},
                     "store": "x.zarr"}}


def srdb_recipe(ctx: Ctx) -> dict:
    return {"name": "r", "workflow": "srdb_rh_annual",
            "sites": {"source": "srdb", "srdb_path": str(ctx.srdb)},
            "cube": {"source": "static", "static_root": str(ctx.keep)}}


def stac_recipe(ctx: Ctx) -> dict:
    return {"name": "c", "workflow": "stac_cube",
            "cube": {"source": "rasters",
                     "rasters": {"lst": {"path": str(ctx.keep / "a.txt")}},
                     "grid": {"crs": "EPSG:4326", "resolution": 0.5, "bbox": [0.0, 0.0, 10.0, 10.0]}}}


BASES = {"demo": demo_recipe, "static": static_recipe, "srdb": srdb_recipe, "stac": stac_recipe}


def _set(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


@dataclass
class Case:
    id: str
    argv: list[str]
    expect: str  # must appear in the FIRST line of stderr (formatted with the Ctx)
    base: str | None = None  # write this base recipe to {recipe}
    edit: dict[str, Any] = field(default_factory=dict)  # dotted key -> value (templates allowed)
    text: str | None = None  # or write this raw text/bytes to {recipe}
    setup: Callable[[Ctx], None] | None = None
    code: int = 2
    cwd_work: bool = False  # run from work/ (default run folder runs/<name> is relative)


# setups ---------------------------------------------------------------------------------------

def _rows() -> tuple[list[str], list[list[str]]]:
    with open(SRDB_FIXTURE, encoding="latin-1", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _write_csv(path: Path, header, rows, *, tail: str = "") -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue() + tail, encoding="latin-1")


def srdb_stray_quote(ctx: Ctx) -> None:
    header, rows = _rows()
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    lines = text.getvalue().splitlines(keepends=True)
    i = header.index("Site_name")
    parts = lines[3].split(",")  # line 4 of the file: a stray quote opens the Site_name field
    parts[i] = '"' + parts[i]
    lines[3] = ",".join(parts)
    (ctx.srdb / "srdb-data.csv").write_text("".join(lines), encoding="latin-1")


def srdb_cut(ctx: Ctx) -> None:
    header, rows = _rows()
    _write_csv(ctx.srdb / "srdb-data.csv", header, rows[:-1])
    with open(ctx.srdb / "srdb-data.csv", "a", encoding="latin-1") as f:
        f.write(",".join(rows[-1][:20]))  # the last row cut after 20 of 85 fields, no newline


def srdb_header_only(ctx: Ctx) -> None:
    header, _ = _rows()
    _write_csv(ctx.srdb / "srdb-data.csv", header, [])


def srdb_empty(ctx: Ctx) -> None:
    (ctx.srdb / "srdb-data.csv").write_bytes(b"")


def srdb_extra_field(ctx: Ctx) -> None:
    header, rows = _rows()
    rows[6] = rows[6] + ["surplus"]
    _write_csv(ctx.srdb / "srdb-data.csv", header, rows)


def srdb_short_row(ctx: Ctx) -> None:
    header, rows = _rows()
    rows[9] = rows[9][:40]
    _write_csv(ctx.srdb / "srdb-data.csv", header, rows)


def srdb_renamed_column(ctx: Ctx) -> None:
    header, rows = _rows()
    header = ["RH_annual_gC" if h == "Rh_annual" else h for h in header]
    _write_csv(ctx.srdb / "srdb-data.csv", header, rows)


def srdb_ok(ctx: Ctx) -> None:
    shutil.copy(SRDB_FIXTURE, ctx.srdb / "srdb-data.csv")


def srdb_ok_and_out_exists(ctx: Ctx) -> None:
    srdb_ok(ctx)
    (ctx.work / "s.parquet").write_bytes(b"user's own file")


def srdb_ok_and_folder(ctx: Ctx) -> None:
    srdb_ok(ctx)
    (ctx.work / "d.parquet").mkdir()


def marked_run(ctx: Ctx, *, recipe_text: str = "name: other\nworkflow: static_cube\n",
               sha: str = "0" * 64) -> None:
    ctx.out.mkdir()
    (ctx.out / ".globalflux-run.json").write_text(json.dumps(
        {"globalflux_run": 1, "name": "other", "workflow": "static_cube", "recipe_sha256": sha}))
    (ctx.out / "recipe.yaml").write_text(recipe_text)
    (ctx.out / "maps").mkdir()
    (ctx.out / "maps" / "result.txt").write_text("1,396 files of a finished run")


def out_with_user_files(ctx: Ctx) -> None:
    ctx.out.mkdir()
    (ctx.out / "thesis.tex").write_text("years of work")


def out_is_file(ctx: Ctx) -> None:
    ctx.out.write_text("a file where the run folder should go")


def existing_tiff(ctx: Ctx) -> None:
    (ctx.work / "x.tiff").write_bytes(b"II*\x00 the user's GeoTIFF")


def existing_bench(ctx: Ctx) -> None:
    ctx.out.mkdir()
    (ctx.out / "bench.csv").write_text("bench,what,value\nold,run,1\n")


def _chunk(store: Path) -> Path:
    chunks = sorted(p for p in (store / "rh" / "c").rglob("*") if p.is_file())
    return chunks[len(chunks) // 2]


def missing_chunk(ctx: Ctx) -> None:
    _chunk(ctx.store).unlink()


def truncated_chunk(ctx: Ctx) -> None:
    p = _chunk(ctx.store)
    p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])


def corrupt_chunk(ctx: Ctx) -> None:
    p = _chunk(ctx.store)
    n = p.stat().st_size
    p.write_bytes(bytes((i * 37 + 11) % 256 for i in range(n)))  # same size, garbage


def big_recipe(ctx: Ctx) -> None:
    ctx.recipe.write_text("name: t\nworkflow: synthetic_zoned_rh\n" + "# padding\n" * 120_000)


_LOL = '"lol"'
BOMB = "".join(
    f"{c}: &{c} [{', '.join([('*' + p) if p else _LOL] * 9)}]\n"
    for c, p in zip("abcdefghi", ["", *"abcdefgh"])
) + "name: t\nworkflow: synthetic_zoned_rh\n"

DEEP = "name: t\nworkflow: synthetic_zoned_rh\ndescription: " + "[" * 200 + "]" * 200 + "\n"

# ------------------------------------------------------------------------------------ the table

RUN = ["run", "{recipe}", "--out", "{out}"]
VAL = ["validate", "{recipe}"]

CASES: list[Case] = [
    # --- recipe files: YAML itself
    Case("yaml-alias-bomb", VAL, "{recipe}: expands to more than", text=BOMB),
    Case("yaml-recursive-alias", VAL, "{recipe}: a recursive alias", text="a: &a [*a]\nname: t\n"),
    Case("yaml-deep-nesting", VAL, "{recipe}: nesting deeper than", text=DEEP),
    Case("yaml-not-utf8", VAL, "{recipe}: is not UTF-8 text (byte 0xe9 at byte offset 9)",
         text=b"name: caf\xe9\nworkflow: static_cube\n"),
    Case("yaml-too-large", VAL, "{recipe}: is ", setup=big_recipe),
    Case("yaml-top-level-list", VAL, "{recipe}: top level is a list", text="- a\n- b\n"),
    Case("yaml-syntax", VAL, "{recipe}: not valid YAML at line", text="name: t\n  workflow: [\n"),
    Case("recipe-missing", ["validate", "{tmp}/nope.yaml"], "{tmp}/nope.yaml: recipe file not found"),
    Case("recipe-is-folder", ["validate", "{keep}"], "{keep}: recipe file not found"),
    Case("unknown-key", VAL, "{recipe}: synthetic.n_sitez: unknown key", base="demo",
         edit={"synthetic.n_sitez": 3}),
    Case("unknown-workflow", VAL, "{recipe}: workflow: got 'nope'", base="demo", edit={"workflow": "nope"}),
    Case("unused-section", VAL, "lstm: section 'lstm' is not used", base="static", edit={"lstm": {}}),
    # --- map: every check before a cluster starts or a byte is written (valid-package cases,
    # such as a cube lacking a variable or mismatched units, are in tests/test_model_package.py)
    Case("map-not-a-package", ["map", "{keep}", "{store}", "--out", "{work}/m.zarr"],
         "{keep}: is not a model package (no model.json)"),
    Case("map-model-missing", ["map", "{tmp}/nope", "{store}", "--out", "{work}/m.zarr"],
         "{tmp}/nope: does not exist"),
    Case("map-out-is-file", ["map", "{keep}", "{store}", "--out", "{work}/keep.txt"],
         "--out {work}/keep.txt: exists and is not a folder"),
    Case("map-out-under-file", ["map", "{keep}", "{store}", "--out", "{work}/keep.txt/m.zarr"],
         "--out {work}/keep.txt/m.zarr: '{work}/keep.txt' is a file"),
    Case("map-out-proc", ["map", "{keep}", "{store}", "--out", "/proc/m.zarr"],
         "--out /proc/m.zarr: is a system folder"),
    Case("map-out-exists", ["map", "{keep}", "{store}", "--out", "{keep}"], "{keep}: exists"),
    Case("map-resume-foreign-folder", ["map", "{keep}", "{store}", "--out", "{keep}", "--resume"],
         "{keep}: is not a resumable globalflux store"),
    Case("map-bad-bbox", ["map", "{keep}", "{store}", "--out", "{work}/m.zarr", "--bbox", "1,2,3"],
         "--bbox: '1,2,3' is not W,S,E,N"),
    Case("map-bad-time", ["map", "{keep}", "{store}", "--out", "{work}/m.zarr", "--time", "x"],
         "--time: 'x' is not START/END"),
    # --- names that would become paths outside --out
    Case("name-parent-default-out", ["run", "{recipe}"], "name: '../../x' contains a path separator",
         base="demo", edit={"name": "../../x"}, cwd_work=True),
    Case("name-absolute", ["run", "{recipe}"], "name: ", base="demo", edit={"name": "{keep}"},
         cwd_work=True),
    Case("name-with-separator", VAL, "name: 'a/b' contains a path separator", base="demo",
         edit={"name": "a/b"}),
    Case("name-empty", VAL, "name: '' is empty", base="demo", edit={"name": ""}),
    Case("store-parent", RUN, "cube.store: '../escape.zarr' contains a path separator", base="static",
         edit={"cube.store": "../escape.zarr"}),
    Case("store-absolute-existing-folder", RUN, "cube.store: '{keep}' contains a path separator",
         base="static", edit={"cube.store": "{keep}"}),
    Case("store-dotdot", RUN, "cube.store: '..' points to a parent folder", base="static",
         edit={"cube.store": ".."}),
    Case("store-hidden", RUN, "cube.store: '.x' is a hidden name", base="static", edit={"cube.store": ".x"}),
    # --- numbers: NaN, inf, bounds, seeds, byte sizes
    Case("nan-resolution", RUN, "{recipe}: synthetic.resolution: got nan", base="demo",
         edit={"synthetic.resolution": float("nan")}),
    Case("inf-resolution", RUN, "{recipe}: synthetic.resolution: got inf", base="demo",
         edit={"synthetic.resolution": float("inf")}),
    Case("neg-inf-grid-resolution", RUN, "{recipe}: cube.grid.resolution: got -inf", base="static",
         edit={"cube.grid.resolution": float("-inf")}),
    Case("nan-chunk-mb", RUN, "{recipe}: cube.chunk_mb: got nan", base="static",
         edit={"cube.chunk_mb": float("nan")}),
    Case("nan-in-bbox-list", RUN, "{recipe}: cube.grid.bbox[2]: got nan", base="static",
         edit={"cube.grid.bbox": [0.0, 0.0, float("nan"), 10.0]}),
    Case("threshold-above-max", RUN, "{recipe}: cube.land_threshold: got 1.5", base="static",
         edit={"cube.land_threshold": 1.5}),
    Case("negative-seed", RUN, "{recipe}: synthetic.seed: got -1", base="demo", edit={"synthetic.seed": -1}),
    Case("negative-forest-seed", RUN, "{recipe}: forest.seed: got -5", base="demo", edit={"forest.seed": -5}),
    Case("huge-zones-seed", RUN, "{recipe}: zones.seed: got 1099511627776", base="demo",
         edit={"zones.seed": 2**40}),
    Case("memory-lots", RUN, "mapping.memory_limit: got 'lots', not a byte size", base="demo",
         edit={"mapping.memory_limit": "lots"}),
    Case("memory-negative", RUN, "mapping.memory_limit: got '-5GB'", base="demo",
         edit={"mapping.memory_limit": "-5GB"}),
    Case("scheduler-timeout-zero", RUN, "{recipe}: mapping.scheduler_timeout: got 0", base="demo",
         edit={"mapping.scheduler_timeout": 0}),
    Case("dashboard-host-bad", RUN, "mapping.dashboard_host: got 'everywhere'", base="demo",
         edit={"mapping.dashboard_host": "everywhere"}),
    Case("string-for-int", RUN, "{recipe}: synthetic.ny: got 'many'", base="demo",
         edit={"synthetic.ny": "many"}),
    # --- CRS and grids
    Case("crs-unknown-epsg", RUN, "cube.grid.crs: 'EPSG:999999' is not a CRS pyproj knows", base="static",
         edit={"cube.grid.crs": "EPSG:999999"}),
    Case("crs-garbage", RUN, "cube.grid.crs: 'not a crs' is not a CRS", base="static",
         edit={"cube.grid.crs": "not a crs"}),
    Case("bbox-inverted", RUN, "cube.grid.bbox: got [10.0, 0.0, 5.0, 10.0]", base="static",
         edit={"cube.grid.bbox": [10.0, 0.0, 5.0, 10.0]}),
    Case("bbox-off-globe", RUN, "cube.grid.bbox: got [-200.0", base="static",
         edit={"cube.grid.bbox": [-200.0, -90.0, 180.0, 90.0]}),
    Case("raster-crs-bad", RUN, "cube.rasters.lst.crs: 'EPSG:0' is not a CRS", base="stac",
         edit={"cube.rasters.lst.crs": "EPSG:0"}),
    # --- input paths and sources
    Case("static-root-missing", RUN, "cube.static_root {tmp}/nowhere: static grids folder not found", base="static",
         edit={"cube.static_root": "{tmp}/nowhere"}),
    Case("static-root-is-file", RUN, "cube.static_root {keep}/a.txt: is a file, expected a folder",
         base="static", edit={"cube.static_root": "{keep}/a.txt"}),
    Case("sites-file-missing", RUN, "synthetic.sites_file {tmp}/s.parquet: does not exist", base="demo",
         edit={"synthetic.sites_file": "{tmp}/s.parquet"}),
    Case("sites-file-is-folder", RUN, "synthetic.sites_file {keep}: is a folder, expected a file",
         base="demo", edit={"synthetic.sites_file": "{keep}"}),
    Case("cube-sites-missing", RUN, "cube.sites {tmp}/pts.csv: does not exist", base="static",
         edit={"cube.sites": "{tmp}/pts.csv"}),
    Case("srdb-path-missing", RUN, "sites.srdb_path {tmp}/no-srdb: SRDB data file not found", base="srdb",
         edit={"sites.srdb_path": "{tmp}/no-srdb"}),
    Case("raster-glob-empty", RUN, "cube.rasters.lst.path {keep}/*.tif: the pattern matches no file",
         base="stac", edit={"cube.rasters.lst.path": "{keep}/*.tif"}),
    Case("rasters-none", RUN, "cube.rasters: no raster sources", base="stac", edit={"cube.rasters": {}}),
    Case("source-mismatch-static", RUN, "cube.source: cube.source is 'synthetic'. The static_cube workflow", base="static",
         edit={"cube.source": "synthetic"}),
    Case("source-mismatch-srdb", RUN, "sites.source: sites.source is 'cosore'. The srdb_rh_annual workflow reads SRDB", base="srdb",
         edit={"sites.source": "cosore", "sites.cosore_path": "{keep}"}),
    # --- --set
    Case("set-store-absolute", RUN + ["--set", "cube.store={keep}"], "cube.store: '{keep}'", base="static"),
    Case("set-name-parent", ["run", "{recipe}", "--set", "name=../../x"], "name: '../../x'", base="demo",
         cwd_work=True),
    Case("set-nan", RUN + ["--set", "synthetic.resolution=.nan"], "synthetic.resolution: got nan",
         base="demo"),
    Case("set-negative-seed", RUN + ["--set", "synthetic.seed=-3"], "synthetic.seed: got -3", base="demo"),
    Case("set-unknown-key", RUN + ["--set", "nonsense.key=1"], "--set nonsense.key: unknown key", base="demo"),
    Case("set-no-equals", RUN + ["--set", "synthetic.seed"], "--set: got 'synthetic.seed'", base="demo"),
    Case("set-bad-yaml", RUN + ["--set", "synthetic.seed=[1"], "--set synthetic.seed: value '[1' is not valid",
         base="demo"),
    Case("set-alias-bomb", RUN + ["--set", "description=" + BOMB.replace("\n", "\n")],
         "--set description", base="demo"),
    Case("set-crs", RUN + ["--set", "cube.grid.crs=EPSG:999999"], "cube.grid.crs: 'EPSG:999999'", base="static"),
    Case("set-memory", RUN + ["--set", "mapping.memory_limit=lots"], "mapping.memory_limit: got 'lots'",
         base="demo"),
    # --- run folders
    Case("out-is-file", RUN, "--out {out}: exists and is not a folder", base="demo", setup=out_is_file),
    Case("out-under-proc", ["run", "{recipe}", "--out", "/proc/self/gf-out"],
         "--out /proc/self/gf-out: is a system folder", base="demo"),
    Case("out-parent-is-file", ["run", "{recipe}", "--out", "{work}/keep.txt/run"],
         "--out {work}/keep.txt/run: '{work}/keep.txt' is a file", base="demo"),
    Case("out-not-empty", RUN, "{out}: output folder exists and is not empty", base="demo",
         setup=out_with_user_files),
    Case("overwrite-non-run-folder", ["run", "{recipe}", "--out", "{keep}", "--overwrite"],
         "{keep}: is not a globalflux run folder", base="demo"),
    Case("overwrite-checks-first", RUN + ["--overwrite"], "synthetic.sites_file {tmp}/gone.parquet: does not exist",
         base="demo", edit={"synthetic.sites_file": "{tmp}/gone.parquet"}, setup=marked_run),
    Case("resume-non-run-folder", RUN + ["--resume"], "{out}: is not a run folder of this recipe", base="demo",
         setup=out_with_user_files),
    Case("resume-other-recipe", RUN + ["--resume"], "{out}: was made by another recipe (name 'other'",
         base="demo", setup=marked_run),
    Case("resume-and-overwrite", RUN + ["--resume", "--overwrite"], "--resume and --overwrite exclude",
         base="demo", setup=marked_run),
    Case("scheduler-not-an-address", RUN + ["--scheduler", "10.0.0.5"], "--scheduler: '10.0.0.5' is not",
         base="demo"),
    Case("scheduler-is-http-server", RUN + ["--scheduler", "tcp://127.0.0.1:{port}", "--scheduler-timeout", "1"],
         "tcp://127.0.0.1:{port}: cannot reach the Dask scheduler within 1 s", base="demo"),
    # --- sites
    Case("srdb-stray-quote", ["sites", "srdb", "{srdb}", "--out", "{work}/s.parquet"],
         "{srdb}/srdb-data.csv: line 4:", setup=srdb_stray_quote),
    Case("srdb-cut-mid-row", ["sites", "srdb", "{srdb}", "--out", "{work}/s.parquet"],
         "{srdb}/srdb-data.csv: line 28: the record has 20 fields, the header has 85", setup=srdb_cut),
    Case("srdb-header-only", ["sites", "srdb", "{srdb}", "--out", "{work}/s.parquet"],
         "{srdb}/srdb-data.csv: has a header but no data rows", setup=srdb_header_only),
    Case("srdb-empty", ["sites", "srdb", "{srdb}", "--out", "{work}/s.parquet"],
         "{srdb}/srdb-data.csv: is empty", setup=srdb_empty),
    Case("srdb-extra-field", ["sites", "srdb", "{srdb}", "--out", "{work}/s.parquet"],
         "{srdb}/srdb-data.csv: line 8: the record has 86 fields", setup=srdb_extra_field),
    Case("srdb-short-row", ["sites", "srdb", "{srdb}", "--out", "{work}/s.parquet"],
         "{srdb}/srdb-data.csv: line 11: the record has 40 fields", setup=srdb_short_row),
    Case("srdb-renamed-column", ["sites", "srdb", "{srdb}", "--out", "{work}/s.parquet"],
         "{srdb}/srdb-data.csv: column 'Rh_annual' is missing", setup=srdb_renamed_column),
    Case("srdb-missing-folder", ["sites", "srdb", "{tmp}/none", "--out", "{work}/s.parquet"],
         "{tmp}/none: SRDB data file not found"),
    Case("sites-out-exists", ["sites", "srdb", "{srdb}", "--out", "{work}/s.parquet"],
         "--out {work}/s.parquet: file exists", setup=srdb_ok_and_out_exists),
    Case("sites-out-not-parquet", ["sites", "srdb", "{srdb}", "--out", "{work}/keep.txt"],
         "--out {work}/keep.txt: got 'keep.txt'", setup=srdb_ok),
    Case("sites-out-is-folder", ["sites", "srdb", "{srdb}", "--out", "{work}/d.parquet"],
         "--out {work}/d.parquet: is a folder", setup=srdb_ok_and_folder),
    Case("cosore-missing", ["sites", "cosore", "{tmp}/no-cosore", "--out", "{work}/c.parquet"],
         "{tmp}/no-cosore"),
    # --- query
    Case("query-tiff-exists", ["query", "{store}", "--out", "{work}/x.tiff", "--var", "rh"],
         "--out {work}/x.tiff: file exists", setup=existing_tiff),
    Case("query-out-unknown-type", ["query", "{store}", "--out", "{work}/x.exe"],
         "--out {work}/x.exe: unknown output type '.exe'"),
    Case("query-out-is-folder", ["query", "{store}", "--out", "{work}/d.nc"], "--out {work}/d.nc: is a folder",
         setup=lambda ctx: (ctx.work / "d.nc").mkdir()),
    Case("query-out-in-store", ["query", "{store}", "--out", "{store}/x.nc"], "--out {store}/x.nc: is inside"),
    Case("query-out-proc", ["query", "{store}", "--out", "/proc/self/x.nc"], "--out /proc/self: is a system folder"),
    Case("query-store-missing", ["query", "{tmp}/none.zarr", "--out", "{work}/x.nc"], "{tmp}/none.zarr: store not found"),
    Case("query-missing-chunk", ["query", "{store}", "--out", "{work}/x.nc"],
         "{store}: chunk rh/c/", setup=missing_chunk),
    Case("query-truncated-chunk", ["query", "{store}", "--out", "{work}/x.nc"],
         "{store}: chunk rh/c/", setup=truncated_chunk),
    Case("query-corrupt-chunk", ["query", "{store}", "--out", "{work}/x.nc", "--var", "rh"],
         "{store}: chunk rh/c/", setup=corrupt_chunk),
    Case("query-bad-bbox", ["query", "{store}", "--out", "{work}/x.nc", "--bbox", "1,2,3"], "--bbox"),
    Case("query-bad-var", ["query", "{store}", "--out", "{work}/x.nc", "--var", "nope"], "--var"),
    # --- bench (every check runs before the benchmark)
    Case("bench-out-is-file", ["bench", "--quick", "--out", "{work}/keep.txt"],
         "--out {work}/keep.txt: exists and is not a folder"),
    Case("bench-out-has-results", ["bench", "--quick", "--out", "{out}"], "--out {out}/bench.csv: file exists",
         setup=existing_bench),
    Case("bench-out-proc", ["bench", "--quick", "--out", "/proc/self/bench"], "--out /proc/self/bench: is a system"),
    Case("bench-scheduler-bad", ["bench", "--quick", "--scheduler", "nope"], "--scheduler: 'nope' is not"),
]


@pytest.fixture(scope="module")
def map_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("mapstore") / "maps.zarr"
    _mapjob.run(path)
    return path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D401 - keep the test output clean
        pass


@pytest.fixture(scope="module")
def http_port():
    """A plain HTTP server on loopback: the --scheduler that is not Dask."""
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Quiet)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _fill(value: Any, ctx: Ctx) -> Any:
    if isinstance(value, str):
        return ctx.fmt(value)
    if isinstance(value, list):
        return [_fill(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ctx) for k, v in value.items()}
    return value


def _make_ctx(tmp: Path, store: Path, port: int) -> Ctx:
    work, keep, srdb = tmp / "work", tmp / "keep", tmp / "srdb"
    for d in (work, keep / "sub", srdb):
        d.mkdir(parents=True)
    (work / "keep.txt").write_text("sentinel beside the output")
    (keep / "a.txt").write_text("sentinel in the input folder")
    (keep / "sub" / "b.txt").write_text("nested sentinel")
    local_store = tmp / "maps.zarr"
    shutil.copytree(store, local_store)
    ctx = Ctx(tmp=tmp, work=work, keep=keep, recipe=tmp / "r.yaml", out=work / "out",
              store=local_store, srdb=srdb, http_port=port)
    old = time.time() - 3600  # sentinels an hour old: a rewrite would move their mtime
    for p in (work / "keep.txt", keep / "a.txt", keep / "sub" / "b.txt"):
        os.utime(p, (old, old))
    return ctx


def _first_stderr_line(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse usage errors
        code = int(e.code or 0)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return code, (lines[0] if lines else ""), err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, map_store, http_port, capsys, monkeypatch):
    ctx = _make_ctx(tmp_path, map_store, http_port)
    if case.base is not None:
        data = BASES[case.base](ctx)
        for k, v in case.edit.items():
            _set(data, k, _fill(v, ctx))
        ctx.recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    elif case.text is not None:
        raw = case.text if isinstance(case.text, bytes) else ctx.fmt(case.text).encode()
        ctx.recipe.write_bytes(raw)
    if case.setup is not None:
        case.setup(ctx)
    if case.cwd_work:
        monkeypatch.chdir(ctx.work)
    before = _snapshot(tmp_path)
    t0 = time.perf_counter()
    code, first, err = _first_stderr_line([ctx.fmt(a) for a in case.argv], capsys)
    dt = time.perf_counter() - t0
    assert code == case.code, err
    assert first.startswith("globalflux: error: "), err
    assert ctx.fmt(case.expect) in first, err
    assert "Traceback" not in err
    after = _snapshot(tmp_path)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"files changed: {changed}"
    assert dt < 10, dt


def test_table_is_large_and_distinct():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60
    commands = {c.argv[0] for c in CASES}
    assert {"run", "validate", "sites", "query", "bench", "map"} <= commands
    assert sum("--set" in c.argv for c in CASES) >= 8


# ------------------------------------------------------------------ cases that need more than one call


def test_alias_bomb_exits_2_fast_and_small(tmp_path):
    """A billion-laughs recipe: exit 2 within 5 s and under 200 MB (a fresh process, measured)."""
    r = tmp_path / "bomb.yaml"
    r.write_text(BOMB)
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from globalflux.cli import main\n"
        f"rc = main(['validate', {str(r)!r}])\n"
        # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's across exec)
        "rss = [int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM')][0] / 1024\n"
        "print(rc, time.perf_counter() - t, rss)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=env, cwd=tmp_path)
    wall = time.perf_counter() - t0
    rc, seconds, rss_mb = proc.stdout.split()
    assert int(rc) == 2, proc.stderr
    assert proc.stderr.splitlines()[0].startswith(f"globalflux: error: {r}: expands to more than")
    assert float(seconds) < 5 and wall < 15
    assert float(rss_mb) < 200, rss_mb


def test_overwrite_replaces_only_after_the_new_run(tmp_path, capsys, monkeypatch):
    """--overwrite of a marked run folder: the new run is written, the old one removed after it."""
    from globalflux.pipeline import MARKER, read_marker

    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(static_recipe(_ctx_for_static(tmp_path))))
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"globalflux_run": 1, "recipe_sha256": "x"}))
    (out / "old.txt").write_text("old run")
    import globalflux.workflows.static_cube as wf

    seen = {}

    def fake_run(recipe, ctx):  # a stage that writes one file and looks around
        seen["old_aside"] = [p.name for p in tmp_path.iterdir() if "globalflux-old" in p.name]
        (ctx.metrics / "m.csv").write_text("a\n1\n")

    monkeypatch.setattr(wf, "run", fake_run)
    assert main(["run", str(recipe), "--out", str(out), "--overwrite"]) == 0
    assert seen["old_aside"], "the old run folder is moved aside while the new one runs"
    assert not (out / "old.txt").exists() and (out / "metrics" / "m.csv").is_file()
    assert read_marker(out)["status"] == "finished"
    assert not [p for p in tmp_path.iterdir() if "globalflux-old" in p.name]

    # a failing new run puts the old one back
    def boom(recipe, ctx):
        (ctx.metrics / "half.csv").write_text("x")
        raise RuntimeError("stage bug")

    monkeypatch.setattr(wf, "run", boom)
    assert main(["run", str(recipe), "--out", str(out), "--overwrite"]) == 1
    assert (out / "metrics" / "m.csv").is_file() and not (out / "metrics" / "half.csv").exists()
    capsys.readouterr()


def _ctx_for_static(tmp: Path) -> Ctx:
    keep = tmp / "grids"
    keep.mkdir()
    return Ctx(tmp=tmp, work=tmp, keep=keep, recipe=tmp / "r.yaml", out=tmp / "out", store=tmp,
               srdb=tmp, http_port=0)


def test_resume_removes_temporaries_of_the_interrupted_run(tmp_path, monkeypatch, capsys):
    from globalflux.io.paths import TMP_PREFIX
    from globalflux.pipeline import read_marker

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(static_recipe(_ctx_for_static(tmp_path))))
    out = tmp_path / "out"
    import globalflux.workflows.static_cube as wf

    def interrupted(recipe, ctx):
        (ctx.metrics / f"{TMP_PREFIX}123-m.csv").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(wf, "run", interrupted)
    assert main(["run", str(recipe), "--out", str(out)]) == 130
    assert read_marker(out)["status"] == "running"
    monkeypatch.setattr(wf, "run", lambda recipe, ctx: None)
    assert main(["run", str(recipe), "--out", str(out), "--resume"]) == 0
    assert not list(out.rglob(f"{TMP_PREFIX}*"))
    assert read_marker(out)["status"] == "finished"
    capsys.readouterr()


def test_query_tiff_overwrite_keeps_the_name(tmp_path, map_store, capsys):
    """`query --out x.tiff --overwrite` replaces x.tiff itself (never renamed to x.tif)."""
    import rasterio

    out = tmp_path / "x.tiff"
    out.write_bytes(b"old")
    assert main(["query", str(map_store), "--out", str(out), "--var", "rh", "--overwrite"]) == 0
    assert not (tmp_path / "x.tif").exists()
    with rasterio.open(out) as src:
        assert src.count == _mapjob.SHAPE[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tiff"]  # no temporary left
    capsys.readouterr()


def test_srdb_lenient_drops_and_counts(tmp_path, capsys):
    from globalflux.io.srdb import read_srdb

    header, rows = _rows()
    rows[6] = rows[6] + ["surplus"]
    (tmp_path / "srdb").mkdir()
    _write_csv(tmp_path / "srdb" / "srdb-data.csv", header, rows)
    t = read_srdb(tmp_path / "srdb", lenient=True)
    removed = dict(zip(t.removed["reason"], t.removed["n_removed"]))
    assert removed["read"] == 27 and removed["malformed_row"] == 1
    out = tmp_path / "s.parquet"
    assert main(["sites", "srdb", str(tmp_path / "srdb"), "--out", str(out), "--lenient"]) == 0
    assert "| malformed_row | 1 |" in capsys.readouterr().out


@pytest.mark.parametrize("err, why", [("ENOSPC", "disk full"), ("EACCES", "no write permission"),
                                      ("ENOTDIR", "a part of the path is a file, not a folder"),
                                      ("EROFS", "read-only file system")])
def test_write_error_is_exit_2_naming_the_path(tmp_path, capsys, monkeypatch, err, why):
    """An OSError while writing (disk full, permission, ...) is exit 2 naming the path."""
    import errno

    import globalflux.io.tables as tables

    src = tmp_path / "srdb"
    src.mkdir()
    shutil.copy(SRDB_FIXTURE, src / "srdb-data.csv")
    target = tmp_path / "s.parquet"

    def failing(df, path):
        code = getattr(errno, err)
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(tables, "write_table", failing)
    assert main(["sites", "srdb", str(src), "--out", str(target)]) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first == (f"globalflux: error: {target}: cannot write ({why}). Choose an output folder "
                     "you can write to, with free space.")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_a_folder_without_write_permission(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(demo_recipe(None)))  # type: ignore[arg-type]
    os.chmod(ro, 0o500)
    try:
        assert main(["run", str(recipe), "--out", str(ro / "run")]) == 2
        first = capsys.readouterr().err.splitlines()[0]
        assert first.startswith(f"globalflux: error: --out {ro / 'run'}: no write permission in '{ro}'")
        assert list(ro.iterdir()) == []
    finally:
        os.chmod(ro, 0o700)
