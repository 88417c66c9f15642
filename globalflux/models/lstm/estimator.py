"""The estimator: :class:`LSTMRegressor`, one LSTM for all sites (scikit-learn contract).

Training follows hydroDL (Fang et al. 2017, GRL 44:11030): mini-batches of random
``seq_len``-day subsequences drawn across all sites, mean-squared error on observed days only
(missing targets are masked out of the loss), Adam. One *epoch* is ``batches_per_epoch``
mini-batches; by default hydroDL's rule ``ceil(log(0.01) / log(1 - batch_size*seq_len/n_days))``
with ``n_days`` the observed training days, i.e. each observed day is drawn with probability 0.99.
A subsequence is drawn uniformly among the windows of a site that hold at least one observed
target (windows of pure gap carry no loss and are skipped).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ...errors import DataError, ModelError
from ...progress import progress_bar
from .checkpoint import (
    CHECKPOINT_FORMAT,
    _flatten_optimizer,
    _nest_optimizer,
    _read_checkpoint,
    _read_meta,
    write_checkpoint,
)
from .inference import LSTMWeights, _run, model_inputs, resolve_device
from .network import EffluxLSTM, _torch
from .scaling import Scaler

__all__ = ["LSTMRegressor", "LSTMEnsemble", "add_doy_features", "hydrodl_batches",
           "PACKAGE_FORMAT"]

#: version of the ``to_package`` section layout
PACKAGE_FORMAT = 1

log = logging.getLogger("globalflux.lstm")


def add_doy_features(ds: xr.Dataset, time_dim: str = "time") -> xr.Dataset:
    """Add ``doy_sin`` and ``doy_cos``: the day of year on the unit circle, the sine and cosine
    of :func:`globalflux.cube.day_of_year_angle` (the project's one encoding; ``doy_sin``
    equals the cube variable ``sin_doy``).

    Works on site Datasets ``(site, time)`` and cubes ``(time, y, x)``; the new variables are
    1-D over ``time`` (they broadcast) and lazy-free (computed from the time coordinate only).
    """
    from ...cube import day_of_year_angle

    ang = day_of_year_angle(ds[time_dim].values)
    attrs = {"units": "1"}
    return ds.assign(
        doy_sin=((time_dim,), np.sin(ang).astype("float32"),
                 {**attrs, "long_name": "sine of day of year, sin(2 pi (DOY - 1) / 365.25)"}),
        doy_cos=((time_dim,), np.cos(ang).astype("float32"),
                 {**attrs, "long_name": "cosine of day of year, cos(2 pi (DOY - 1) / 365.25)"}))


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


def _check_sites(dyn, stat, y, ids, drivers, statics, seq_len, masked=()):
    """Bad inputs named: all-NaN targets, a driver or static missing at a site, short sites.

    Drivers in ``masked`` may be missing at a site (they carry an availability channel)."""
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
            if name not in masked and not np.isfinite(dyn[i, a:b, j]).any():
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


_resolve_device = resolve_device


def hydrodl_batches(n_days: int, batch_size: int, seq_len: int) -> int:
    """hydroDL's iterations per epoch: each of ``n_days`` drawn with probability 0.99."""
    frac = batch_size * seq_len / max(n_days, 1)
    if frac >= 1.0:
        return 1
    return max(1, math.ceil(math.log(0.01) / math.log(1.0 - frac)))



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
    masked_drivers
        Drivers that may be missing (all NaN at a site, or on some days): each gets a 0/1
        availability input (1 where the raw value is finite), appended after the drivers; the
        missing values are filled with the training mean of the scaled driver. Without it a
        driver missing at a whole site is a DataError.

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
                 verbose: int = 0, masked_drivers: Sequence[str] = ()):
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
        self.masked_drivers = masked_drivers

    # sklearn plumbing -------------------------------------------------------------------------
    _PARAMS = ("drivers", "statics", "target", "hidden_size", "dropout", "seq_len", "epochs",
               "batch_size", "batches_per_epoch", "learning_rate", "device", "num_threads",
               "random_state", "verbose", "masked_drivers")

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
            # only when used, so checkpoints written before the key existed still load
            **({"masked_drivers": [str(d) for d in self.masked_drivers]}
               if len(self.masked_drivers) else {}),
        }

    def _available(self) -> tuple[int, ...]:
        """Driver columns with an availability channel (``masked_drivers``, in driver order)."""
        unknown = [d for d in self.masked_drivers if d not in self.drivers]
        if unknown:
            raise ModelError(f"masked_drivers {unknown} are not among drivers {list(self.drivers)}",
                             where="LSTMRegressor.masked_drivers",
                             fix="List only names that are also in drivers.")
        return tuple(i for i, d in enumerate(self.drivers) if d in set(self.masked_drivers))

    def _n_inputs(self) -> int:
        return len(self.drivers) + len(self._available())

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
        if isinstance(X, xr.Dataset):
            self.units_ = {v: str(X[v].attrs.get("units", _UNITS.get(v, "")))
                           for v in [*self.drivers, *self.statics, self.target]}
        avail = self._available()
        spans = _check_sites(dyn, stat, yy, ids, list(self.drivers), list(self.statics),
                             int(self.seq_len), masked=set(self.masked_drivers))
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
            module = EffluxLSTM(self._n_inputs(), len(self.statics), int(self.hidden_size),
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
            zd = model_inputs(self.scaler_dyn_, dyn, avail)
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
                           int(self.hidden_size), len(self.drivers), len(self.statics),
                           available=self._available())

    # checkpoints --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to folder ``path`` (weights.pt + config.json)."""
        self._check_fitted()
        return self._save(path, None, None)

    def _save(self, path, opt, rng) -> Path:
        torch = _torch()
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
        meta["params"]["masked_drivers"] = list(self.masked_drivers)
        return write_checkpoint(path, state, meta)

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
        params["masked_drivers"] = tuple(params.get("masked_drivers", ()))
        model = cls(**{k: v for k, v in params.items() if k in cls._PARAMS})
        state, meta = _read_checkpoint(path, (expect or model)._config())
        model._restore_meta(meta)
        dev = _resolve_device(device)
        module = EffluxLSTM(model._n_inputs(), len(model.statics), int(model.hidden_size),
                            float(model.dropout)).to(dev)
        module.load_state_dict(state["model"])
        module.eval()
        model.module_ = module
        model.device_ = dev
        return model



    # model packages (contract with globalflux.io.model_package) -------------------------------
    def to_package(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The fitted model as a JSON-able manifest section and safe payloads.

        Returns
        -------
        (section, payloads)
            ``section``: ``kind: lstm``, the parameters, the inputs (drivers and statics with
            units and training ranges: min, max and mean in original units), the target, the
            time step (``P1D``), the engine (torch version) and the scalers; ``payloads``:
            ``{"lstm_weights.pt": bytes}``, the network's ``state_dict`` (tensors only, written
            with ``torch.save``, read back with ``weights_only=True``).
        """
        torch = _torch()
        self._check_fitted()
        import io

        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.module_.state_dict().items()}, buf)
        params = {k: (list(v) if isinstance(v, tuple) else v)
                  for k, v in self.get_params().items()}
        params["drivers"] = [str(d) for d in self.drivers]
        params["statics"] = [str(d) for d in self.statics]
        params["masked_drivers"] = [str(d) for d in self.masked_drivers]
        units = getattr(self, "units_", {})

        def _inputs(names, sc):
            return [{"name": str(n), "units": units.get(n, _UNITS.get(n, "")),
                     "train_min": float(np.sinh(sc.lo[j])), "train_max": float(np.sinh(sc.hi[j])),
                     "scaled_mean": float(sc.mean[j])} for j, n in enumerate(names)]

        section = {
            "kind": "lstm",
            "format": PACKAGE_FORMAT,
            "engine": {"name": "torch", "version": str(torch.__version__)},
            "time_step": "P1D",
            "sequence_to_sequence": True,
            "target": {"name": str(self.target),
                       "units": units.get(self.target, _UNITS.get(self.target, "")),
                       "train_min": float(np.sinh(self.scaler_y_.lo[0])),
                       "train_max": float(np.sinh(self.scaler_y_.hi[0]))},
            "inputs": {"drivers": _inputs(self.drivers, self.scaler_dyn_),
                       "statics": _inputs(self.statics, self.scaler_static_),
                       "availability_channels": [str(d) for d in self.drivers
                                                 if d in set(self.masked_drivers)]},
            "params": params,
            "epoch": int(self.epoch_),
            "scalers": {"dynamic": self.scaler_dyn_.to_json(),
                        "static": self.scaler_static_.to_json(),
                        "target": self.scaler_y_.to_json(),
                        "transform": "z = (asinh(x) - lo) / (hi - lo); missing -> mean"},
            "payloads": {"weights": "lstm_weights.pt"},
        }
        return section, {"lstm_weights.pt": buf.getvalue()}

    @classmethod
    def from_package(cls, section: dict[str, Any], payloads: dict[str, bytes], *,
                     device: str = "cpu", num_threads: int | None = None):
        """Rebuild the fitted model from :meth:`to_package`'s output (no unpickling).

        A section with ``members`` (written by :meth:`LSTMEnsemble.to_package`) gives an
        :class:`LSTMEnsemble`. The weights are read with ``torch.load(weights_only=True)``: a
        payload holding anything but tensors raises :class:`ModelError`.
        """
        if section.get("kind") != "lstm":
            raise ModelError(f"section kind {section.get('kind')!r} is not 'lstm'",
                             where="model package", fix="Load it with its own model class.")
        if section.get("format") != PACKAGE_FORMAT:
            raise ModelError(f"LSTM package format {section.get('format')!r}, expected "
                             f"{PACKAGE_FORMAT}", where="model package",
                             fix="Re-export the model with this globalflux version.")
        if "members" in section:
            return LSTMEnsemble.from_package(section, payloads, device=device,
                                             num_threads=num_threads)
        return cls._from_section(section, payloads, device=device, num_threads=num_threads)

    @classmethod
    def _from_section(cls, section, payloads, *, device="cpu", num_threads=None):
        params = dict(section["params"])
        params.update(device=device, num_threads=num_threads)
        for k in ("drivers", "statics", "masked_drivers"):
            params[k] = tuple(params.get(k, ()))
        model = cls(**{k: v for k, v in params.items() if k in cls._PARAMS})
        name = section.get("payloads", {}).get("weights", "lstm_weights.pt")
        if name not in payloads:
            raise ModelError(f"payload {name!r} is missing", where="model package",
                             fix="Re-export the model; the package is incomplete.")
        state = _load_state_bytes(payloads[name], name)
        sc = section["scalers"]
        model.scaler_dyn_ = Scaler.from_json(sc["dynamic"])
        model.scaler_static_ = Scaler.from_json(sc["static"])
        model.scaler_y_ = Scaler.from_json(sc["target"])
        model.epoch_ = int(section.get("epoch", 0))
        model.loss_history_ = []
        units = {d["name"]: d.get("units", "") for g in ("drivers", "statics")
                 for d in section.get("inputs", {}).get(g, [])}
        units[model.target] = section.get("target", {}).get("units", "")
        model.units_ = units
        dev = _resolve_device(device)
        module = EffluxLSTM(model._n_inputs(), len(model.statics), int(model.hidden_size),
                            float(model.dropout))
        try:
            module.load_state_dict(state)
        except (RuntimeError, KeyError) as exc:
            raise ModelError(f"{name} does not fit the network in the section ({exc})",
                             where="model package", fix="Re-export the model.") from None
        model.module_ = module.to(dev).eval()
        model.device_ = dev
        return model


_UNITS = {"Ts": "degC", "Tair": "degC", "SWC": "m3 m-3", "Rs": "g C m-2 d-1", "Rh": "g C m-2 d-1",
          "doy_sin": "1", "doy_cos": "1"}


def _load_state_bytes(data: bytes, name: str) -> dict:
    """A state dict of tensors from bytes, with ``weights_only=True`` (pickles are refused)."""
    import io

    torch = _torch()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything unreadable or unsafe is a bad payload
        raise ModelError(f"{name} is not a tensors-only state dict ({exc.__class__.__name__})",
                         where="model package",
                         fix="Re-export the model with to_package(); arbitrary pickles are "
                         "never loaded.") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ModelError(f"{name} holds something other than a dict of tensors",
                         where="model package", fix="Re-export the model with to_package().")
    return state


class LSTMEnsemble:
    """``n_members`` copies of one :class:`LSTMRegressor`, seeds ``random_state + i``.

    The prediction is the ensemble mean; the spread (standard deviation across members, ``ddof=1``;
    0 for one member) is the uncertainty at sites (:meth:`predict` with ``return_std``) and in
    maps (:meth:`predict_cube`, :func:`globalflux.mapping.map_lstm`: ``<target>_sd``).

    Parameters
    ----------
    estimator
        The unfitted template (cloned per member with ``random_state + i``).
    n_members
        Ensemble size (at least 1).

    Attributes
    ----------
    members_
        The fitted :class:`LSTMRegressor` of every member, member 0 first (seed ``random_state``).
    """

    _PARAMS = ("estimator", "n_members")

    def __init__(self, estimator: LSTMRegressor | None = None, n_members: int = 5):
        self.estimator = estimator
        self.n_members = n_members

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params) -> LSTMEnsemble:
        for k, v in params.items():
            if k not in self._PARAMS:
                raise ValueError(f"invalid parameter {k!r} for LSTMEnsemble")
            setattr(self, k, v)
        return self

    def _template(self) -> LSTMRegressor:
        n = self.n_members
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ModelError(f"ensemble size {n!r}", where="lstm.ensemble",
                             fix="Use a whole number of members, at least 1.")
        return self.estimator if self.estimator is not None else LSTMRegressor()

    def fit(self, X, y=None, *, static=None, checkpoints: Sequence[str | Path] | None = None,
            **fit_kw) -> LSTMEnsemble:
        """Fit every member on the same data (``fit_kw`` go to :meth:`LSTMRegressor.fit`;
        ``checkpoints``: one folder per member, or None)."""
        tmpl = self._template()
        if checkpoints is not None and len(checkpoints) != int(self.n_members):
            raise ModelError(f"{len(checkpoints)} checkpoint folders for {self.n_members} members",
                             where="LSTMEnsemble.fit", fix="Give one folder per member.")
        self.members_ = []
        base = tmpl.get_params()
        for i in range(int(self.n_members)):
            member = LSTMRegressor(**{**base, "random_state": int(base["random_state"]) + i})
            init = fit_kw.get("init_from") if i == 0 else None
            kw = {**fit_kw, "init_from": init}
            member.fit(X, y, static=static,
                       checkpoint=None if checkpoints is None else checkpoints[i], **kw)
            self.members_.append(member)
        self.fit_seconds_ = float(sum(m.fit_seconds_ for m in self.members_))
        return self

    def _check_fitted(self) -> None:
        if not getattr(self, "members_", None):
            raise ModelError("the LSTM ensemble is not fitted", where="LSTMEnsemble",
                             fix="Call fit() first.")

    def predict(self, X, *, static=None, return_std: bool = False, return_members: bool = False):
        """Ensemble mean (and spread, and every member's prediction) like
        :meth:`LSTMRegressor.predict`."""
        self._check_fitted()
        preds = [m.predict(X, static=static) for m in self.members_]
        arr = np.stack([np.asarray(p) for p in preds])
        mean = arr.mean(axis=0)
        std = arr.std(axis=0, ddof=1) if len(preds) > 1 else np.where(np.isfinite(mean), 0.0, np.nan)
        if isinstance(X, xr.Dataset):
            p0 = preds[0]
            mean = p0.copy(data=mean).rename(p0.name)
            mean.attrs["long_name"] = f"LSTM ensemble mean of {len(preds)} members"
            std = p0.copy(data=std).rename(f"{p0.name}_spread")
            std.attrs["long_name"] = f"LSTM ensemble standard deviation ({len(preds)} members)"
        out = [mean]
        if return_std:
            out.append(std)
        if return_members:
            out.append(preds)
        return out[0] if len(out) == 1 else tuple(out)

    def weights(self) -> list[LSTMWeights]:
        self._check_fitted()
        return [m.weights() for m in self.members_]

    def predict_cube(self, ds: xr.Dataset, drivers: Sequence[str], statics: Sequence[str],
                     mask: xr.DataArray | None = None, time_chunk: int = 365, *,
                     name: str = "Rs", **kw) -> xr.Dataset:
        """Lazy ensemble map: ``name`` (mean) and ``name_sd`` (standard deviation across
        members, like the forests' spread across trees), each ``(time, y, x)``; the one LSTM
        map path, :func:`globalflux.mapping.map_lstm` (``kw`` go to it)."""
        from ...mapping import map_lstm

        self._check_fitted()
        return map_lstm(self, ds, mask=mask, time_chunk=time_chunk, check=False, name=name,
                        drivers=drivers, statics=statics, **kw)

    def to_package(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Member 0's section plus ``members`` (one weights payload per member, each member's
        scalers and seed); see :meth:`LSTMRegressor.to_package`."""
        self._check_fitted()
        section, payloads = self.members_[0].to_package()
        section = dict(section)
        members, out = [], {}
        for i, m in enumerate(self.members_):
            sec, pay = (section, payloads) if i == 0 else m.to_package()
            fname = f"lstm_weights_{i:02d}.pt"
            out[fname] = pay["lstm_weights.pt"]
            members.append({"weights": fname, "random_state": int(m.random_state),
                            "epoch": int(m.epoch_), "scalers": sec["scalers"]})
        section["members"] = members
        section["payloads"] = {"weights": [m["weights"] for m in members]}
        return section, out

    @classmethod
    def from_package(cls, section: dict[str, Any], payloads: dict[str, bytes], *,
                     device: str = "cpu", num_threads: int | None = None) -> LSTMEnsemble:
        members = []
        for m in section["members"]:
            sec = {**section, "scalers": m["scalers"], "epoch": m["epoch"],
                   "params": {**section["params"], "random_state": m["random_state"]},
                   "payloads": {"weights": m["weights"]}}
            sec.pop("members")
            members.append(LSTMRegressor._from_section(sec, payloads, device=device,
                                                       num_threads=num_threads))
        ens = cls(LSTMRegressor(**{k: v for k, v in members[0].get_params().items()}),
                  n_members=len(members))
        ens.members_ = members
        return ens


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

