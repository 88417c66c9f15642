"""CLI comforts: global options before or after the subcommand, help text on every argument,
a negative west in --bbox, and query --time selecting the period that holds a date."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from globalflux.cli import build_parser, main


def _all_parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _all_parsers(child)


def test_every_argument_has_help_text():
    missing = []
    for p in _all_parsers(build_parser()):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                continue
            if not a.help or a.help == argparse.SUPPRESS:
                missing.append(f"{p.prog}: {a.option_strings or a.dest}")
    assert missing == []


@pytest.mark.parametrize("argv", [
    ["--quiet", "--debug", "validate", "recipes/demo.yaml"],
    ["validate", "recipes/demo.yaml", "--quiet", "--debug"],
    ["validate", "--debug", "recipes/demo.yaml", "--quiet"],
])
def test_global_options_before_or_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert args.quiet is True and args.debug is True


def test_global_options_default_off_and_nested_subcommands():
    args = build_parser().parse_args(["sites", "srdb", "x.csv", "--out", "y.parquet", "--quiet"])
    assert args.quiet is True and args.debug is False
    args = build_parser().parse_args(["validate", "r.yaml"])
    assert args.quiet is False and args.debug is False


def _store(tmp_path):
    from globalflux.mapping import map_to_store

    t = pd.date_range("2020-06-17", periods=3, freq="8D")
    da = xr.DataArray(np.arange(3 * 4 * 5, dtype="float32").reshape(3, 4, 5),
                      dims=("time", "y", "x"),
                      coords={"time": t, "y": np.linspace(10, 7, 4), "x": np.linspace(-20, -16, 5),
                              "period_days": ("time", np.full(3, 8, "int16"))},
                      attrs={"units": "g C m-2 d-1", "long_name": "rh"})
    da = da.rio.write_crs("EPSG:4326")
    return map_to_store(None, {"rh": da.chunk({"time": 3})}, tmp_path / "m.zarr", progress=False)


def test_query_time_inside_an_8_day_period_and_negative_bbox(tmp_path, capsys):
    store = _store(tmp_path)
    out = tmp_path / "q.nc"
    # 2020-06-28 is inside the period 2020-06-25..07-02 (the second step)
    assert main(["query", str(store), "--time", "2020-06-28", "--bbox", "-19.5,7,-16,9.5",
                 "--out", str(out), "--quiet"]) == 0
    ds = xr.open_dataset(out)
    assert list(pd.DatetimeIndex(ds["time"].values)) == [pd.Timestamp("2020-06-25")]
    assert float(ds["x"].min()) == -19.0 and float(ds["y"].max()) == 9.0
    ds.close()
    # a range overlapping two periods keeps both
    out2 = tmp_path / "q2.nc"
    assert main(["query", str(store), "--time", "2020-07-01/2020-07-04", "--out", str(out2),
                 "--point", "-18,8", "--quiet"]) == 0
    with xr.open_dataset(out2) as ds2:
        assert ds2.sizes["time"] == 2
    # after the last period: refused, naming the axis
    assert main(["query", str(store), "--time", "2020-07-12", "--out", str(tmp_path / "q3.nc"),
                 "--quiet"]) == 2
    assert "outside the map's time axis 2020-06-17..2020-07-10" in capsys.readouterr().err


def test_query_time_python_api_overlap(tmp_path):
    from globalflux.query import query

    store = _store(tmp_path)
    got = query(store, time="2020-06-17T12:00/2020-06-17T13:00", var="rh")
    assert got.sizes["time"] == 1


@pytest.mark.parametrize("debug, expected", [(False, "30 30"), (True, "20 20")])
def test_distributed_imported_after_the_cli_keeps_its_log_level(debug, expected):
    """distributed sets its logger to INFO when first imported, usually after the CLI has set
    up logging; without --debug it must stay at WARNING (two LocalClusters closed out of order
    once printed their INFO close-down logs under --quiet)."""
    import subprocess
    import sys

    code = ("from globalflux.cli import _configure_logging; import logging\n"
            f"_configure_logging(quiet=True, debug={debug})\n"
            "import distributed\n"
            "print(logging.getLogger('distributed').getEffectiveLevel(),"
            " logging.getLogger('distributed.scheduler').getEffectiveLevel())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split("\n")[-2]
    assert out == expected
