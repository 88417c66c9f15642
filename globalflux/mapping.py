"""Apply fitted models to every pixel of a chunked cube, lazily.

``apply_to_cube`` is the core: it stacks the feature variables of a Dataset per chunk, calls a
module-level function with the estimator, and returns a lazy DataArray with explicit dtype.
Nothing is computed until the result is written or computed by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from .errors import DataError

__all__ = ["apply_to_cube", "predict_block"]


def predict_block(*arrays: np.ndarray, estimator: Any, method: str, dtype: str, fill: float,
                  columns: Sequence[str] | None = None) -> np.ndarray:
    """Predict one block: ``arrays`` are the feature arrays (same shape); the last input is the mask.

    Pixels outside the mask or with any non-finite feature get ``fill``. A block with no valid
    pixel returns at once without calling the estimator.
    """
    *feats, mask = arrays
    shape = feats[0].shape
    out = np.full(shape, fill, dtype=dtype)
    X = np.stack([np.asarray(f, dtype="float64").reshape(-1) for f in feats], axis=1)
    ok = np.asarray(mask, dtype=bool).reshape(-1) & np.isfinite(X).all(axis=1)
    if not ok.any():
        return out
    Xv = X[ok]
    if columns is not None:
        import pandas as pd

        Xv = pd.DataFrame(Xv, columns=list(columns))
    pred = getattr(estimator, method)(Xv)
    out.reshape(-1)[ok] = np.asarray(pred).astype(dtype, copy=False)
    return out


def apply_to_cube(
    estimator: Any,
    ds: xr.Dataset,
    features: Sequence[str],
    *,
    mask: xr.DataArray | None = None,
    method: str = "predict",
    dtype: str = "float32",
    fill: float = np.nan,
    as_frame: bool = True,
    name: str = "prediction",
) -> xr.DataArray:
    """Apply ``estimator.<method>`` to every pixel (and time step) of ``ds``, lazily.

    Parameters
    ----------
    estimator
        A fitted estimator with a ``predict``-like method taking an (n, len(features)) table.
    ds
        Dataset holding every name in ``features``; variables broadcast against each other
        (static (y, x) factors broadcast over time).
    features
        Variable names, in the column order the estimator was fitted with.
    mask
        Boolean DataArray (True = land / to predict); None predicts every finite pixel.
    method
        Estimator method to call (``predict``, ``predict_std``, ...).
    dtype, fill
        Output dtype and the value written where nothing is predicted.
    as_frame
        Pass a pandas DataFrame with the feature names as columns (True) or a plain ndarray.
    """
    missing = [f for f in features if f not in ds.data_vars and f not in ds.coords]
    if missing:
        raise DataError(f"cube lacks predictor(s) {missing}", where="cube",
                        fix=f"Add them to the cube; it has: {sorted(ds.data_vars)}.")
    arrays = [ds[f] for f in features]
    if mask is None:
        mask = xr.ones_like(arrays[0], dtype=bool)
    arrays = list(xr.broadcast(*arrays, mask))
    template = arrays[0]
    if template.chunks is not None:
        arrays = [a.chunk(dict(zip(template.dims, template.chunks))) for a in arrays]
    out = xr.apply_ufunc(
        predict_block,
        *arrays,
        kwargs={
            "estimator": estimator,
            "method": method,
            "dtype": dtype,
            "fill": fill,
            "columns": list(features) if as_frame else None,
        },
        dask="parallelized",
        output_dtypes=[np.dtype(dtype)],
        keep_attrs=False,
    )
    return out.rename(name)
