"""Inference with numpy weights: site series and gridded daily cubes (state carried in time).

:class:`LSTMWeights` holds everything needed to predict as numpy arrays (small when pickled to
Dask workers). :func:`predict_cube` runs the network sequence to sequence over every pixel of a
daily ``(time, y, x)`` cube, carrying the hidden and cell state from one time chunk to the next,
with one Dask task chain per spatial chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from ...errors import DataError, ModelError
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



def lstm_chunk(weights: LSTMWeights, mask: np.ndarray, statics: tuple[np.ndarray, ...],
               state: tuple[np.ndarray, np.ndarray] | None, *drivers: np.ndarray,
               dtype: str = "float32", batch_pixels: int = 4096, torch_threads: int | None = 1,
               device: str = "cpu"):
    """One time chunk of one spatial block: the unit task of :func:`predict_cube`.

    Parameters
    ----------
    weights
        :class:`LSTMWeights`.
    mask
        (ny, nx) bool: pixels to predict (also requires finite statics).
    statics
        Tuple of (ny, nx) arrays, one per static input.
    state
        ``(h, c)`` each (ny*nx, hidden) float32 from the previous time chunk, or None (zeros).
    drivers
        (t, ny, nx) arrays, one per driver.
    torch_threads
        Torch intra-op threads of the process running the task (set, not restored: tasks run
        concurrently). Default 1: Dask supplies the parallelism, and several OpenMP threads
        per task oversubscribe the cores (measured 18x slower on 2 busy cores). None: leave
        torch's setting alone.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available): where the network runs;
        inputs and outputs stay numpy.

    Returns
    -------
    (y, (h, c))
        ``y`` (t, ny, nx) prediction (NaN outside the mask), and the state after the last day.

    Notes
    -----
    Memory per task: the output block (t x ny x nx, ``dtype``), the state (2 x ny*nx x hidden
    float32, kept until the next time chunk of the same block runs) and one batch of
    ``batch_pixels`` x t x n_drivers inputs (float64 while scaling).
    """
    if torch_threads is not None:
        torch = _torch()
        if torch.get_num_threads() != int(torch_threads):
            torch.set_num_threads(int(torch_threads))
    device = resolve_device(device)
    T, ny, nx = drivers[0].shape
    P = ny * nx
    H = weights.hidden_size
    flat = [np.asarray(d).reshape(T, P) for d in drivers]  # views where possible, no float64 copy
    stat = (np.stack([np.asarray(s, dtype="float64").reshape(P) for s in statics], axis=-1)
            if statics else np.zeros((P, 0)))
    ok = np.asarray(mask, dtype=bool).reshape(P) & np.isfinite(stat).all(axis=1)
    if state is None:
        h = np.zeros((P, H), "float32")
        c = np.zeros((P, H), "float32")
    else:
        h, c = state[0].copy(), state[1].copy()
    out = np.full((P, T), np.nan, dtype=dtype)
    idx = np.flatnonzero(ok)
    for s in range(0, idx.size, batch_pixels):
        sel = idx[s:s + batch_pixels]
        dyn = np.stack([f[:, sel] for f in flat], axis=-1).transpose(1, 0, 2)  # (B, T, D)
        y, hh, cc = _run(weights, dyn, stat[sel], h[sel], c[sel], device=device)
        out[sel] = y.astype(dtype)
        h[sel], c[sel] = hh, cc
    return out.T.reshape(T, ny, nx), (h, c)


def _chunk_output(result):
    return result[0]


def _chunk_state(result):
    return result[1]


def predict_cube(model: Any, ds: xr.Dataset, drivers: Sequence[str],
                 statics: Sequence[str], mask: xr.DataArray | None = None, time_chunk: int = 365,
                 *, dtype: str = "float32", batch_pixels: int = 4096, torch_threads: int | None = 1,
                 name: str = "Rs", device: str = "cpu") -> xr.DataArray:
    """Apply a fitted LSTM to every pixel of a daily cube, sequence to sequence, lazily.

    The time axis is cut into chunks of ``time_chunk`` days; for every spatial chunk one chain of
    Dask tasks runs the chunks in order, handing the LSTM's hidden and cell state from one time
    chunk to the next (``lstm_chunk``), so the result equals running each pixel's whole series
    at once (state zero on the first day). No 30-day window is ever recomputed.

    Parameters
    ----------
    model
        A fitted :class:`LSTMRegressor` (or its :meth:`~LSTMRegressor.weights`). The weights go
        into the graph once, as one Dask Delayed object shared by every task.
    ds
        Cube with dims ``(time, y, x)``: the ``drivers`` as (time, y, x) (1-D (time,) ones such
        as ``doy_sin`` broadcast) and ``statics`` as (y, x), in the units the model was trained
        with (IGBP one-hot layers as 0/1 variables).
    drivers, statics
        Variable names in ``ds``, in the model's column order (``model.drivers``,
        ``model.statics``); the names may differ from the model's, the meaning may not.
    mask
        (y, x) bool, True where to predict; None: everywhere the statics are finite.
    time_chunk
        Days per time chunk of the output (and per task).
    dtype, name
        Output dtype and name.
    batch_pixels
        Pixels per LSTM call inside a task (bounds the task's input memory).
    torch_threads
        Torch threads per worker process (see :func:`lstm_chunk`; default 1).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available) for the network in every task.

    Returns
    -------
    xr.DataArray
        Lazy ``(time, y, x)`` prediction in target units, chunked (time_chunk, y-chunks,
        x-chunks); NaN outside the mask. Building it computes nothing.
    """
    import dask
    import dask.array as da

    resolve_device(device)  # an unavailable device fails here, not inside a task
    weights = model if isinstance(model, LSTMWeights) else model.weights()
    if len(drivers) != weights.n_dynamic or len(statics) != weights.n_static:
        raise ModelError(
            f"{len(drivers)} drivers and {len(statics)} statics given, the model takes "
            f"{weights.n_dynamic} and {weights.n_static}", where="predict_cube",
            fix=("Pass the cube variables matching model.drivers="
                 f"{list(getattr(model, 'drivers', []))} and model.statics="
                 f"{list(getattr(model, 'statics', []))}, in that order."))
    missing = [v for v in list(drivers) + list(statics) if v not in ds]
    if missing:
        raise DataError(f"cube lacks variable(s) {missing}", where="predict_cube",
                        fix=f"Add them; the cube has {sorted(ds.data_vars)}.")
    for dim in ("time", "y", "x"):
        if dim not in ds.dims:
            raise DataError(f"cube has no {dim!r} dimension (dims {tuple(ds.dims)})",
                            where="predict_cube", fix="Pass a (time, y, x) cube.")
    ychunks = _spatial_chunks(ds, "y")
    xchunks = _spatial_chunks(ds, "x")
    tchunks = _split(ds.sizes["time"], int(time_chunk))
    chunks = {"time": tchunks, "y": ychunks, "x": xchunks}
    ny, nx, nt = ds.sizes["y"], ds.sizes["x"], ds.sizes["time"]
    keep = {k: c for k, c in ds.coords.items() if set(c.dims) <= {"time", "y", "x"}}
    tmpl2 = xr.DataArray(da.zeros((ny, nx), chunks=(ychunks, xchunks), dtype="int8"),
                         dims=("y", "x"), coords={"y": ds["y"], "x": ds["x"]})
    tmpl3 = xr.DataArray(da.zeros((nt, ny, nx), chunks=(tchunks, ychunks, xchunks), dtype="int8"),
                         dims=("time", "y", "x"),
                         coords={"time": ds["time"], "y": ds["y"], "x": ds["x"]})

    def _prep(arr: xr.DataArray, dims) -> da.Array:
        extra = [d for d in arr.dims if d not in dims]
        if extra:
            raise DataError(f"variable {arr.name!r} has dims {arr.dims}", where="predict_cube",
                            fix="Drivers must be over (time, y, x) and statics over (y, x).")
        a = xr.broadcast(arr, tmpl3 if "time" in dims else tmpl2)[0].transpose(*dims)
        data = a.data if isinstance(a.data, da.Array) else da.from_array(np.asarray(a.data))
        return data.rechunk(tuple(chunks[d] for d in dims))

    drv = [_prep(ds[v], ("time", "y", "x")) for v in drivers]
    sta = [_prep(ds[v], ("y", "x")) for v in statics]
    if mask is None:
        msk = da.ones((ny, nx), dtype=bool, chunks=(ychunks, xchunks))
    else:
        msk = _prep(mask.astype(bool), ("y", "x"))
    w = dask.delayed(weights, pure=True)
    drv_d = [d.to_delayed() for d in drv]
    sta_d = [s.to_delayed() for s in sta]
    msk_d = msk.to_delayed()
    rows = [[[None] * len(xchunks) for _ in ychunks] for _ in tchunks]
    for i, ny in enumerate(ychunks):
        for j, nx in enumerate(xchunks):
            state = None
            for k, nt in enumerate(tchunks):
                res = dask.delayed(lstm_chunk, pure=True)(
                    w, msk_d[i, j], tuple(s[i, j] for s in sta_d), state,
                    *[d[k, i, j] for d in drv_d], dtype=dtype, batch_pixels=batch_pixels,
                    torch_threads=torch_threads, device=device)
                out = dask.delayed(_chunk_output, pure=True)(res)
                state = dask.delayed(_chunk_state, pure=True)(res)
                rows[k][i][j] = da.from_delayed(out, shape=(nt, ny, nx), dtype=np.dtype(dtype))
    data = da.block(rows)
    return xr.DataArray(data, dims=("time", "y", "x"), coords=keep, name=name,
                        attrs={"long_name": "LSTM prediction (sequence to sequence)",
                               "lstm_time_chunk": int(time_chunk)})


def _split(n: int, size: int) -> tuple[int, ...]:
    size = max(1, int(size))
    return tuple([size] * (n // size) + ([n % size] if n % size else []))


def _spatial_chunks(ds: xr.Dataset, dim: str) -> tuple[int, ...]:
    for v in ds.data_vars.values():
        if dim in v.dims and v.chunks is not None:
            return v.chunks[v.dims.index(dim)]
    return (ds.sizes[dim],)
