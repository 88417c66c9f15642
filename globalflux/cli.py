"""The ``globalflux`` command. It only parses arguments and calls library functions.

Exit codes: 0 success, 2 bad input (recipe, file, value: any :class:`GlobalfluxError`, or a
usage error), 1 internal error. A bad input prints one line naming the input and the fix;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .errors import GlobalfluxError

__all__ = ["main", "build_parser"]


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a recipe into an output folder")
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--out", default=None, help="run folder (default: runs/<recipe name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V",
                   help="override a recipe key, e.g. --set forest.n_estimators=50 (repeatable)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--scheduler-timeout", type=float, default=None, metavar="SECONDS",
                   help="seconds to wait for --scheduler (default: mapping.scheduler_timeout, 30 s)")
    p.add_argument("--resume", action="store_true", help="finish what is missing in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a globalflux run folder (after the checks pass)")
    p.add_argument("--serve", action="store_true",
                   help="start the map viewer (globalflux serve) on the run folder when done")
    p.add_argument("--serve-port", type=int, default=None, metavar="P",
                   help="port of the viewer started by --serve (default 8765; 0 picks a free one)")


def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="check a recipe and print it resolved")
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V",
                   help="override a recipe key, e.g. --set forest.n_estimators=50 (repeatable)")


def _add_sites(sub) -> None:
    p = sub.add_parser("sites", help="ingest site observations into canonical Parquet tables")
    s = p.add_subparsers(dest="source", required=True)
    c = s.add_parser("cosore", help="a COSORE tree (folder holding datasets/)")
    c.add_argument("path", help="COSORE folder (holding datasets/) or one dataset folder")
    c.add_argument("--out", required=True, help="output Parquet file of the long site table")
    c.add_argument("--variable", choices=["Rs", "Rh", "all"], default="all",
                   help="flux to keep: Rs (total efflux), Rh (heterotrophic ports) or all")
    c.add_argument("--aggregation", choices=["raw", "daily", "8day"], default="daily",
                   help="time step of the table: raw records, local days or MODIS 8-day periods")
    c.add_argument("--min-year", type=int, default=None,
                   help="drop records before this year (default: keep all)")
    c.add_argument("--cache-dir", default=None,
                   help="Parquet cache of converted data.RDS files (default ~/.cache/globalflux)")
    c.add_argument("--overwrite", action="store_true", help="replace existing output files")
    r = s.add_parser("srdb", help="an SRDB folder or srdb-data.csv")
    r.add_argument("path", help="SRDB folder or its srdb-data.csv")
    r.add_argument("--out", required=True, help="output Parquet file of the site table")
    r.add_argument("--min-midyear", type=float, default=None,
                   help="drop records whose Study_midyear is below this (e.g. 2000.5)")
    r.add_argument("--variable", choices=["Rh", "Rs"], default="Rh",
                   help="annual flux that must be present (Rh_annual or Rs_annual)")
    r.add_argument("--overwrite", action="store_true", help="replace existing output files")
    r.add_argument("--lenient", action="store_true",
                   help="drop malformed CSV rows (counted in the summary) instead of failing")


def _add_query(sub) -> None:
    p = sub.add_parser("query", help="cut a regional subset out of a map store")
    p.add_argument("store", help="a Zarr map store written by globalflux run")
    p.add_argument("--bbox", default=None, metavar="W,S,E,N",
                   help="region in the map's CRS units (degrees for EPSG:4326); a negative west "
                   "works as --bbox -10,35,30,60")
    p.add_argument("--point", default=None, metavar="LON,LAT",
                   help="the nearest pixel's time series")
    p.add_argument("--zone", type=int, default=None,
                   help="keep only pixels of this zone (maps with a zone variable)")
    p.add_argument("--time", default=None, metavar="START[/END]",
                   help="any date or inclusive date range; keeps every time step whose period "
                   "(e.g. 8-day) overlaps it, so --time 2020-07-01 gives the period holding it")
    p.add_argument("--var", default=None, metavar="NAME",
                   help="one variable of the store (default: all)")
    p.add_argument("--out", required=True, help=".nc, .csv, .tif or .png")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="chunk throughput benchmarks; prints a table")
    p.add_argument("--quick", action="store_true", help="small sizes, a few seconds per row")
    p.add_argument("--out", default=None, help="also write the table (CSV) and its context (JSON)")
    p.add_argument("--overwrite", action="store_true", help="replace bench files already in --out")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of an existing Dask scheduler (default: a LocalCluster)")
    p.add_argument("--scheduler-timeout", type=float, default=None, metavar="SECONDS",
                   help="seconds to wait for --scheduler (default 30)")


def _add_map(sub) -> None:
    p = sub.add_parser("map", help="apply a model package to a predictor cube (resumable Zarr)")
    p.add_argument("model", help="model package folder (RUN/model)")
    p.add_argument("cube", help="predictor cube: a Zarr store (e.g. RUN/maps/predictors.zarr) "
                   "or a static_cube / stac_cube recipe (a STAC source, loaded lazily)")
    p.add_argument("--out", required=True, help="output Zarr store (must not exist unless --resume)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of an existing Dask scheduler (default: a LocalCluster)")
    p.add_argument("--scheduler-timeout", type=float, default=None, metavar="SECONDS",
                   help="seconds to wait for --scheduler (default 30)")
    p.add_argument("--bbox", default=None, metavar="W,S,E,N", help="map only this box")
    p.add_argument("--time", default=None, metavar="START[/END]", help="map only these steps")
    p.add_argument("--resume", action="store_true", help="finish an interrupted --out store")
    p.add_argument("--cog", action="store_true", help="also write COGs into STORE/cog/")
    p.add_argument("--stac", action="store_true",
                   help="also write COGs and a STAC Collection (relative hrefs) into STORE/stac/")


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="the real data sets the recipes read")
    s = p.add_subparsers(dest="data_command", required=True)
    c = s.add_parser("check", help="verify a copy of the real data (names, sizes, sha256) "
                     "against the table of the README")
    c.add_argument("path", help="the data folder (the one holding cosore/, srdb/, gsbe/, grids/)")
    c.add_argument("--fast", action="store_true",
                   help="check names and sizes only (no sha256: seconds instead of minutes)")


# --debug/--quiet are accepted before and after the subcommand: each subparser gets a copy whose
# default is SUPPRESS, so an option given before the subcommand is not reset by the subparser.
_GLOBAL_OPTIONS = (
    ("--debug", "show tracebacks and the logs of Dask/distributed"),
    ("--quiet", "only warnings and errors; no progress bars"),
)


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    for flag, text in _GLOBAL_OPTIONS:
        if top:
            parser.add_argument(flag, action="store_true", help=text)
        else:
            parser.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _add_global_options(child, top=False)


# options whose value may start with "-" (a negative longitude): "--bbox -10,35,30,60"
_NEGATIVE_VALUE_OPTIONS = ("--bbox", "--point")


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--bbox -10,...`` -> ``--bbox=-10,...`` (argparse would take ``-10,...`` for an option)."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a in _NEGATIVE_VALUE_OPTIONS:
            nxt = next(it, None)
            if nxt is None:
                out.append(a)
            elif nxt.startswith("-") and len(nxt) > 1 and (nxt[1].isdigit() or nxt[1] == "."):
                out.append(f"{a}={nxt}")
            else:
                out += [a, nxt]
        else:
            out.append(a)
    return out


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="a local web map of a run's layers (time, legend, pixel series)")
    p.add_argument("run", metavar="RUN_OR_STORE",
                   help="a run folder written by globalflux run, its maps/ folder, or a .zarr store")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 8765; 0: a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; the viewer has "
                   "no authentication)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="globalflux",
        description="Soil respiration from sparse sites to global maps (zoned RF and global LSTM).",
    )
    parser.add_argument("--version", action="version", version=f"globalflux {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, help="what to do")
    _add_run(sub)
    _add_validate(sub)
    _add_sites(sub)
    _add_query(sub)
    _add_bench(sub)
    _add_map(sub)
    _add_data(sub)
    _add_global_options(parser, top=True)
    _add_serve(sub)
    return parser


def _cmd_run(args) -> int:
    from .pipeline import run_recipe, validate

    recipe = validate(args.recipe, args.overrides)
    port = _serve_port(args.serve_port) if args.serve else None  # checked before the run
    out = args.out or f"runs/{recipe.name}"  # recipe.name is a plain name (preflight)
    run_recipe(recipe, out, scheduler=args.scheduler, resume=args.resume, overwrite=args.overwrite,
               scheduler_timeout=args.scheduler_timeout)
    print(f"globalflux: run folder {out} (report: {out}/report.md)")
    if args.serve:
        from .serve import serve

        return serve(out, port=port)
    return 0


def _cmd_validate(args) -> int:
    from .pipeline import validate
    from .recipe import dump_recipe

    recipe = validate(args.recipe, args.overrides)
    sys.stdout.write(dump_recipe(recipe))
    print(f"# {args.recipe}: valid ({recipe.workflow})", file=sys.stderr)
    return 0


def _cmd_sites(args) -> int:
    from .workflows.sites_cli import main as sites_main

    return sites_main(args)


def _cmd_query(args) -> int:
    from .query import cli_main

    return cli_main(args)


def _cmd_bench(args) -> int:
    from .bench import cli_main

    return cli_main(args)


def _cmd_map(args) -> int:
    from .workflows.map_cli import main as map_main

    return map_main(args)
def _cmd_data(args) -> int:
    from .io.datacheck import cli_main

    return cli_main(args)


def _serve_port(port: int | None) -> int:
    from .serve import DEFAULT_PORT, require

    require()
    if port is None:
        return DEFAULT_PORT
    if not 0 <= port <= 65535:
        raise GlobalfluxError(f"port {port} is not in 0..65535", where="--port",
                              fix="Give a TCP port, or 0 for a free one.")
    return port


def _cmd_serve(args) -> int:
    from .serve import serve

    return serve(args.run, host=args.host, port=_serve_port(args.port))


_COMMANDS = {
    "run": _cmd_run,
    "validate": _cmd_validate,
    "sites": _cmd_sites,
    "query": _cmd_query,
    "bench": _cmd_bench,
    "map": _cmd_map,
    "data": _cmd_data,
    "serve": _cmd_serve,
}


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever ``sys.stderr`` is when a record is emitted (not the stream of
    the moment it was made): a replaced or closed stderr (Jupyter, pytest) never breaks logging."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _configure_logging(*, quiet: bool, debug: bool) -> None:
    """globalflux's own messages go to stderr (warnings only with --quiet) and always in full to
    the run's log.txt; other libraries (distributed, ...) only show warnings unless --debug."""
    logger = logging.getLogger("globalflux")
    logger.setLevel(logging.INFO)  # the run folder's log.txt always gets INFO
    for h in list(logger.handlers):
        if getattr(h, "_globalflux_cli", False):
            logger.removeHandler(h)
    handler = _StderrHandler()
    handler._globalflux_cli = True  # type: ignore[attr-defined]
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    # records marked console=False (e.g. the dashboard link, printed once by cluster.py) go to
    # the run's log.txt only
    handler.addFilter(lambda record: getattr(record, "console", True))
    logger.addHandler(handler)
    logger.propagate = False
    level = logging.INFO if debug else logging.WARNING
    for name in ("distributed", "dask", "tornado", "bokeh", "rasterio", "numexpr"):
        logging.getLogger(name).setLevel(level)
    # distributed sets its logger to its configured level (INFO) when it is first imported,
    # which is usually after this: tell it through its own config (old-style "logging" mapping;
    # a user's dictConfig-style logging config, with "version", is theirs and left alone)
    import dask.config

    cfg = dask.config.get("logging", default=None) or {}
    if isinstance(cfg, dict) and "version" not in cfg:
        dask.config.set({"logging": {**cfg, "distributed": logging.getLevelName(level).lower()}})
    from .progress import set_progress

    set_progress(False if quiet else None)  # --quiet: no progress bars either


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    _configure_logging(quiet=args.quiet, debug=args.debug)
    try:
        return _COMMANDS[args.command](args)
    except GlobalfluxError as exc:
        if args.debug:
            raise
        print(f"globalflux: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("globalflux: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # permission, disk full, not a folder ... while writing: a bad --out
        from .io.paths import is_write_error, write_error

        if args.debug or not is_write_error(exc):
            if args.debug:
                raise
            print(f"globalflux: internal error: {exc.__class__.__name__}: {exc} "
                  "(run with --debug for the traceback and report it)", file=sys.stderr)
            return 1
        print(f"globalflux: error: {write_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # internal error
        if args.debug:
            raise
        print(f"globalflux: internal error: {exc.__class__.__name__}: {exc} "
              "(run with --debug for the traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
