"""Progress bars from the Python API: shown by default, off with set_progress(False) or a
keyword; the CLI's --quiet turns them off; the dashboard link is printed once."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from globalflux.progress import progress_enabled, set_progress, track


@pytest.fixture(autouse=True)
def _reset():
    set_progress(None)
    yield
    set_progress(None)


def _pieces():
    da = xr.DataArray(np.ones((2, 4, 4), "float32"), dims=("time", "y", "x"),
                      coords={"y": np.arange(4.0)[::-1], "x": np.arange(4.0)})
    return {"v": da.rio.write_crs("EPSG:4326").chunk({"y": 2, "x": 2})}


def test_mapping_shows_a_bar_from_python(tmp_path, capsys, monkeypatch):
    from globalflux.mapping import map_to_store

    # only the bar on stderr: an earlier CLI call in this process may have put globalflux's own
    # log (INFO, with its text progress lines for log.txt) on stderr as well
    monkeypatch.setattr(logging.getLogger("globalflux"), "handlers", [])
    monkeypatch.setattr(logging.getLogger("globalflux"), "propagate", False)

    map_to_store(None, _pieces(), tmp_path / "a.zarr")
    assert "block" in capsys.readouterr().err  # tqdm: "map a.zarr: ... 4/4 [..., block/s]"
    set_progress(False)
    map_to_store(None, _pieces(), tmp_path / "b.zarr")
    assert "block" not in capsys.readouterr().err
    set_progress(None)
    map_to_store(None, _pieces(), tmp_path / "c.zarr", progress=False)  # the keyword
    assert "block" not in capsys.readouterr().err


def test_validation_folds_bar_and_switch(capsys, monkeypatch):
    monkeypatch.delenv("GLOBALFLUX_PROGRESS", raising=False)
    assert list(track(range(3), "folds")) == [0, 1, 2]
    assert "folds" in capsys.readouterr().err
    assert progress_enabled() and not progress_enabled(False)
    monkeypatch.setenv("GLOBALFLUX_PROGRESS", "0")
    assert not progress_enabled()


def test_quiet_turns_bars_off_and_dashboard_goes_to_the_log_once(capsys):
    from globalflux.cli import _configure_logging

    _configure_logging(quiet=True, debug=False)
    assert not progress_enabled()
    _configure_logging(quiet=False, debug=False)
    assert progress_enabled()
    logging.getLogger("globalflux").info("dashboard link", extra={"console": False})
    logging.getLogger("globalflux").info("shown")
    err = capsys.readouterr().err
    assert "shown" in err and "dashboard link" not in err


def test_lstm_epochs_bar(capsys):
    pytest.importorskip("torch")
    from globalflux.models.lstm import LSTMRegressor

    rng = np.random.default_rng(0)
    X, y, S = rng.normal(size=(3, 40, 2)), rng.normal(size=(3, 40)), rng.normal(size=(3, 1))
    m = LSTMRegressor(drivers=("a", "b"), statics=("s",), epochs=2, batches_per_epoch=1,
                      batch_size=4, seq_len=10, num_threads=1, random_state=0)
    m.fit(X, y, static=S)
    assert "LSTM epochs" in capsys.readouterr().err
    set_progress(False)
    m.set_params(epochs=1).fit(X, y, static=S)
    assert "LSTM epochs" not in capsys.readouterr().err
