"""A global LSTM for daily soil CO2 efflux (Smykalov et al.), as a scikit-learn-style estimator.

The network (:class:`EffluxLSTM`) is one ``torch.nn.LSTM`` layer (hidden 128 by default), dropout
(0.2) on its output and a linear head; static site attributes are concatenated to the dynamic
inputs of every time step (Kratzert et al. 2019, HESS 23:5089, "static features at every step").

Training follows hydroDL (Fang et al. 2017, GRL 44:11030): mini-batches of random
``seq_len``-day subsequences drawn across all sites, mean-squared error on observed days only
(missing targets are masked out of the loss), Adam. One *epoch* is ``batches_per_epoch``
mini-batches; by default hydroDL's rule ``ceil(log(0.01) / log(1 - batch_size*seq_len/n_days))``
with ``n_days`` the observed training days, i.e. each observed day is drawn with probability 0.99.
A subsequence is drawn uniformly among the windows of a site that hold at least one observed
target (windows of pure gap carry no loss and are skipped).

Scaling: every input and the target are transformed ``z = (asinh(x) - lo) / (hi - lo)`` with
``lo, hi`` the minimum and maximum of ``asinh(x)`` over the training data only (days inside the
sites' observed spans); they are stored with the model. After scaling, missing driver values
are imputed with the training mean of the scaled driver. Predictions are transformed back with
``sinh(z * (hi - lo) + lo)``.

Checkpoints are a folder: ``weights.pt`` (a state dict of tensors, loaded with
``torch.load(weights_only=True)``, never arbitrary unpickling) and ``config.json`` (parameters,
input names, scalers, epoch, loss history, random-generator state). Training resumes from one;
a checkpoint made with another configuration raises :class:`CheckpointError` naming the keys.

Gridded inference (:func:`predict_cube`) runs the network sequence to sequence over every pixel
of a daily ``(time, y, x)`` cube, carrying the hidden and cell state from one time chunk to the
next, with one Dask task chain per spatial chunk.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import CheckpointError, DataError, ModelError

__all__ = [
    "EffluxLSTM",
    "LSTMRegressor",
    "Scaler",
    "add_doy_features",
    "predict_cube",
    "lstm_chunk",
    "CHECKPOINT_FORMAT",
]

log = logging.getLogger("globalflux.lstm")

CHECKPOINT_FORMAT = 1
#: parameters that must agree between a checkpoint and the estimator loading it
_ARCH_KEYS = ("hidden_size", "dropout", "seq_len", "batch_size", "batches_per_epoch",
              "learning_rate", "random_state", "target", "drivers", "statics")


def _torch():
    """torch, imported lazily: it is the optional extra [lstm] (hundreds of MB)."""
    from ..extras import require

    return require("torch", "lstm", what="the LSTM (globalflux.models.lstm)")


# --------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------
def _module_class():
    torch = _torch()
    nn = torch.nn

    class _EffluxLSTM(nn.Module):
        """LSTM -> dropout -> linear head; statics concatenated to every step's inputs.

        Parameters
        ----------
        n_dynamic, n_static
            Number of daily and of static inputs.
        hidden_size
            LSTM hidden units (128 in Smykalov et al.).
        dropout
            Dropout probability on the LSTM output before the head (0.2).
        """

        def __init__(self, n_dynamic: int, n_static: int, hidden_size: int = 128,
                     dropout: float = 0.2):
            super().__init__()
            self.n_dynamic = n_dynamic
            self.n_static = n_static
            self.hidden_size = hidden_size
            self.lstm = nn.LSTM(n_dynamic + n_static, hidden_size, batch_first=True)
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(hidden_size, 1)

        def forward(self, x_dyn, x_static=None, state=None):
            """``x_dyn`` (batch, time, n_dynamic), ``x_static`` (batch, n_static), ``state``
            ``(h, c)`` each (1, batch, hidden) or None -> ``(y (batch, time), (h, c))``."""
            if self.n_static:
                stat = x_static[:, None, :].expand(-1, x_dyn.shape[1], -1)
                x = torch.cat([x_dyn, stat], dim=-1)
            else:
                x = x_dyn
            out, new_state = self.lstm(x, state)
            y = self.head(self.dropout(out)).squeeze(-1)
            return y, new_state

    return _EffluxLSTM


def EffluxLSTM(n_dynamic: int, n_static: int, hidden_size: int = 128, dropout: float = 0.2):
    """Build the network (a ``torch.nn.Module``); see the module docstring."""
    return _module_class()(n_dynamic, n_static, hidden_size, dropout)


# --------------------------------------------------------------------------------------------
# scaling
# --------------------------------------------------------------------------------------------
class Scaler:
    """``z = (asinh(x) - lo) / (hi - lo)`` per column; ``lo, hi`` from training data only.

    A constant column (``hi == lo``) maps to 0. ``mean`` is the training mean of ``z`` (used to
    impute missing inputs).
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, mean: np.ndarray):
        self.lo = np.asarray(lo, dtype="float64")
        self.hi = np.asarray(hi, dtype="float64")
        self.mean = np.asarray(mean, dtype="float64")

    @classmethod
    def fit(cls, x: np.ndarray, names: Sequence[str], what: str) -> Scaler:
        """Fit on ``x`` (..., n_columns); a column without any finite value is a DataError."""
        a = np.arcsinh(np.asarray(x, dtype="float64").reshape(-1, len(names)))
        finite = np.isfinite(a)
        bad = [n for n, ok in zip(names, finite.any(axis=0), strict=True) if not ok]
        if bad:
            raise DataError(f"{what} {bad} have no finite value in the training data",
                            where=", ".join(bad),
                            fix="Check the input variables, or leave them out of the model.")
        lo = np.nanmin(a, axis=0)
        hi = np.nanmax(a, axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        mean = np.nanmean((a - lo) / span, axis=0)
        return cls(lo, hi, mean)

    def transform(self, x: np.ndarray, impute: bool = True) -> np.ndarray:
        span = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
        z = (np.arcsinh(np.asarray(x, dtype="float64")) - self.lo) / span
        if impute:
            z = np.where(np.isfinite(z), z, self.mean)
        return z.astype("float32")

    def inverse(self, z: np.ndarray) -> np.ndarray:
        span = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
        return np.sinh(np.asarray(z, dtype="float64") * span + self.lo)

    def to_json(self) -> dict[str, list[float]]:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist(), "mean": self.mean.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scaler:
        return cls(np.array(d["lo"]), np.array(d["hi"]), np.array(d["mean"]))


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def add_doy_features(ds: xr.Dataset, time_dim: str = "time") -> xr.Dataset:
    """Add ``doy_sin`` and ``doy_cos``: the day of year on the unit circle (period 365.25 d).

    Works on site Datasets ``(site, time)`` and cubes ``(time, y, x)``; the new variables are
    1-D over ``time`` (they broadcast) and lazy-free (computed from the time coordinate only).
    """
    t = ds[time_dim].dt.dayofyear.astype("float64")
    ang = 2.0 * np.pi * (t - 1.0) / 365.25
    return ds.assign(doy_sin=np.sin(ang).astype("float32"), doy_cos=np.cos(ang).astype("float32"))


def _as_arrays(model: LSTMRegressor, X, y=None, static=None, *, need_target: bool):
    """Dataset or arrays -> (dyn (S, T, D), stat (S, K), y (S, T) or None, site ids, times)."""
    if isinstance(X, xr.Dataset):
        drivers, statics, target = list(model.drivers), list(model.statics), model.target
        missing = [v for v in drivers + statics + ([target] if need_target else []) if v not in X]
        if missing:
            raise DataError(f"the site dataset lacks variable(s) {missing}", where="LSTM inputs",
                            fix=f"Add them or change lstm.drivers/statics; it has {sorted(X.data_vars)}.")
        if "site" not in X.dims or "time" not in X.dims:
            raise DataError(f"dims {tuple(X.dims)} are not (site, time)", where="LSTM inputs",
                            fix="Pass a Dataset with dims site and time (globalflux.sites.to_dataset).")
        tmpl = xr.DataArray(np.zeros((X.sizes["site"], X.sizes["time"]), dtype="int8"),
                            dims=("site", "time"), coords={"site": X["site"], "time": X["time"]})
        dyn = np.stack([xr.broadcast(X[v], tmpl)[0].transpose("site", "time").values
                        .astype("float64") for v in drivers], axis=-1)
        stat = (np.stack([X[v].transpose("site").values.astype("float64") for v in statics], axis=-1)
                if statics else np.zeros((X.sizes["site"], 0)))
        yy = X[target].transpose("site", "time").values.astype("float64") if need_target else None
        ids = [str(s) for s in X["site"].values]
        return dyn, stat, yy, ids, X["time"]
    dyn = np.asarray(X, dtype="float64")
    if dyn.ndim != 3:
        raise DataError(f"dynamic inputs have shape {dyn.shape}", where="LSTM inputs",
                        fix="Pass an array (n_sites, n_days, n_drivers) or a (site, time) Dataset.")
    if dyn.shape[-1] != len(model.drivers):
        raise DataError(f"{dyn.shape[-1]} driver columns for drivers {list(model.drivers)}",
                        where="LSTM inputs", fix="Give one column per name in drivers.")
    S = dyn.shape[0]
    if static is None:
        stat = np.zeros((S, 0))
    else:
        stat = np.asarray(static, dtype="float64").reshape(S, -1)
    if stat.shape[1] != len(model.statics):
        raise DataError(f"{stat.shape[1]} static columns for statics {list(model.statics)}",
                        where="LSTM inputs", fix="Give one column per name in statics.")
    yy = None
    if need_target:
        if y is None:
            raise DataError("no target given", where="LSTM inputs",
                            fix="Pass y (n_sites, n_days) or a Dataset holding the target.")
        yy = np.asarray(y, dtype="float64").reshape(dyn.shape[:2])
    return dyn, stat, yy, [f"site{i}" for i in range(S)], None


def _check_sites(dyn, stat, y, ids, drivers, statics, seq_len):
    """Bad inputs named: all-NaN targets, a driver or static missing at a site, short sites."""
    obs = np.isfinite(y)
    if not obs.any():
        raise DataError("all target values are NaN", where="LSTM target",
                        fix="Check the site data: no observed day to train on.")
    spans = []
    for i, sid in enumerate(ids):
        if not obs[i].any():
            raise DataError("all target values are NaN at this site", where=f"site {sid}",
                            fix="Drop the site or check its data.")
        idx = np.flatnonzero(obs[i])
        a, b = int(idx[0]), int(idx[-1]) + 1
        if b - a < seq_len:
            raise DataError(f"has {b - a} days of data, fewer than the sequence length {seq_len}",
                            where=f"site {sid}",
                            fix="Drop the site or lower seq_len.")
        for j, name in enumerate(drivers):
            if not np.isfinite(dyn[i, a:b, j]).any():
                raise DataError(f"driver {name!r} is missing (all NaN) at this site",
                                where=f"site {sid}",
                                fix=f"Drop the site or remove {name!r} from the drivers.")
        for j, name in enumerate(statics):
            if not np.isfinite(stat[i, j]):
                raise DataError(f"static attribute {name!r} is missing at this site",
                                where=f"site {sid}",
                                fix=f"Drop the site or remove {name!r} from the statics.")
        spans.append((a, b))
    return spans


@contextmanager
def _threads(n: int | None):
    torch = _torch()
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _resolve_device(device: str) -> str:
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


def hydrodl_batches(n_days: int, batch_size: int, seq_len: int) -> int:
    """hydroDL's iterations per epoch: each of ``n_days`` drawn with probability 0.99."""
    frac = batch_size * seq_len / max(n_days, 1)
    if frac >= 1.0:
        return 1
    return max(1, math.ceil(math.log(0.01) / math.log(1.0 - frac)))


# --------------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------------
class LSTMRegressor:
    """One LSTM for all sites, sequence to sequence (scikit-learn estimator contract).

    Parameters
    ----------
    drivers, statics
        Names of the daily inputs and of the static attributes, in column order.
    target
        Name of the target variable in a Dataset (e.g. ``"Rs"``, g C m-2 d-1).
    hidden_size, dropout
        Network size (128) and dropout before the head (0.2).
    seq_len
        Days per training subsequence (30).
    epochs, batch_size, batches_per_epoch
        Training length: ``epochs`` x ``batches_per_epoch`` mini-batches of ``batch_size``
        subsequences; ``batches_per_epoch=None`` uses :func:`hydrodl_batches`.
    learning_rate
        Adam learning rate.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
    num_threads
        Torch CPU threads while fitting and predicting (None: torch's default).
    random_state
        Seed of weights, subsequence draws and dropout.
    verbose
        Log the loss every this many epochs (0: never).

    Attributes
    ----------
    module_
        The fitted ``torch.nn.Module``.
    scaler_dyn_, scaler_static_, scaler_y_
        :class:`Scaler` of drivers, statics and target (training data only).
    epoch_
        Epochs trained so far. ``loss_history_``: mean training loss per epoch (scaled MSE).
    n_batches_per_epoch_
        Mini-batches per epoch actually used.

    Notes
    -----
    ``X`` is a set of sequences (sites x days x drivers) and ``y`` a sequence per site, so the
    estimator is not run through scikit-learn's ``parametrize_with_checks`` (its checks feed 2-D
    tabular ``X``); ``get_params``/``set_params``/``clone``, ``fit`` returning ``self``, learned
    attributes ending in ``_`` and seeded determinism are tested in ``tests/test_lstm.py``.
    """

    def __init__(self, drivers: Sequence[str] = ("Ts",), statics: Sequence[str] = (),
                 target: str = "Rs", hidden_size: int = 128, dropout: float = 0.2,
                 seq_len: int = 30, epochs: int = 200, batch_size: int = 64,
                 batches_per_epoch: int | None = None, learning_rate: float = 1e-3,
                 device: str = "cpu", num_threads: int | None = None, random_state: int = 0,
                 verbose: int = 0):
        self.drivers = drivers
        self.statics = statics
        self.target = target
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.seq_len = seq_len
        self.epochs = epochs
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.learning_rate = learning_rate
        self.device = device
        self.num_threads = num_threads
        self.random_state = random_state
        self.verbose = verbose

    # sklearn plumbing -------------------------------------------------------------------------
    _PARAMS = ("drivers", "statics", "target", "hidden_size", "dropout", "seq_len", "epochs",
               "batch_size", "batches_per_epoch", "learning_rate", "device", "num_threads",
               "random_state", "verbose")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params) -> LSTMRegressor:
        for k, v in params.items():
            if k not in self._PARAMS:
                raise ValueError(f"invalid parameter {k!r} for LSTMRegressor")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._PARAMS)
        return f"LSTMRegressor({args})"

    def _config(self) -> dict[str, Any]:
        """JSON-able identity of the model (compared when loading a checkpoint)."""
        return {
            "hidden_size": int(self.hidden_size),
            "dropout": float(self.dropout),
            "seq_len": int(self.seq_len),
            "batch_size": int(self.batch_size),
            "batches_per_epoch": None if self.batches_per_epoch is None else int(self.batches_per_epoch),
            "learning_rate": float(self.learning_rate),
            "random_state": int(self.random_state),
            "target": str(self.target),
            "drivers": [str(d) for d in self.drivers],
            "statics": [str(s) for s in self.statics],
        }

    # fitting ------------------------------------------------------------------------------------
    def fit(self, X, y=None, *, static=None, checkpoint: str | Path | None = None,
            checkpoint_every: int = 10, resume: bool = False, init_from: str | Path | None = None):
        """Train on a ``(site, time)`` Dataset or on arrays.

        Parameters
        ----------
        X
            ``xr.Dataset`` with dims ``(site, time)`` holding ``drivers`` (site, time),
            ``statics`` (site,) and ``target`` (site, time); or an array
            ``(n_sites, n_days, n_drivers)``. Training data only: the scalers are fitted on it.
        y
            Target ``(n_sites, n_days)`` when ``X`` is an array (NaN = not observed).
        static
            Static attributes ``(n_sites, n_statics)`` when ``X`` is an array.
        checkpoint
            Folder to save a resumable checkpoint to every ``checkpoint_every`` epochs and at
            the end.
        resume
            Continue from ``checkpoint`` when it exists (its configuration must match).
        init_from
            Start from the weights, scalers and epoch count of this checkpoint (its
            configuration must match) and train on ``X`` up to ``epochs`` epochs in total.

        Returns
        -------
        self
        """
        torch = _torch()
        dyn, stat, yy, ids, _ = _as_arrays(self, X, y, static, need_target=True)
        spans = _check_sites(dyn, stat, yy, ids, list(self.drivers), list(self.statics),
                             int(self.seq_len))
        device = _resolve_device(self.device)
        start_from = None
        if resume and checkpoint is not None and (Path(checkpoint) / "config.json").is_file():
            start_from = Path(checkpoint)
        elif init_from is not None:
            start_from = Path(init_from)

        with _threads(self.num_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.random_state))
            if start_from is not None:
                state, meta = _read_checkpoint(start_from, self._config())
                self._restore_meta(meta)
            else:
                in_span = np.zeros(yy.shape, dtype=bool)
                for i, (a, b) in enumerate(spans):
                    in_span[i, a:b] = True
                self.scaler_dyn_ = Scaler.fit(dyn[in_span], list(self.drivers), "drivers")
                self.scaler_static_ = (Scaler.fit(stat, list(self.statics), "statics")
                                       if len(self.statics) else Scaler(np.zeros(0), np.zeros(0), np.zeros(0)))
                self.scaler_y_ = Scaler.fit(yy[in_span][:, None], [str(self.target)], "target")
                self.epoch_ = 0
                self.loss_history_ = []
                state = None
            module = EffluxLSTM(len(self.drivers), len(self.statics), int(self.hidden_size),
                                float(self.dropout)).to(device)
            opt = torch.optim.Adam(module.parameters(), lr=float(self.learning_rate))
            rng = np.random.default_rng(int(self.random_state))
            if state is not None:
                module.load_state_dict(state["model"])
                if "optimizer" in state and meta.get("optimizer_saved"):
                    opt.load_state_dict(_nest_optimizer(state))
                if "torch_rng" in state:
                    torch.set_rng_state(state["torch_rng"])
                if meta.get("numpy_rng"):
                    rng.bit_generator.state = meta["numpy_rng"]
            self.module_ = module
            self.device_ = device

            # scaled training arrays (float32), target NaN where unobserved
            zd = self.scaler_dyn_.transform(dyn)
            zs = (self.scaler_static_.transform(stat) if len(self.statics)
                  else np.zeros((dyn.shape[0], 0), "float32"))
            zy = self.scaler_y_.transform(yy[..., None], impute=False)[..., 0]
            L = int(self.seq_len)
            starts = _valid_starts(np.isfinite(yy), spans, L)
            n_obs = int(np.isfinite(yy).sum())
            nb = (int(self.batches_per_epoch) if self.batches_per_epoch is not None
                  else hydrodl_batches(n_obs, int(self.batch_size), L))
            self.n_batches_per_epoch_ = nb
            self.n_sites_ = dyn.shape[0]
            t_dyn = torch.from_numpy(zd).to(device)
            t_stat = torch.from_numpy(zs).to(device)
            t_y = torch.from_numpy(np.nan_to_num(zy, nan=0.0).astype("float32")).to(device)
            t_m = torch.from_numpy(np.isfinite(zy)).to(device)
            offs = torch.arange(L, device=device)
            t0 = time.perf_counter()
            from ..progress import progress_bar  # a bar of epochs (off: set_progress(False))

            bar_cm = progress_bar(max(int(self.epochs) - self.epoch_, 0), "LSTM epochs", unit="epoch")
            bar = bar_cm.__enter__()
            while self.epoch_ < int(self.epochs):
                module.train()
                total, count = 0.0, 0
                for _ in range(nb):
                    site, start = _draw(rng, starts, int(self.batch_size))
                    si = torch.from_numpy(site).to(device)
                    ti = torch.from_numpy(start).to(device)[:, None] + offs[None, :]
                    xb = t_dyn[si[:, None], ti]
                    yb = t_y[si[:, None], ti]
                    mb = t_m[si[:, None], ti]
                    pred, _ = module(xb, t_stat[si])
                    loss = ((pred - yb) ** 2 * mb).sum() / mb.sum().clamp(min=1)
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
                    opt.step()
                    total += float(loss.detach())
                    count += 1
                self.epoch_ += 1
                self.loss_history_.append(total / max(count, 1))
                bar.update(1)
                bar.set_postfix_str(f"loss {self.loss_history_[-1]:.4f}")
                if self.verbose and self.epoch_ % int(self.verbose) == 0:
                    log.info("LSTM epoch %d/%d: loss %.5f (%.1f s)", self.epoch_, self.epochs,
                             self.loss_history_[-1], time.perf_counter() - t0)
                if checkpoint is not None and (self.epoch_ % int(checkpoint_every) == 0
                                               or self.epoch_ == int(self.epochs)):
                    self._save(checkpoint, opt, rng)
            bar_cm.__exit__(None, None, None)
        self.fit_seconds_ = time.perf_counter() - t0
        module.eval()
        return self

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        self.scaler_dyn_ = Scaler.from_json(meta["scalers"]["dynamic"])
        self.scaler_static_ = Scaler.from_json(meta["scalers"]["static"])
        self.scaler_y_ = Scaler.from_json(meta["scalers"]["target"])
        self.epoch_ = int(meta["epoch"])
        self.loss_history_ = list(meta.get("loss_history", []))

    # prediction ---------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise ModelError("the LSTM is not fitted", where="LSTMRegressor",
                             fix="Call fit() or LSTMRegressor.load(checkpoint) first.")

    def predict(self, X, *, static=None):
        """Sequence-to-sequence prediction of the target (original units).

        Each series is run from its first to its last day with a finite driver (state starts at
        zero there); days outside that span are NaN. A Dataset gives a DataArray ``(site,
        time)``; arrays give an array ``(n_sites, n_days)``.
        """
        self._check_fitted()
        dyn, stat, _, ids, times = _as_arrays(self, X, None, static, need_target=False)
        out = np.full(dyn.shape[:2], np.nan)
        weights = self.weights()
        with _threads(self.num_threads):
            for i in range(dyn.shape[0]):
                ok = np.isfinite(dyn[i]).any(axis=1)
                if not ok.any():
                    continue
                idx = np.flatnonzero(ok)
                a, b = int(idx[0]), int(idx[-1]) + 1
                if len(self.statics) and not np.isfinite(stat[i]).all():
                    continue
                yhat, _, _ = _run(weights, dyn[i:i + 1, a:b], stat[i:i + 1], None, None,
                                  device=self.device_ if hasattr(self, "device_") else "cpu")
                out[i, a:b] = yhat[0]
        if isinstance(X, xr.Dataset):
            return xr.DataArray(out, dims=("site", "time"),
                                coords={"site": X["site"].values, "time": times.values},
                                name=f"{self.target}_pred",
                                attrs={"long_name": f"LSTM prediction of {self.target}"})
        return out

    def weights(self) -> LSTMWeights:
        """Numpy copy of everything needed to predict (for Dask tasks and cube inference)."""
        self._check_fitted()
        sd = {k: v.detach().cpu().numpy().copy() for k, v in self.module_.state_dict().items()}
        return LSTMWeights(sd, self.scaler_dyn_, self.scaler_static_, self.scaler_y_,
                           int(self.hidden_size), len(self.drivers), len(self.statics))

    # checkpoints --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to folder ``path`` (weights.pt + config.json)."""
        self._check_fitted()
        return self._save(path, None, None)

    def _save(self, path, opt, rng) -> Path:
        torch = _torch()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {"model": {k: v.detach().cpu() for k, v in self.module_.state_dict().items()},
                 "torch_rng": torch.get_rng_state()}
        if opt is not None:
            state.update(_flatten_optimizer(opt.state_dict()))
        meta = {
            "format": CHECKPOINT_FORMAT,
            "config": self._config(),
            "params": {k: getattr(self, k) if not isinstance(getattr(self, k), tuple)
                       else list(getattr(self, k)) for k in self._PARAMS},
            "epoch": int(self.epoch_),
            "loss_history": [float(v) for v in self.loss_history_],
            "scalers": {"dynamic": self.scaler_dyn_.to_json(),
                        "static": self.scaler_static_.to_json(),
                        "target": self.scaler_y_.to_json()},
            "numpy_rng": rng.bit_generator.state if rng is not None else None,
            "optimizer_saved": opt is not None,
        }
        meta["params"]["drivers"] = list(self.drivers)
        meta["params"]["statics"] = list(self.statics)
        # write to temporary names, then rename: an interrupted save never leaves half a file
        tmp_w, tmp_c = path / "weights.pt.tmp", path / "config.json.tmp"
        torch.save(state, tmp_w)
        tmp_c.write_text(json.dumps(meta, indent=1, default=_json_default), encoding="utf-8")
        tmp_w.replace(path / "weights.pt")
        tmp_c.replace(path / "config.json")
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", num_threads: int | None = None,
             expect: LSTMRegressor | None = None) -> LSTMRegressor:
        """Load a fitted model from a checkpoint folder (no arbitrary unpickling).

        ``expect``: an estimator whose configuration the checkpoint must match
        (:class:`CheckpointError` naming the differing keys otherwise).
        """
        path = Path(path)
        meta = _read_meta(path)
        params = dict(meta["params"])
        params["device"], params["num_threads"] = device, num_threads
        params["drivers"] = tuple(params["drivers"])
        params["statics"] = tuple(params["statics"])
        model = cls(**{k: v for k, v in params.items() if k in cls._PARAMS})
        state, meta = _read_checkpoint(path, (expect or model)._config())
        model._restore_meta(meta)
        dev = _resolve_device(device)
        module = EffluxLSTM(len(model.drivers), len(model.statics), int(model.hidden_size),
                            float(model.dropout)).to(dev)
        module.load_state_dict(state["model"])
        module.eval()
        model.module_ = module
        model.device_ = dev
        return model


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _flatten_optimizer(osd: dict) -> dict:
    """Adam's state dict as flat tensors + JSON-able parts (all loadable with weights_only)."""
    out = {"optimizer": {"param_groups": osd["param_groups"],
                         "state": {str(k): v for k, v in osd["state"].items()}}}
    return out


