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

Modules: :mod:`.network` (the torch module), :mod:`.scaling` (arcsinh + min-max, training data
only), :mod:`.estimator` (:class:`LSTMRegressor`, :class:`LSTMEnsemble`), :mod:`.checkpoint`
(write by rename, read with ``weights_only=True``), :mod:`.inference` (numpy-weight inference
at sites, :func:`~.inference.model_inputs`).

Gridded inference is :func:`globalflux.mapping.apply_lstm_to_cube` / :func:`globalflux.mapping.map_lstm`
(the one mapping path): the network runs sequence to sequence over every pixel of a daily
``(time, y, x)`` cube, carrying the hidden and cell state from one time chunk to the next, with
one Dask task chain per spatial chunk. :func:`predict_cube` and :func:`lstm_chunk` here are
deprecated aliases of it.
"""

from __future__ import annotations

from .checkpoint import CHECKPOINT_FORMAT, read_checkpoint, write_checkpoint
from .estimator import LSTMEnsemble, LSTMRegressor, add_doy_features, hydrodl_batches
from .inference import LSTMWeights, lstm_chunk, predict_cube
from .network import EffluxLSTM
from .scaling import Scaler

__all__ = [
    "EffluxLSTM",
    "LSTMEnsemble",
    "LSTMRegressor",
    "LSTMWeights",
    "Scaler",
    "add_doy_features",
    "hydrodl_batches",
    "predict_cube",
    "lstm_chunk",
    "read_checkpoint",
    "write_checkpoint",
    "CHECKPOINT_FORMAT",
]
