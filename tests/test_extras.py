"""Optional extras: a missing [lstm]/[fast] stops with exit 2 and the pip command to run."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from globalflux.cli import main
from globalflux.extras import MissingExtraError, require


@pytest.fixture
def no_torch(monkeypatch):
    """Pretend torch is not installed (import fails, find_spec finds nothing)."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name.split(".")[0] == "torch" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setitem(sys.modules, "torch", None)


def test_require_names_the_extra(no_torch):
    with pytest.raises(MissingExtraError, match=r'pip install "globalflux\[lstm\]"') as err:
        require("torch", "lstm", what="the LSTM")
    assert err.value.exit_code == 2


def test_lstm_recipe_without_torch_exits_2_naming_the_extra(no_torch, capsys, tmp_path):
    out = tmp_path / "run"
    code = main(["run", "recipes/cosore_efflux_daily.yaml", "--out", str(out)])
    assert code == 2 and not out.exists()  # refused before anything is written
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[lstm]" in err[0] and "pip install" in err[0]


def test_lstm_model_code_without_torch_raises_the_same_error(no_torch):
    from globalflux.models.lstm.network import _torch  # every torch use of the package goes here

    with pytest.raises(MissingExtraError, match=r"\[lstm\]"):
        _torch()


def test_demo_recipe_needs_no_extra(no_torch, capsys):
    assert main(["validate", "recipes/demo.yaml", "--quiet"]) == 0
