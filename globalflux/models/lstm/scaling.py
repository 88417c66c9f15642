"""Scaling of LSTM inputs and target: arcsinh then min-max, fitted on training data only.

``z = (asinh(x) - lo) / (hi - lo)`` per column with ``lo, hi`` the minimum and maximum of
``asinh(x)`` over the training data only; missing inputs are imputed with the training mean of
the scaled column; predictions go back with ``sinh(z * (hi - lo) + lo)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import DataError

__all__ = ["Scaler"]


class Scaler:
    """``z = (asinh(x) - lo) / (hi - lo)`` per column; ``lo, hi`` from training data only.

    A column constant in training (``hi == lo``) maps every finite value to 0. ``mean`` is the training mean of ``z`` (used to
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
        # a column constant in training carries no learned information: any value maps to 0
        # (e.g. an IGBP one-hot column of a class only held-out sites have)
        z = np.where((self.hi > self.lo) | ~np.isfinite(z), z, 0.0)
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

