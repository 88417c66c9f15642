"""Settings of the global LSTM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..recipe import option


@dataclass(frozen=True)
class LSTMConfig:
    """One LSTM for all sites (Smykalov et al.)."""

    hidden_size: int = option(128, doc="LSTM hidden units.", min=1)
    dropout: float = option(0.2, doc="Dropout before the linear head.", min=0.0, max=0.9)
    seq_len: int = option(30, doc="Length of training subsequences (days).", min=2)
    epochs: int = option(200, doc="Training epochs.", min=1)
    device: Literal["auto", "cpu", "cuda"] = option("cpu", doc="Torch device; auto uses CUDA when available.")
    seed: int = option(0, doc="Random seed.")