def _nest_optimizer(state: dict) -> dict:
    o = state["optimizer"]
    return {"param_groups": o["param_groups"], "state": {int(k): v for k, v in o["state"].items()}}


def _read_meta(path: Path) -> dict[str, Any]:
    cfg = path / "config.json"
    if not cfg.is_file() or not (path / "weights.pt").is_file():
        raise CheckpointError("not a checkpoint folder (needs weights.pt and config.json)",
                              where=str(path), fix="Point to a folder written by LSTMRegressor.save "
                              "or a run's models/lstm.")
    try:
        meta = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"config.json is corrupt ({exc.__class__.__name__})", where=str(cfg),
                              fix="Delete the checkpoint and train afresh.") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT}",
                              where=str(cfg), fix="Retrain with this globalflux version.")
    return meta


def _read_checkpoint(path: Path, config: dict[str, Any]) -> tuple[dict, dict]:
    """Weights (weights_only) and metadata; configuration must equal ``config``."""
    torch = _torch()
    path = Path(path)
    meta = _read_meta(path)
    saved = meta.get("config", {})
    diff = [k for k in sorted(set(saved) | set(config)) if saved.get(k) != config.get(k)]
    if diff:
        detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {config.get(k)!r}" for k in diff)
        raise CheckpointError(f"checkpoint was made with another configuration ({detail})",
                              where=str(path),
                              fix="Use the checkpoint's settings, or train afresh without it "
                              "(remove lstm.checkpoint or choose another --out).")
    try:
        state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read the weights is a bad file
        raise CheckpointError(f"weights.pt cannot be read ({exc.__class__.__name__})",
                              where=str(path / "weights.pt"),
                              fix="Delete the checkpoint and train afresh.") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError("weights.pt holds no model state dict", where=str(path / "weights.pt"),
                              fix="Delete the checkpoint and train afresh.")
    return state, meta


