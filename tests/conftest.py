"""Shared fixtures. Real-data tests use ``shared_data``: they skip locally without
../shared/data, and FAIL (never skip) when CI=true."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GLOBALFLUX_SHARED_DATA", REPO.parent / "shared" / "data"))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data beside the checkout)."""
    if not (SHARED_DATA / "PROVENANCE.md").is_file():
        msg = f"real data not found at {SHARED_DATA} (set GLOBALFLUX_SHARED_DATA)"
        if _in_ci():
            pytest.fail(msg + "; CI must have it")
        pytest.skip(msg)
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


# the small demo of tests/test_demo.py (a 64x64 world, few trees, one worker: ~25 s), run once per
# session and shared by every test that checks its outputs (never modify it: copy it first)
DEMO_SMALL = [
    "synthetic.ny=64", "synthetic.nx=64", "synthetic.n_sites=24", "synthetic.min_sites_per_zone=5",
    "forest.n_estimators=10", "forest.n_jobs=1", "mapping.n_workers=1", "cube.chunk_y=32",
    "cube.chunk_x=64", "report.dpi=50",
]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """Run folder of the small demo (recipes/demo.yaml with DEMO_SMALL overrides)."""
    from globalflux.cli import main

    out = tmp_path_factory.mktemp("demo") / "out"
    args = ["run", str(REPO / "recipes" / "demo.yaml"), "--out", str(out), "--quiet"]
    for o in DEMO_SMALL:
        args += ["--set", o]
    assert main(args) == 0
    return out
