"""Inference with numpy weights: site series (state carried in time).

:class:`LSTMWeights` holds everything needed to predict as numpy arrays (small when pickled to
Dask workers); :func:`model_inputs` turns raw drivers into network inputs (scaling, missing
values, availability channels) for training, site prediction and maps alike.

Gridded inference lives in :mod:`globalflux.mapping` (:func:`~globalflux.mapping.apply_lstm_to_cube`,
:func:`~globalflux.mapping.map_lstm`): the one mapping path. :func:`predict_cube` and
:func:`lstm_chunk` are deprecated aliases of it, kept for older callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from ...errors import ModelError
from .network import EffluxLSTM, _torch
from .scaling import Scaler

__all__ = ["LSTMWeights", "lstm_chunk", "predict_cube"]


class LSTMWeights:
    """Everything needed to predict, as numpy arrays (pickles small; one copy per Dask graph)."""

    def __init__(self, state: dict[str, np.ndarray], scaler_dyn: Scaler, scaler_static: Scaler,
                 scaler_y: Scaler, hidden_size: int, n_dynamic: int, n_static: int,
                 available: Sequence[int] = ()):
        self.state = state
        self.scaler_dyn = scaler_dyn
        self.scaler_static = scaler_static
        self.scaler_y = scaler_y
        self.hidden_size = hidden_size
        self.n_dynamic = n_dynamic
        self.n_static = n_static
        #: driver columns that get a 0/1 availability channel (appended after the drivers)
        self.available = tuple(int(i) for i in available)
        self.token = _token(state) + (f"-a{','.join(map(str, self.available))}"
                                      if self.available else "")

    def __dask_tokenize__(self):
        return ("LSTMWeights", self.token)

    def __repr__(self) -> str:
        return (f"LSTMWeights(hidden={self.hidden_size}, dynamic={self.n_dynamic}, "
                f"available={list(self.available)}, "
                f"static={self.n_static}, token={self.token[:8]})")


def _token(state: dict[str, np.ndarray]) -> str:
    import hashlib

    h = hashlib.sha1()
    for k in sorted(state):
        h.update(k.encode())
        h.update(np.ascontiguousarray(state[k]).tobytes())
    return h.hexdigest()


_MODULE_CACHE: dict[tuple[str, str], Any] = {}


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without CUDA is a ModelError."""
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' requested but CUDA is not available", where="lstm.device",
                         fix="Use device: auto or cpu.")
    if device not in ("cpu", "cuda"):
        raise ModelError(f"unknown device {device!r}", where="lstm.device",
                         fix="Use auto, cpu or cuda.")
    return device


def model_inputs(scaler: Scaler, dyn: np.ndarray, available: Sequence[int] = ()) -> np.ndarray:
    """Network inputs from raw drivers ``dyn`` (..., D): scaled drivers (missing values filled
    with the training mean of the scaled driver) followed by one 0/1 availability channel per
    driver column in ``available`` (1 where the raw value is finite)."""
    z = scaler.transform(dyn)
    if not len(available):
        return z
    av = np.isfinite(np.asarray(dyn)[..., list(available)]).astype("float32")
    return np.concatenate([z, av], axis=-1)


def _module_for(weights: LSTMWeights, device: str = "cpu"):
    """The torch module of ``weights``, built once per process and device."""
    torch = _torch()
    key = (weights.token, device)
    mod = _MODULE_CACHE.get(key)
    if mod is None:
        mod = EffluxLSTM(weights.n_dynamic + len(weights.available), weights.n_static,
                         weights.hidden_size, 0.0)
        mod.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.state.items()})
        mod.eval().to(device)
        if len(_MODULE_CACHE) > 8:
            _MODULE_CACHE.clear()
        _MODULE_CACHE[key] = mod
    return mod


def _run(weights: LSTMWeights, dyn: np.ndarray, stat: np.ndarray, h0, c0, device: str = "cpu"):
    """Run ``dyn`` (P, T, D) raw inputs with ``stat`` (P, K) from state (h0, c0) (each (P, H)
    float32 or None). Returns ``(y (P, T) original units, h, c)``."""
    torch = _torch()
    mod = _module_for(weights, device)
    zd = model_inputs(weights.scaler_dyn, dyn, weights.available)
    zs = (weights.scaler_static.transform(stat) if weights.n_static
          else np.zeros((dyn.shape[0], 0), "float32"))
    with torch.no_grad():
        state = None
        if h0 is not None:
            state = (torch.from_numpy(np.ascontiguousarray(h0, "float32"))[None].to(device),
                     torch.from_numpy(np.ascontiguousarray(c0, "float32"))[None].to(device))
        z, (h, c) = mod(torch.from_numpy(zd).to(device), torch.from_numpy(zs).to(device), state)
    y = weights.scaler_y.inverse(z.cpu().numpy()[..., None])[..., 0]
    return y, h[0].cpu().numpy(), c[0].cpu().numpy()



def lstm_chunk(weights: LSTMWeights, mask: np.ndarray, statics: Sequence[np.ndarray],
               state: tuple[np.ndarray, np.ndarray] | None, *drivers: np.ndarray,
               dtype: str = "float32", batch_pixels: int = 4096, torch_threads: int | None = 1,
               device: str = "cpu"):
    """Deprecated alias of :func:`globalflux.mapping.lstm_block` (the task of the one gridded
    LSTM path); ``device="auto"`` is resolved here. Same arguments and result."""
    from ...mapping import lstm_block

    return lstm_block(weights, mask, tuple(statics), state, *drivers, dtype=dtype,
                      batch_pixels=batch_pixels, torch_threads=torch_threads,
                      device=resolve_device(device))


def predict_cube(model: Any, ds: xr.Dataset, drivers: Sequence[str],
                 statics: Sequence[str], mask: xr.DataArray | None = None, time_chunk: int = 365,
                 *, dtype: str = "float32", batch_pixels: int = 4096, torch_threads: int | None = 1,
                 name: str = "Rs", device: str = "cpu") -> xr.DataArray:
    """Deprecated: use :func:`globalflux.mapping.apply_lstm_to_cube` (this calls it).

    Kept so that older code (and ``globalflux bench``) keeps working: the same lazy ``(time, y,
    x)`` prediction, state carried across time chunks, with the arguments of
    :func:`~globalflux.mapping.apply_lstm_to_cube` (``check_daily=False``: this function never
    checked the time axis). Emits a :class:`DeprecationWarning`.
    """
    import warnings

    from ...mapping import apply_lstm_to_cube

    warnings.warn("globalflux.models.lstm.predict_cube is deprecated; use "
                  "globalflux.mapping.apply_lstm_to_cube (or map_lstm for a packaged model)",
                  DeprecationWarning, stacklevel=2)
    return apply_lstm_to_cube(model, ds, drivers, statics, mask=mask, time_chunk=time_chunk,
                              dtype=dtype, batch_pixels=batch_pixels, torch_threads=torch_threads,
                              check_daily=False, device=device, name=name)