# --------------------------------------------------------------------------------------------
# subsequence sampling
# --------------------------------------------------------------------------------------------
def _valid_starts(obs: np.ndarray, spans, L: int) -> tuple[np.ndarray, np.ndarray]:
    """All (site, start) of L-day windows inside a site's span that hold >= 1 observed day."""
    sites, starts = [], []
    for i, (a, b) in enumerate(spans):
        c = np.concatenate([[0], np.cumsum(obs[i, a:b])])
        n_win = (b - a) - L + 1
        s = np.arange(n_win)
        has = (c[s + L] - c[s]) > 0
        st = a + s[has]
        sites.append(np.full(st.size, i, dtype=np.int64))
        starts.append(st.astype(np.int64))
    return np.concatenate(sites), np.concatenate(starts)


def _draw(rng: np.random.Generator, starts, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` windows: a site uniformly, then one of its valid windows uniformly (hydroDL)."""
    sites, st = starts
    uniq, first, counts = np.unique(sites, return_index=True, return_counts=True)
    pick = rng.integers(0, uniq.size, size=n)
    within = (rng.random(n) * counts[pick]).astype(np.int64)
    idx = first[pick] + within
    return sites[idx], st[idx]


# --------------------------------------------------------------------------------------------
# numpy-weights inference shared by predict() and predict_cube()
# --------------------------------------------------------------------------------------------
class LSTMWeights:
    """Everything needed to predict, as numpy arrays (pickles small; one copy per Dask graph)."""

    def __init__(self, state: dict[str, np.ndarray], scaler_dyn: Scaler, scaler_static: Scaler,
                 scaler_y: Scaler, hidden_size: int, n_dynamic: int, n_static: int):
        self.state = state
        self.scaler_dyn = scaler_dyn
        self.scaler_static = scaler_static
        self.scaler_y = scaler_y
        self.hidden_size = hidden_size
        self.n_dynamic = n_dynamic
        self.n_static = n_static
        self.token = _token(state)

    def __dask_tokenize__(self):
        return ("LSTMWeights", self.token)

    def __repr__(self) -> str:
        return (f"LSTMWeights(hidden={self.hidden_size}, dynamic={self.n_dynamic}, "
                f"static={self.n_static}, token={self.token[:8]})")


def _token(state: dict[str, np.ndarray]) -> str:
    import hashlib

    h = hashlib.sha1()
    for k in sorted(state):
        h.update(k.encode())
        h.update(np.ascontiguousarray(state[k]).tobytes())
    return h.hexdigest()


_MODULE_CACHE: dict[tuple[str, str], Any] = {}


def _module_for(weights: LSTMWeights, device: str = "cpu"):
    """The torch module of ``weights``, built once per process and device."""
    torch = _torch()
    key = (weights.token, device)
    mod = _MODULE_CACHE.get(key)
    if mod is None:
        mod = EffluxLSTM(weights.n_dynamic, weights.n_static, weights.hidden_size, 0.0)
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
    zd = weights.scaler_dyn.transform(dyn)
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
               dtype: str = "float32", batch_pixels: int = 4096, torch_threads: int | None = 1):
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
        y, hh, cc = _run(weights, dyn, stat[sel], h[sel], c[sel])
        out[sel] = y.astype(dtype)
        h[sel], c[sel] = hh, cc
    return out.T.reshape(T, ny, nx), (h, c)


def _chunk_output(result):
    return result[0]


def _chunk_state(result):
    return result[1]


def predict_cube(model: LSTMRegressor | LSTMWeights, ds: xr.Dataset, drivers: Sequence[str],
                 statics: Sequence[str], mask: xr.DataArray | None = None, time_chunk: int = 365,
                 *, dtype: str = "float32", batch_pixels: int = 4096, torch_threads: int | None = 1,
                 name: str = "Rs") -> xr.DataArray:
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

    Returns
    -------
    xr.DataArray
        Lazy ``(time, y, x)`` prediction in target units, chunked (time_chunk, y-chunks,
        x-chunks); NaN outside the mask. Building it computes nothing.
    """
    import dask
    import dask.array as da

    weights = model.weights() if isinstance(model, LSTMRegressor) else model
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
                    torch_threads=torch_threads)
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
