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
