"""Open raster sources lazily: GeoTIFF/COG, NetCDF and Zarr -> decoded xarray DataArrays.

Every opener returns a Dask-backed DataArray with dims ``(y, x)`` or ``(time, y, x)``, pixel
centre coordinates, the CRS written with rioxarray, fill values / nodata masked to NaN, scale and
offset applied (``value = DN * scale + offset``) and, where a QC band is declared, pixels failing
the QC bit rule masked *before* any statistic. Nothing is read until the caller computes.

Errors name the source: a raster without a CRS (:class:`GridError`), an unreadable file
(:class:`InputFileError`), a corrupt Zarr chunk (:class:`InputFileError` raised when that chunk
is read, naming the store, variable and chunk).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as dsa
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from ..errors import DataError, GridError, InputFileError
from .products import Product, QCRule

__all__ = [
    "open_raster",
    "open_raster_series",
    "open_zarr_variable",
    "decode",
    "mask_qc",
    "file_checksum",
    "date_from_name",
]

_TIF = (".tif", ".tiff")
_NC = (".nc", ".nc4", ".cdf", ".netcdf")


def file_checksum(path: str | Path, *, algorithm: str = "sha256") -> str:
    """``"sha256:<hex>"`` of a file (a Zarr folder: of its metadata files)."""
    path = Path(path)
    h = hashlib.new(algorithm)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.name.startswith(("zarr.json", ".z")))
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):  # noqa: B023
                h.update(block)
    return f"{algorithm}:{h.hexdigest()}"


# ------------------------------------------------------------------------------------- decoding


def decode(
    da: xr.DataArray,
    *,
    scale: float = 1.0,
    offset: float = 0.0,
    fill: Sequence[float] = (),
    valid_range: tuple[float, float] | None = None,
    categorical: bool = False,
    dtype: str = "float32",
) -> xr.DataArray:
    """Raw digital numbers -> physical values, lazily.

    Fill values and DNs outside ``valid_range`` become NaN (checked on the *raw* DNs, as the
    MODIS guides define them), then ``value = DN * scale + offset``. Categorical data keep their
    integer dtype (fill values stay as they are; they are documented in ``flag_fill``).
    """
    if categorical:
        out = da.copy()
        if fill:
            out.attrs["flag_fill"] = fill[0]
        return out
    raw = da
    bad = None
    for f in fill:
        hit = raw == f
        bad = hit if bad is None else (bad | hit)
    if valid_range is not None:
        lo, hi = valid_range
        out_range = (raw < lo) | (raw > hi)
        bad = out_range if bad is None else (bad | out_range)
    val = raw.astype(dtype)
    if bad is not None:
        val = val.where(~bad)
    if scale != 1.0:
        val = val * np.asarray(scale, dtype=dtype)
    if offset != 0.0:
        val = val + np.asarray(offset, dtype=dtype)
    val.attrs = {k: v for k, v in da.attrs.items() if k not in ("_FillValue", "scale_factor", "add_offset", "nodata")}
    return val


def _qc_ok(qc: np.ndarray, mask: int, good: int) -> np.ndarray:
    q = np.asarray(qc)
    if q.dtype.kind == "f":  # QC read through a float path: NaN means no QC -> not good
        ok = np.isfinite(q)
        qi = np.where(ok, q, 0).astype(np.int64)
        return ok & ((qi & mask) == good)
    return (q.astype(np.int64) & mask) == good


def mask_qc(data: xr.DataArray, qc: xr.DataArray, rule: QCRule) -> xr.DataArray:
    """Keep pixels whose QC band satisfies ``(qc & rule.mask) == rule.good``; others -> NaN (lazy)."""
    ok = xr.apply_ufunc(_qc_ok, qc, kwargs={"mask": int(rule.mask), "good": int(rule.good)},
                        dask="parallelized", output_dtypes=[bool])
    out = data.where(ok)
    out.attrs = {**data.attrs, "qc_rule": f"({rule.asset} & {rule.mask:#b}) == {rule.good}: {rule.doc}"}
    return out


# ------------------------------------------------------------------------------------- openers


def _require_crs(da: xr.DataArray, path: Path, crs: str | None) -> xr.DataArray:
    if da.rio.crs is None:
        if crs is None:
            raise GridError(
                "raster has no CRS",
                where=str(path),
                fix="Fix the file (gdal_edit.py -a_srs EPSG:4326 FILE) or declare 'crs:' for this source in the recipe.",
            )
        da = da.rio.write_crs(crs)
    return da


def _open_tif(path: Path, band: int, chunks: Any) -> xr.DataArray:
    try:
        da = rioxarray.open_rasterio(path, chunks=chunks, masked=False, lock=False)
    except Exception as exc:
        raise InputFileError(f"cannot open as GeoTIFF ({exc.__class__.__name__}: {exc})", where=str(path),
                             fix="Check that the file exists and is a complete GeoTIFF/COG.") from None
    if isinstance(da, list):
        da = da[0]
    if isinstance(da, xr.Dataset):
        da = da[list(da.data_vars)[0]]
    nb = da.sizes.get("band", 1)
    if band < 1 or band > nb:
        raise InputFileError(f"band {band} requested, the file has {nb}", where=str(path),
                             fix=f"Choose band 1..{nb}.")
    da = da.isel(band=band - 1, drop=True)
    return da


def _open_nc(path: Path, variable: str | None, chunks: Any) -> xr.DataArray:
    try:
        ds = xr.open_dataset(path, chunks=chunks if chunks is not None else {}, mask_and_scale=False,
                             decode_coords="all")
    except Exception as exc:
        raise InputFileError(f"cannot open as NetCDF ({exc.__class__.__name__}: {exc})", where=str(path),
                             fix="Check that the file exists and is NetCDF-3 or NetCDF-4.") from None
    return _pick_var(ds, variable, path)


def _pick_var(ds: xr.Dataset, variable: str | None, path: Path) -> xr.DataArray:
    names = [v for v in ds.data_vars if ds[v].ndim >= 2]
    if variable is None:
        if len(names) != 1:
            raise InputFileError(f"holds {len(names)} gridded variables {names}", where=str(path),
                                 fix="Name the one to read with 'variable:' in the recipe source.")
        variable = names[0]
    if variable not in ds:
        raise InputFileError(f"variable {variable!r} not found", where=str(path),
                             fix=f"Choose one of {names}.")
    da = ds[variable]
    ren = {}
    for d in da.dims:
        if d.lower() in ("lat", "latitude"):
            ren[d] = "y"
        elif d.lower() in ("lon", "longitude"):
            ren[d] = "x"
    da = da.rename(ren)
    if da.rio.crs is None and ren:
        # CF lat/lon coordinates (units degrees_north/east) define a geographic grid
        ylat = str(ds[next(k for k, v in ren.items() if v == "y")].attrs.get("units", "")).lower()
        if ylat.startswith("degree"):
            da = da.rio.write_crs("EPSG:4326")
    return da


class _ZarrChunkReader:
    """Array-like over one Zarr array whose reads name the store, variable and chunk on failure.

    Used through :func:`dask.array.from_array`, so each Dask chunk is one ``__getitem__``.
    """

    def __init__(self, path: str, variable: str, shape: tuple[int, ...], dtype: np.dtype):
        self.path = path
        self.variable = variable
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.ndim = len(shape)

    def __getitem__(self, key):
        import zarr

        try:
            arr = zarr.open_array(store=self.path, path=self.variable, mode="r")
            return np.asarray(arr[key])
        except Exception as exc:
            raise InputFileError(
                f"corrupt or unreadable chunk {key!r} of variable '{self.variable}' "
                f"({exc.__class__.__name__}: {exc})",
                where=self.path,
                fix="Rewrite or re-download the Zarr store; its chunk files are damaged.",
            ) from None


def open_zarr_variable(path: str | Path, variable: str | None = None) -> xr.DataArray:
    """One variable of a Zarr store, lazily, with raw (undecoded) values and checked chunk reads."""
    path = Path(path)
    try:
        ds = xr.open_zarr(path, chunks=None, mask_and_scale=False, decode_coords="all", consolidated=None)
    except Exception as exc:
        raise InputFileError(f"cannot open as Zarr ({exc.__class__.__name__}: {exc})", where=str(path),
                             fix="Check the path; a Zarr store is a folder with zarr.json or .zgroup.") from None
    da = _pick_var(ds, variable, path)
    import zarr

    zarr_name = str(variable) if variable is not None else str(da.name)
    arr = zarr.open_array(store=str(path), path=zarr_name, mode="r")
    chunks = arr.chunks
    reader = _ZarrChunkReader(str(path), zarr_name, tuple(arr.shape), arr.dtype)
    data = dsa.from_array(reader, chunks=chunks, name=f"zarr-{zarr_name}-{file_checksum(path)[-16:]}",
                          asarray=False, fancy=False)
    out = xr.DataArray(data, dims=da.dims, coords=da.coords, attrs=da.attrs, name=da.name)
    return out


def open_raster(
    path: str | Path,
    *,
    name: str | None = None,
    variable: str | None = None,
    band: int = 1,
    crs: str | None = None,
    nodata: float | None = None,
    scale: float | None = None,
    offset: float | None = None,
    fill: Sequence[float] = (),
    valid_range: tuple[float, float] | None = None,
    categorical: bool = False,
    units: str | None = None,
    chunks: Any = None,
    decode_values: bool = True,
) -> xr.DataArray:
    """Open one GeoTIFF/COG, NetCDF or Zarr source lazily and decode it.

    Parameters
    ----------
    path
        ``.tif``/``.tiff`` (GeoTIFF, COG), ``.nc``/``.cdf`` (NetCDF) or a ``.zarr`` folder.
    name
        Variable name of the result (default: the file stem / variable).
    variable
        Variable inside a NetCDF/Zarr file (required when it holds several).
    band
        1-based band of a GeoTIFF.
    crs
        CRS to use *only* when the file declares none (otherwise a missing CRS is an error).
    nodata
        Raw nodata value; default: the file's (GeoTIFF nodata, ``_FillValue``/``missing_value``).
    scale, offset
        Default: the file's ``scale_factor``/``add_offset`` (1, 0 when absent).
    fill, valid_range
        Further raw fill values and the valid DN range (see :func:`decode`).
    categorical
        Keep integer classes (no scaling, no NaN).
    units
        CF units of the decoded values (default: the file's ``units``).
    chunks
        Dask chunks (default: the file's internal tiling, ``"auto"`` sized).
    decode_values
        False returns raw DNs (used for QC bands).

    Returns
    -------
    DataArray
        Lazy, dims ``(y, x)`` or ``(time, y, x)``, CRS written.

    Raises
    ------
    InputFileError
        Missing/unreadable file, unknown band/variable.
    GridError
        No CRS and none declared.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError("source not found", where=str(path), fix="Check the path in the recipe.")
    suffix = path.suffix.lower()
    if suffix in _TIF:
        da = _open_tif(path, band, chunks if chunks is not None else {"band": 1, "y": "auto", "x": "auto"})
    elif suffix in _NC:
        da = _open_nc(path, variable, chunks)
    elif suffix == ".zarr" or (path.is_dir() and ((path / "zarr.json").exists() or (path / ".zgroup").exists())):
        da = open_zarr_variable(path, variable)
        if chunks is not None:
            da = da.chunk(chunks)
    else:
        raise InputFileError(f"unknown raster format {suffix!r}", where=str(path),
                             fix="Use GeoTIFF/COG (.tif), NetCDF (.nc) or Zarr (.zarr).")
    da = _require_crs(da, path, crs)
    if "y" not in da.dims or "x" not in da.dims:
        raise GridError(f"dims {da.dims} lack y/x (or lat/lon)", where=str(path),
                        fix="Give a raster with y/x or lat/lon dimensions.")
    if da["y"].size > 1 and da["y"].values[0] < da["y"].values[-1]:
        da = da.isel(y=slice(None, None, -1))  # north first
    attrs = dict(da.attrs)
    enc = getattr(da, "encoding", {})
    file_nodata = attrs.get("_FillValue", enc.get("_FillValue", attrs.get("missing_value")))
    if file_nodata is None:
        file_nodata = da.rio.nodata
    nd = nodata if nodata is not None else file_nodata
    fills = list(fill)
    if nd is not None and not (isinstance(nd, float) and np.isnan(nd)) and float(nd) not in fills:
        fills.append(float(nd))
    sc = float(scale if scale is not None else attrs.get("scale_factor", 1.0))
    of = float(offset if offset is not None else attrs.get("add_offset", 0.0))
    crs_keep = da.rio.crs
    if decode_values:
        da = decode(da, scale=sc, offset=of, fill=fills, valid_range=valid_range, categorical=categorical)
    da = da.rio.write_crs(crs_keep)
    da.name = name or (variable or path.stem)
    u = units or attrs.get("units")
    da.attrs.update({"source_file": str(path)})
    if u:
        da.attrs["units"] = str(u)
    return da


_DATE_PATTERNS = (
    (re.compile(r"A(\d{4})(\d{3})"), "doy"),  # MODIS AYYYYDDD
    (re.compile(r"(\d{4})-?(\d{2})-?(\d{2})"), "ymd"),
)


def date_from_name(name: str) -> pd.Timestamp:
    """The date in a file name: MODIS ``AYYYYDDD`` or ``YYYYMMDD`` / ``YYYY-MM-DD``."""
    for rx, kind in _DATE_PATTERNS:
        m = rx.search(name)
        if m:
            if kind == "doy":
                return pd.Timestamp(int(m.group(1)), 1, 1) + pd.Timedelta(days=int(m.group(2)) - 1)
            return pd.Timestamp(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    raise InputFileError("no date in the file name", where=name,
                         fix="Name files with AYYYYDDD or YYYYMMDD, or list 'times:' in the recipe.")


def open_raster_series(
    paths: Sequence[str | Path],
    times: Sequence[Any] | None = None,
    **kwargs,
) -> xr.DataArray:
    """A time series from one raster per date (lazy), dims ``(time, y, x)``.

    ``times`` default to the dates in the file names (:func:`date_from_name`). All files must
    share one grid and CRS.
    """
    if not paths:
        raise InputFileError("no files matched", where=str(kwargs.get("name", "source")),
                             fix="Check the glob pattern of the source.")
    ts = [pd.Timestamp(t) for t in times] if times is not None else [date_from_name(Path(p).name) for p in paths]
    if len(ts) != len(paths):
        raise DataError(f"{len(paths)} files but {len(ts)} times", where=str(kwargs.get("name", "source")),
                        fix="Give one time per file.")
    arrays = [open_raster(p, **kwargs) for p in paths]
    ref = arrays[0]
    for p, a in zip(paths[1:], arrays[1:], strict=True):
        if a.shape != ref.shape or not (np.allclose(a.x, ref.x) and np.allclose(a.y, ref.y)) or a.rio.crs != ref.rio.crs:
            raise GridError(f"grid differs from {paths[0]}", where=str(p),
                            fix="All files of a series must share one grid; reproject them first.")
    order = np.argsort(np.asarray(ts, dtype="datetime64[ns]"))
    arrays = [arrays[i] for i in order]
    out = xr.concat(arrays, dim=pd.Index(np.asarray(ts, dtype="datetime64[ns]")[order], name="time"),
                    combine_attrs="override", coords="minimal", compat="override")
    return out.rio.write_crs(ref.rio.crs)


def decode_product(raw: xr.DataArray, prod: Product, qc: xr.DataArray | None = None) -> xr.DataArray:
    """Decode raw DNs of a :class:`Product` (fill, range, scale, offset) and apply its QC rule."""
    out = decode(raw, scale=prod.scale, offset=prod.offset, fill=prod.fill, valid_range=prod.valid_range,
                 categorical=prod.categorical)
    if prod.qc is not None and qc is not None:
        out = mask_qc(out, qc, prod.qc)
    out.attrs.update(units=prod.units, long_name=prod.long_name or prod.name)
    return out.rename(prod.name)


__all__.append("decode_product")
