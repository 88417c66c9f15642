"""Zarr stores for cubes and maps (the only place that writes Zarr).

``write_dataset`` writes a (lazy) Dataset to a Zarr v3 store with consolidated metadata,
CF attributes and a CRS readable by rioxarray. Region-by-region writes with a manifest of
completed blocks (resume) build on it in this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import xarray as xr

from ..errors import InputFileError, StoreError

__all__ = ["write_dataset", "open_dataset"]


def write_dataset(ds: xr.Dataset, path: str | Path, *, mode: str = "w-", compute: bool = True) -> Any:
    """Write ``ds`` to Zarr at ``path`` with consolidated metadata.

    Parameters
    ----------
    ds
        Dataset with CF attributes; a CRS written by rioxarray (``spatial_ref`` coordinate).
    path
        Target store (a folder).
    mode
        ``"w-"`` refuses to overwrite an existing store; ``"w"`` replaces it.
    compute
        False returns the delayed write (nothing computed).
    """
    path = Path(path)
    if mode == "w-" and path.exists():
        raise StoreError("store exists", where=str(path),
                         fix="Choose another path, delete it, or run with --resume/--overwrite.")
    ds = ds.copy()
    for name in ds.variables:
        ds[name].encoding.pop("chunks", None)
        ds[name].encoding.pop("preferred_chunks", None)
    return ds.to_zarr(path, mode=mode, consolidated=True, compute=compute, zarr_format=3)


def open_dataset(path: str | Path, *, chunks: Any = "auto") -> xr.Dataset:
    """Open a Zarr store lazily; a missing or unreadable store names the path."""
    path = Path(path)
    if not path.exists():
        raise InputFileError("store not found", where=str(path), fix="Check the path.")
    try:
        return xr.open_zarr(path, chunks=chunks, consolidated=None)
    except Exception as exc:  # zarr raises many types for a broken store
        raise StoreError(f"cannot open as Zarr ({exc.__class__.__name__}: {exc})", where=str(path),
                         fix="Is it a Zarr store written by globalflux? Rewrite it if it is corrupt.") from None
