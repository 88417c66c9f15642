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
    p.add_argument("--resume", action="store_true", help="finish what is missing in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--serve", action="store_true",
                   help="start the map viewer (globalflux serve) on the run folder when done")
    p.add_argument("--serve-port", type=int, default=None, metavar="P",
                   help="port of the viewer started by --serve (default 8765; 0 picks a free one)")


def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="check a recipe and print it resolved")
    p.add_argument("recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")


def _add_sites(sub) -> None:
    p = sub.add_parser("sites", help="ingest site observations into canonical Parquet tables")
    s = p.add_subparsers(dest="source", required=True)
    c = s.add_parser("cosore", help="a COSORE tree (folder holding datasets/)")
    c.add_argument("path")
    c.add_argument("--out", required=True, help="output Parquet file of the long site table")
    c.add_argument("--variable", choices=["Rs", "Rh", "all"], default="all")
    c.add_argument("--aggregation", choices=["raw", "daily", "8day"], default="daily")
    c.add_argument("--min-year", type=int, default=None)
    c.add_argument("--cache-dir", default=None,
                   help="Parquet cache of converted data.RDS files (default ~/.cache/globalflux)")
    r = s.add_parser("srdb", help="an SRDB folder or srdb-data.csv")
    r.add_argument("path")
    r.add_argument("--out", required=True)
    r.add_argument("--min-midyear", type=float, default=None)
    r.add_argument("--variable", choices=["Rh", "Rs"], default="Rh",
                   help="annual flux that must be present (Rh_annual or Rs_annual)")


def _add_query(sub) -> None:
    p = sub.add_parser("query", help="cut a regional subset out of a map store")
    p.add_argument("store", help="a Zarr map store written by globalflux run")
    p.add_argument("--bbox", default=None, metavar="W,S,E,N")
    p.add_argument("--point", default=None, metavar="LON,LAT")
    p.add_argument("--zone", type=int, default=None)
    p.add_argument("--time", default=None, metavar="START[/END]")
    p.add_argument("--var", default=None, metavar="NAME")
    p.add_argument("--out", required=True, help=".nc, .csv, .tif or .png")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="chunk throughput benchmarks; prints a table")
    p.add_argument("--quick", action="store_true", help="small sizes, a few seconds per row")
    p.add_argument("--out", default=None, help="also write the table (CSV) and its context (JSON)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS")


def _add_map(sub) -> None:
    p = sub.add_parser("map", help="apply a model package to a predictor cube (resumable Zarr)")
    p.add_argument("model", help="model package folder (RUN/model)")
    p.add_argument("cube", help="predictor cube: a Zarr store (e.g. RUN/maps/predictors.zarr) "
                   "or a static_cube recipe")
    p.add_argument("--out", required=True, help="output Zarr store (must not exist unless --resume)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of an existing Dask scheduler (default: a LocalCluster)")
    p.add_argument("--bbox", default=None, metavar="W,S,E,N", help="map only this box")
    p.add_argument("--time", default=None, metavar="START[/END]", help="map only these steps")
    p.add_argument("--resume", action="store_true", help="finish an interrupted --out store")
    p.add_argument("--cog", action="store_true", help="also write COGs into STORE/cog/")
    p.add_argument("--stac", action="store_true",
                   help="also write COGs and a STAC Collection (relative hrefs) into STORE/stac/")


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
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_validate(sub)
    _add_sites(sub)
    _add_query(sub)
    _add_bench(sub)
    _add_map(sub)
    _add_serve(sub)
    return parser


def _cmd_run(args) -> int:
    from .pipeline import run_recipe, validate

    recipe = validate(args.recipe, args.overrides)
    port = _serve_port(args.serve_port) if args.serve else None  # checked before the run
    out = args.out or f"runs/{recipe.name}"
    run_recipe(recipe, out, scheduler=args.scheduler, resume=args.resume, overwrite=args.overwrite)
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
    "serve": _cmd_serve,
}


def _configure_logging(*, quiet: bool, debug: bool) -> None:
    """globalflux's own messages go to stderr (warnings only with --quiet) and always in full to
    the run's log.txt; other libraries (distributed, ...) only show warnings unless --debug."""
    logger = logging.getLogger("globalflux")
    logger.setLevel(logging.INFO)  # the run folder's log.txt always gets INFO
    for h in list(logger.handlers):
        if getattr(h, "_globalflux_cli", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._globalflux_cli = True  # type: ignore[attr-defined]
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.propagate = False
    for name in ("distributed", "dask", "tornado", "bokeh", "rasterio", "numexpr"):
        logging.getLogger(name).setLevel(logging.INFO if debug else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    except Exception as exc:  # internal error
        if args.debug:
            raise
        print(f"globalflux: internal error: {exc.__class__.__name__}: {exc} "
              "(run with --debug for the traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
