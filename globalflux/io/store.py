"""Zarr stores for cubes and maps (the only place that writes Zarr).

Two ways to write:

* :func:`write_dataset` writes a (lazy) Dataset in one go (Zarr v3, consolidated metadata).
* Region by region, resumable (used by :func:`globalflux.mapping.map_to_store`):

  1. :func:`prepare_store` writes the metadata and coordinates of a template Dataset (nothing of
     the data variables), the store fingerprint, and an empty *manifest*; on ``resume=True`` it
     instead checks that an existing store has the same fingerprint and layout and returns the
     blocks already complete.
  2. :func:`write_block` (runs on a Dask worker) writes the data of one chunk-aligned block of
     every variable, flushes the chunk files to disk (``fsync``), and only then records the block
     in the manifest: one marker file per block, created by write-temp + ``fsync`` +
     ``os.replace``, so a block is never recorded that was not fully written.
  3. :func:`finalize_store` checks that every block is recorded, marks the store complete
     (attribute ``globalflux_complete = "true"``) and consolidates the metadata.

Layout of the manifest inside the store folder (ignored by Zarr readers)::

    STORE/_globalflux/manifest.json     fingerprint, dims, chunks, variables, block grid
    STORE/_globalflux/blocks/<i>.<j>.<k>  one empty marker per completed block (block indices)

A block is one Dask/Zarr chunk along every block dimension (e.g. ``time, y, x``). A variable
lacking a block dimension (a static ``(y, x)`` map beside ``(time, y, x)`` maps) is written by the
blocks whose index along that dimension is 0. Blocks never written hold the Zarr fill value.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputFileError, StoreError

__all__ = [
    "cf_encode",
    "write_dataset",
    "open_dataset",
    "StoreLayout",
    "prepare_store",
    "write_block",
    "completed_blocks",
    "read_manifest",
    "finalize_store",
    "is_complete",
    "MANIFEST_DIR",
]

MANIFEST_DIR = "_globalflux"
COMPLETE_ATTR = "globalflux_complete"
FINGERPRINT_ATTR = "globalflux_fingerprint"


def _use_fast_codec(ds: xr.Dataset, zarr_format: int = 3) -> xr.Dataset:
    """Set Blosc LZ4 + byte shuffle on every numeric data variable that names no compressor
    (in place on ``ds``, a copy made by the caller; other encoding such as _FillValue is kept).

    Cubes and maps are read far more often than written, and mapping is read-bound once a fast
    forest is used: LZ4 decompresses ~2.4x faster than zarr's default Zstd here (722 vs 305 MiB/s
    for float32 cubes, 16 variables of 23x512x512; see benchmarks/bench_mapping.py). Zarr v2
    stores get the same compressor as a numcodecs codec (which GDAL's Zarr driver reads).
    """
    if zarr_format == 2:
        from numcodecs import Blosc

        codec: Any = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)
    else:
        from zarr.codecs import BloscCodec

        codec = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    for var in ds.data_vars.values():
        if var.dtype.kind in "fiub" and not var.encoding.get("compressors"):
            var.encoding = {**var.encoding, "compressors": [codec]}
    return ds


def _check_zarr_format(zarr_format: int) -> int:
    if zarr_format not in (2, 3):
        raise StoreError(f"zarr_format {zarr_format!r} is not 2 or 3", where="mapping.zarr_format",
                         fix="Use 3 (default) or 2 (readable by GDAL's Zarr driver).")
    return int(zarr_format)


# ------------------------------------------------------------------------------ CF metadata

# Standard names written by earlier globalflux code and the synthetic world that the CF standard
# name table (v93) lacks or that do not fit the units: replacement, or None to drop the name (the
# long_name says what the variable is). Aliases are replaced by the table's current name.
_STANDARD_NAME_FIXES: dict[str, str | None] = {
    "heterotrophic_respiration_carbon_flux":
        "surface_upward_mass_flux_of_carbon_dioxide_expressed_as_carbon_due_to_heterotrophic_respiration",
    "soil_respiration_carbon_flux":
        "surface_upward_mass_flux_of_carbon_dioxide_expressed_as_carbon_due_to_respiration_in_soil",
    "enhanced_vegetation_index": None,
    "land_surface_water_index": None,
    "sin_day_of_year": None,
    "soil_organic_carbon_stock": "soil_mass_content_of_carbon",
}
# standard names whose canonical units are an amount, written by globalflux as a rate
_RATE_NAMES = {
    "precipitation_amount": "lwe_precipitation_rate",
    "water_evapotranspiration_amount": "lwe_water_evaporation_rate",
}
# a chemical label between the number and the area in a unit ("g C m-2 d-1", "umol CO2 m-2 s-1"):
# UDUNITS reads "C" as coulomb; CF wants it in the long_name / standard_name instead
_LABELLED_UNIT = re.compile(r"^(?P<num>[a-zA-Zµ]*(?:g|mol))\s+(?P<label>C|CO2)\s+(?P<rest>.+)$")
_LABEL_WORDS = {"C": "carbon", "CO2": "CO2"}


def cf_units(units: str, long_name: str = "") -> tuple[str, str]:
    """CF units (UDUNITS-parseable) and long_name for a unit that names the substance.

    ``"g C m-2 d-1"`` becomes ``"g m-2 d-1"`` with "(as carbon)" added to the long_name unless it
    says carbon already; ``"umol CO2 m-2 s-1"`` becomes ``"umol m-2 s-1"`` with "(CO2)". Other units
    are returned unchanged.
    """
    m = _LABELLED_UNIT.match(str(units).strip())
    if not m:
        return str(units), long_name
    word = _LABEL_WORDS[m["label"]]
    if word.lower() not in long_name.lower():
        long_name = f"{long_name} (as {word})" if long_name else word
    return f"{m['num']} {m['rest']}", long_name


def _numeric_flags(da: xr.DataArray) -> None:
    """``flag_values`` as numbers of the variable's dtype (in place); drop unparseable ones."""
    attrs = da.attrs
    dtype = np.dtype("int8") if da.dtype == bool else da.dtype
    if "n_zones" in attrs and "flag_meanings" not in attrs:
        n = int(attrs["n_zones"])
        attrs["flag_values"] = np.arange(n, dtype=dtype)
        attrs["flag_meanings"] = " ".join(f"zone_{i}" for i in range(n))
        return
    fv = attrs.get("flag_values")
    if fv is None:
        return
    if isinstance(fv, str):
        try:
            vals = [int(v) for v in fv.split()]
        except ValueError:  # free text such as "-1 = not labelled": not CF flags
            attrs.pop("flag_values")
            return
        meanings = str(attrs.get("flag_meanings", "")).split()
        if len(meanings) != len(vals):
            attrs.pop("flag_values")
            attrs.pop("flag_meanings", None)
            return
        attrs["flag_values"] = np.asarray(vals, dtype=dtype)
    else:
        attrs["flag_values"] = np.asarray(fv, dtype=dtype)


def cf_encode(ds: xr.Dataset, *, for_write: bool = True) -> xr.Dataset:
    """A copy of ``ds`` whose metadata follow CF 1.8 (the one place that decides it).

    * ``grid_mapping = "spatial_ref"`` on every data variable with x/y dims (the CRS variable
      written by rioxarray; it is written here from a ``crs_wkt`` when only that is present);
      x/y get ``standard_name``, ``units``, ``axis`` from the CRS where they lack them;
    * units UDUNITS parses (:func:`cf_units`), standard names from the CF table whose canonical
      units the units convert to;
    * boolean layers stored as ``int8`` 0/1 flags with ``dtype = "bool"`` (read back as bool;
      ``for_write=False``, used on reading, leaves them bool in memory); ``flag_values`` numeric, of the variable's dtype;
    * integer layers keep their ``_FillValue`` (from attrs or encoding), cast to their dtype;
    * period means: a ``time_bnds`` coordinate (period start, start + ``period_days``) named by
      ``time.bounds``, and ``cell_methods = "time: mean"`` on variables along ``time`` that give
      none.
    """
    import rioxarray  # noqa: F401  (registers .rio)

    ds = ds.copy()
    ds.attrs = dict(ds.attrs)
    ds.attrs.setdefault("Conventions", "CF-1.8")
    has_crs = "spatial_ref" in ds.coords
    if not has_crs and ds.rio.crs is not None:
        ds = ds.rio.write_crs(ds.rio.crs, grid_mapping_name="spatial_ref")
        has_crs = True
    crs = ds.rio.crs if has_crs else None
    for axis, dim in (("X", "x"), ("Y", "y")):  # coordinate attributes a CF reader needs
        if dim not in ds.coords or crs is None:
            continue
        a = dict(ds[dim].attrs)
        if crs.is_geographic:
            std, units = (("longitude", "degrees_east") if dim == "x" else
                          ("latitude", "degrees_north"))
        else:
            std = f"projection_{dim}_coordinate"
            units = {"metre": "m", "meter": "m"}.get(crs.linear_units, crs.linear_units)
        a.setdefault("standard_name", std)
        a.setdefault("units", units)
        a.setdefault("long_name", f"{std.replace('_', ' ')} of pixel centre")
        a.setdefault("axis", axis)
        ds[dim].attrs = a
    for name in list(ds.data_vars):
        da = ds[name]
        attrs = dict(da.attrs)
        enc = dict(da.encoding)
        is_bool = da.dtype == bool or attrs.get("dtype") == "bool"
        if is_bool:
            attrs.setdefault("flag_values", "0 1")
            attrs.setdefault("flag_meanings", "false true")
            for key in ("_FillValue", "fill_value", "dtype"):
                enc.pop(key, None)
            attrs.pop("_FillValue", None)
            if for_write and da.dtype == bool:
                # CF has no boolean type: 0/1 int8 flags; attrs dtype="bool" makes xarray (and
                # globalflux) read them back as bool, as xarray does for NetCDF
                da = da.astype("int8")
                attrs["dtype"] = "bool"
        if has_crs and "x" in da.dims and "y" in da.dims:
            attrs["grid_mapping"] = "spatial_ref"
            enc.pop("grid_mapping", None)
        if "units" in attrs:
            attrs["units"], long = cf_units(attrs["units"], str(attrs.get("long_name", "")))
            if long:
                attrs["long_name"] = long
        std = attrs.get("standard_name")
        if std in _STANDARD_NAME_FIXES:
            std = _STANDARD_NAME_FIXES[std]
        if std in _RATE_NAMES and re.search(r"\)?-1$", str(attrs.get("units", ""))):
            std = _RATE_NAMES[std]
        if std:
            attrs["standard_name"] = std
        else:
            attrs.pop("standard_name", None)
        if da.dtype.kind in "iu" and not is_bool:
            fv = enc.get("_FillValue", attrs.pop("_FillValue", None))
            if fv is not None:  # none invented: a layer without one has no missing pixels
                enc["_FillValue"] = np.asarray(fv).astype(da.dtype).item()
        da = da.copy()
        da.attrs = attrs
        da.encoding = enc
        _numeric_flags(da)
        if "time" in da.dims and "period_days" in ds.coords:
            da.attrs.setdefault("cell_methods", "time: mean")
        ds[name] = da
    if ("time" in ds.coords and "period_days" in ds.coords and ds["time"].dtype.kind == "M"
            and "time_bnds" not in ds.variables):
        start = ds["time"].values
        days = np.asarray(ds["period_days"].values, dtype="int64")
        end = start + days.astype("timedelta64[D]")
        ds = ds.assign_coords(time_bnds=(("time", "nv"), np.stack([start, end], axis=1)))
        ds["time"].attrs = {**ds["time"].attrs, "bounds": "time_bnds"}
        ds["time"].attrs.setdefault("axis", "T")
    if "spatial_ref" in ds.coords:  # rioxarray writes an int64 0; CF 1.8 has no 64-bit integers
        ref = ds["spatial_ref"]
        ds = ds.assign_coords(spatial_ref=ref.astype("int32").assign_attrs(
            {**ref.attrs, "long_name": ref.attrs.get("long_name", "coordinate reference system")}))
    if "time" in ds.coords and ds["time"].dtype.kind == "M":
        # float days: CF 1.8 has no int64 (xarray's default for datetimes); bounds share the units
        units = ds["time"].encoding.get("units", "days since 1970-01-01")
        for name in ("time", "time_bnds"):
            if name in ds.coords:
                ds[name].encoding = {**ds[name].encoding, "dtype": "float64", "units": units}
    for name in ds.coords:  # coordinates and bounds are never missing (CF 2.5.1, 7.1)
        if (name in ds.dims or name == "time_bnds") and ds[name].dtype.kind in "fM":
            ds[name].encoding = {**ds[name].encoding, "_FillValue": None}
    return ds


def write_dataset(ds: xr.Dataset, path: str | Path, *, mode: str = "w-", compute: bool = True,
                  zarr_format: int = 3) -> Any:
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
    zarr_format
        3 (default) or 2; GDAL (3.10, as bundled with rasterio) opens only v2 stores.

    The metadata are made CF-conformant on the way (:func:`cf_encode`).
    """
    zarr_format = _check_zarr_format(zarr_format)
    path = Path(path)
    if mode == "w-" and path.exists():
        raise StoreError("store exists", where=str(path),
                         fix="Choose another path, delete it, or run with --resume/--overwrite.")
    ds = cf_encode(ds)
    for name in ds.variables:
        ds[name].encoding.pop("chunks", None)
        ds[name].encoding.pop("preferred_chunks", None)
        if zarr_format == 2:
            ds[name].encoding.pop("fill_value", None)
    _use_fast_codec(ds, zarr_format)
    with warnings.catch_warnings():
        # v3 consolidated metadata is deliberate (one read opens the store; finalize_store
        # consolidates too); zarr warns that the v3 spec does not define it yet
        warnings.filterwarnings("ignore", message=".*Consolidated metadata is currently not")
        return ds.to_zarr(path, mode=mode, consolidated=True, compute=compute,
                          zarr_format=zarr_format)


def open_dataset(path: str | Path, *, chunks: Any = "auto", verify: bool = True) -> xr.Dataset:
    """Open a Zarr store lazily; a missing or unreadable store names the path.

    A store marked complete that carries a chunk inventory (``_globalflux/chunks.json``) is
    checked first (``verify``): a missing or truncated chunk file is a :class:`StoreError`
    naming the store and the chunk, instead of NaN where data were. A store still being written
    (no consolidated metadata yet) opens too, logged as partial and with the attribute
    ``globalflux_partial``; use :func:`globalflux.query.open_map` to see only its completed blocks.
    Integer layers (zones, classes) keep their dtype: their fill value is not masked to NaN but
    kept in ``encoding["_FillValue"]`` (compare with it, e.g. ``da != da.encoding["_FillValue"]``).
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError("store not found", where=str(path), fix="Check the path.")
    if verify:
        verify_chunks(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr")
            warnings.filterwarnings("ignore", message=".*Consolidated metadata is currently not")
            ds = xr.open_zarr(path, chunks=chunks, consolidated=None)
            ints = [n for n, v in ds.data_vars.items()
                    if np.dtype(v.encoding.get("dtype", v.dtype)).kind in "iu"]
            if ints:
                raw = xr.open_zarr(path, chunks=chunks, consolidated=None,
                                   mask_and_scale={n: n not in ints for n in ds.variables})
                for n in ints:
                    da = raw[n]
                    fv = da.attrs.pop("_FillValue", None)
                    if fv is not None:
                        da.encoding["_FillValue"] = fv
                    ds[n] = da
            # the store's JSON attributes lose dtypes (flag_values) and xarray adds coordinate
            # fill values: restore what a NetCDF written from this Dataset needs to stay CF
            ds = cf_encode(ds, for_write=False)
    except Exception as exc:  # zarr raises many types for a broken store
        raise StoreError(f"cannot open as Zarr ({exc.__class__.__name__}: {exc})", where=str(path),
                         fix="Is it a Zarr store written by globalflux? Rewrite it if it is corrupt.") from None
    header = read_manifest(path)
    if header is not None and str(ds.attrs.get(COMPLETE_ATTR, "false")) != "true":
        n_done = len(completed_blocks(path))
        total = StoreLayout.from_json(header["layout"]).nblocks
        ds.attrs["globalflux_partial"] = f"{n_done}/{total} blocks complete"
        logging.getLogger("globalflux").warning(
            "%s: store is partial (%d of %d blocks written); unwritten blocks read as fill values",
            path, n_done, total)
    return ds


def find_bad_chunk(path: str | Path) -> str | None:
    """The first chunk of the store that cannot be read and decoded (``VAR/c/i/j/k``), or None.

    Used on the error path, after a read failed inside a codec, to name the damaged chunk.
    """
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = zarr.open_group(str(path), mode="r")
        for name, arr in g.arrays():
            for idx in np.ndindex(*arr.cdata_shape):
                try:
                    arr.blocks[idx]
                except Exception:  # noqa: BLE001 - any failure names this chunk
                    return f"{name}/c/" + "/".join(str(i) for i in idx)
    return None


def decode_error(exc: BaseException, path: str | Path) -> StoreError | None:
    """A :class:`StoreError` naming the store and chunk when ``exc`` came from a damaged chunk."""
    text = f"{exc.__class__.__name__}: {exc}"
    keys = ("blosc", "decompress", "codec", "zstd", "crc32", "checksum", "buffer", "decode")
    if not any(k in text.lower() for k in keys):
        return None
    try:
        chunk = find_bad_chunk(path)
    except Exception:  # noqa: BLE001
        chunk = None
    what = f"chunk {chunk} cannot be decoded" if chunk else "a chunk cannot be decoded"
    return StoreError(f"{what} ({text[:100]})", where=str(path),
                      fix="The store is damaged: rewrite it (run again with --overwrite) or restore it "
                      "from a copy.")


CHUNKS_FILE = "chunks.json"
_META_NAMES = {"zarr.json", ".zattrs", ".zgroup", ".zarray", ".zmetadata"}


def _chunk_inventory(path: Path) -> dict[str, int]:
    out = {}
    for root, dirs, files in os.walk(path):
        rel_root = Path(root).relative_to(path)
        if rel_root.parts[:1] == (MANIFEST_DIR,):
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if f in _META_NAMES or f.startswith("."):
                continue
            out[(rel_root / f).as_posix()] = os.path.getsize(os.path.join(root, f))
    return out


def write_chunk_inventory(path: str | Path) -> Path:
    """Record every chunk file of a finished store with its size (``_globalflux/chunks.json``)."""
    path = Path(path)
    d = _manifest_dir(path)
    d.mkdir(parents=True, exist_ok=True)
    target = d / CHUNKS_FILE
    _atomic_write_text(target, json.dumps({"version": 1, "chunks": _chunk_inventory(path)}))
    return target


def verify_chunks(path: str | Path) -> int:
    """Check the chunk files of a store against its inventory; returns how many were checked.

    Raises
    ------
    StoreError
        A chunk recorded when the store was finished is missing or has another size; the
        message names the store and the chunk.
    """
    path = Path(path)
    f = _manifest_dir(path) / CHUNKS_FILE
    if not f.is_file():
        return 0
    try:
        inv = json.loads(f.read_text(encoding="utf-8"))["chunks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"chunk inventory unreadable ({exc.__class__.__name__})", where=str(f),
                         fix="The store is damaged: rewrite it (run again with --overwrite).") from None
    for rel, size in inv.items():
        p = path / rel
        try:
            got = p.stat().st_size
        except OSError:
            raise StoreError(f"chunk {rel} is missing from a store marked complete", where=str(path),
                             fix="The store is damaged: rewrite it (run again with --overwrite) or "
                             "restore it from a copy.") from None
        if got != int(size):
            raise StoreError(f"chunk {rel} is {got} bytes, {int(size)} when written (truncated or "
                             "replaced)", where=str(path),
                             fix="The store is damaged: rewrite it (run again with --overwrite) or "
                             "restore it from a copy.")
    return len(inv)


# ------------------------------------------------------------------------------ region writes


@dataclass(frozen=True)
class StoreLayout:
    """The block grid of a region-written store.

    Attributes
    ----------
    dims
        Block dimensions, in order (e.g. ``("time", "y", "x")``).
    shape
        Length of each block dimension.
    chunks
        Chunk (= block) size along each block dimension; the last block may be shorter.
    variables
        Mapping of variable name to its dims (a subset of ``dims``, same order).
    """

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    variables: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def numblocks(self) -> tuple[int, ...]:
        return tuple(-(-n // c) for n, c in zip(self.shape, self.chunks))

    @property
    def nblocks(self) -> int:
        return int(np.prod(self.numblocks)) if self.numblocks else 1

    def block_index(self, flat: int) -> tuple[int, ...]:
        """Block indices (one per block dim) of flat block number ``flat`` (C order)."""
        return tuple(int(i) for i in np.unravel_index(int(flat), self.numblocks))

    def region(self, index: Iterable[int]) -> dict[str, slice]:
        """The slice of each block dimension covered by block ``index``."""
        out = {}
        for d, i, n, c in zip(self.dims, index, self.shape, self.chunks):
            out[d] = slice(i * c, min((i + 1) * c, n))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "dims": list(self.dims),
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "variables": {k: list(v) for k, v in self.variables},
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> StoreLayout:
        return cls(
            dims=tuple(obj["dims"]),
            shape=tuple(int(v) for v in obj["shape"]),
            chunks=tuple(int(v) for v in obj["chunks"]),
            variables=tuple((k, tuple(v)) for k, v in obj["variables"].items()),
        )

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> StoreLayout:
        """The layout of a chunked Dataset (data variables only; chunks must be regular)."""
        dims: list[str] = []
        for v in ds.data_vars.values():
            for d in v.dims:
                if d not in dims:
                    dims.append(d)
        chunks = []
        for d in dims:
            cs = ds.chunksizes.get(d) if ds.chunks else None
            c = int(cs[0]) if cs else int(ds.sizes[d])
            chunks.append(max(c, 1))
        variables = tuple((str(k), tuple(str(d) for d in v.dims)) for k, v in ds.data_vars.items())
        return cls(tuple(dims), tuple(int(ds.sizes[d]) for d in dims), tuple(chunks), variables)


def _manifest_dir(path: Path) -> Path:
    return path / MANIFEST_DIR


def _block_name(index: Iterable[int]) -> str:
    return ".".join(str(int(i)) for i in index) or "0"


def _fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_text(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` via a temporary file, fsync, ``os.replace`` and dir fsync."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    try:
        _fsync_path(target.parent)
    except OSError:  # some filesystems cannot fsync a directory
        pass


_TMP_MARKER = re.compile(r"^\..+\.\d+\.tmp$")


def _remove_stale_markers(path: Path) -> None:
    """Delete the temporary files of :func:`_atomic_write_text` left in the manifest folder by a
    killed writer (a process killed between writing and ``os.replace``).

    Only called while no other writer can be at work on the store: when a run resumes it, and
    when a run finalizes it (every block recorded).
    """
    n = 0
    for d in (_manifest_dir(path), _manifest_dir(path) / "blocks"):
        if not d.is_dir():
            continue
        for name in os.listdir(d):
            if _TMP_MARKER.match(name):
                (d / name).unlink(missing_ok=True)
                n += 1
    if n:
        logging.getLogger("globalflux").info(
            "%s: removed %d temporary manifest file(s) of a killed writer", path, n)


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest header of a region-written store, or None when it has none."""
    f = _manifest_dir(Path(path)) / "manifest.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"manifest unreadable ({exc})", where=str(f),
                         fix="Delete the store and run again without --resume.") from None


def completed_blocks(path: str | Path) -> set[tuple[int, ...]]:
    """Indices of the blocks recorded complete in the manifest (each fully written)."""
    d = _manifest_dir(Path(path)) / "blocks"
    if not d.is_dir():
        return set()
    out = set()
    for name in os.listdir(d):
        if name.startswith("."):
            continue  # a marker being written
        try:
            out.add(tuple(int(p) for p in name.split(".")))
        except ValueError:
            continue
    return out


def is_complete(path: str | Path) -> bool:
    """True when the store is marked complete (every block written, metadata consolidated)."""
    import zarr

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = zarr.open_group(str(path), mode="r")
        return str(g.attrs.get(COMPLETE_ATTR, "true")) == "true"
    except Exception:
        return False


def prepare_store(
    path: str | Path,
    template: xr.Dataset,
    *,
    fingerprint: str,
    resume: bool = False,
    zarr_format: int = 3,
) -> tuple[StoreLayout, set[tuple[int, ...]]]:
    """Create a region-written store (or check one for resuming); return its layout and done blocks.

    Parameters
    ----------
    path
        The store folder.
    template
        A chunked (lazy) Dataset with every data variable, coordinate and attribute of the final
        store; its chunks become the Zarr chunks and the blocks. Nothing of its data variables is
        computed.
    fingerprint
        Identifies what the store holds (e.g. a hash of the resolved recipe and the layout). A
        store with another fingerprint is never resumed.
    resume
        Reuse an existing store with the same fingerprint and layout; False refuses an existing
        path.
    zarr_format
        3 (default) or 2 (GDAL's Zarr driver reads v2 only). Metadata go through
        :func:`cf_encode`.

    Raises
    ------
    StoreError
        The path exists (``resume=False``), or it holds a store of another recipe or layout, or
        one not written region by region.
    """
    zarr_format = _check_zarr_format(zarr_format)
    path = Path(path)
    layout = StoreLayout.from_dataset(template)
    if path.exists():
        if not resume:
            raise StoreError("store exists", where=str(path),
                             fix="Use --resume to finish it, --overwrite to replace the run, or "
                             "another output folder.")
        header = read_manifest(path)
        if header is None:
            raise StoreError("is not a resumable globalflux store (no manifest)", where=str(path),
                             fix="Delete it or choose another output folder, then run without "
                             "--resume.")
        if header.get("fingerprint") != fingerprint:
            raise StoreError(
                f"was written by another recipe or model (fingerprint {header.get('fingerprint')!r}, "
                f"this run {fingerprint!r})",
                where=str(path),
                fix="Resume with the same recipe and --set values, or write to another --out.",
            )
        if StoreLayout.from_json(header["layout"]) != layout:
            raise StoreError("has another layout (variables, shape or chunks) than this run",
                             where=str(path),
                             fix="Resume with the same recipe, or write to another --out.")
        for partial in path.rglob("*.partial"):  # temp files of a killed Zarr write
            partial.unlink(missing_ok=True)
        _remove_stale_markers(path)
        return layout, completed_blocks(path)

    ds = cf_encode(template)
    # coordinates (e.g. period_days along time) are written now, with the metadata: a lazy one
    # would be skipped by the compute=False write below and read back as the fill value
    ds = ds.assign_coords({n: ds[n].compute() for n in ds.coords if ds[n].chunks is not None})
    for name in ds.variables:
        for key in ("chunks", "preferred_chunks", "compressors", "filters"):
            ds[name].encoding.pop(key, None)
        if zarr_format == 2:
            ds[name].encoding.pop("fill_value", None)
    ds.attrs = dict(ds.attrs)
    ds.attrs[FINGERPRINT_ATTR] = fingerprint
    ds.attrs[COMPLETE_ATTR] = "false"
    path.parent.mkdir(parents=True, exist_ok=True)
    # metadata and (numpy) coordinates only: the dask data variables are not computed
    _use_fast_codec(ds, zarr_format)
    ds.to_zarr(path, mode="w-", compute=False, consolidated=False, zarr_format=zarr_format)
    mdir = _manifest_dir(path)
    (mdir / "blocks").mkdir(parents=True, exist_ok=True)
    header = {
        "format": "globalflux-manifest-1",
        "fingerprint": fingerprint,
        "layout": layout.to_json(),
        "zarr_format": zarr_format,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    _atomic_write_text(mdir / "manifest.json", json.dumps(header, indent=1))
    return layout, set()


def _chunk_files(path: Path, var: str, region: Mapping[str, slice], dims: tuple[str, ...],
                 chunks: Mapping[str, int], zarr_format: int = 3) -> list[Path]:
    """Paths of the chunk files covering ``region`` (default key encodings: v3 ``c/i/j``,
    v2 ``i.j``)."""
    import itertools

    ranges = []
    for d in dims:
        s = region[d]
        c = chunks[d]
        ranges.append(range(s.start // c, -(-s.stop // c)))
    if zarr_format == 2:
        return [path / var / (".".join(str(i) for i in idx) or "0")
                for idx in itertools.product(*ranges)]
    return [path / var / "c" / "/".join(str(i) for i in idx) for idx in itertools.product(*ranges)]


def write_block(
    path: str | Path,
    layout: StoreLayout,
    index: tuple[int, ...],
    data: Mapping[str, np.ndarray],
    *,
    record: bool = True,
) -> tuple[int, ...]:
    """Write one block of every variable, flush it to disk, then record it in the manifest.

    Parameters
    ----------
    path, layout
        The store and its layout (from :func:`prepare_store`).
    index
        Block indices along ``layout.dims``.
    data
        Variable name -> array for this block (dims of that variable, block-sized). Variables
        missing a block dimension are written only by blocks with index 0 along it.
    record
        Record the block in the manifest after the data are on disk.

    Returns
    -------
    The block index (so a Dask task returns something small).
    """
    import zarr

    path = Path(path)
    region = layout.region(index)
    chunk_of = dict(zip(layout.dims, layout.chunks))
    pos = dict(zip(layout.dims, index))
    written: list[Path] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = zarr.open_group(str(path), mode="r+")
        for var, vdims in layout.variables:
            if any(pos[d] != 0 for d in layout.dims if d not in vdims):
                continue
            arr = group[var]
            sel = tuple(region[d] for d in vdims)
            values = np.asarray(data[var])
            expected = tuple(s.stop - s.start for s in sel)
            if values.shape != expected:
                raise StoreError(f"block {index} of {var!r} has shape {values.shape}, expected "
                                 f"{expected}", where=str(path),
                                 fix="Chunks of the mapped arrays must match the store layout.")
            arr[sel] = values.astype(arr.dtype, copy=False)
            written.extend(_chunk_files(path, var, region, vdims, chunk_of,
                                        int(getattr(arr.metadata, "zarr_format", 3))))
    for f in written:
        if f.exists():  # all-fill chunks are not stored
            _fsync_path(f)
    if record:
        _atomic_write_text(_manifest_dir(path) / "blocks" / _block_name(index), "")
    return tuple(index)


def record_blocks(path: str | Path, indices: Iterable[tuple[int, ...]]) -> None:
    """Record blocks complete that hold only the fill value (nothing to write)."""
    d = _manifest_dir(Path(path)) / "blocks"
    for idx in indices:
        _atomic_write_text(d / _block_name(idx), "")


def finalize_store(path: str | Path, layout: StoreLayout,
                   attrs: Mapping[str, Any] | None = None) -> Path:
    """Mark a fully written store complete and consolidate its metadata.

    Raises
    ------
    StoreError
        Some block is not recorded in the manifest.
    """
    import zarr

    path = Path(path)
    done = completed_blocks(path)
    missing = layout.nblocks - len({b for b in done if len(b) == len(layout.dims)})
    if missing > 0:
        raise StoreError(f"{missing} of {layout.nblocks} blocks are not written", where=str(path),
                         fix="Run again with --resume to finish the store.")
    _remove_stale_markers(path)  # e.g. of a worker killed and restarted during this run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = zarr.open_group(str(path), mode="r+")
        new = dict(attrs or {})
        new[COMPLETE_ATTR] = "true"
        g.attrs.update(new)
        zarr.consolidate_metadata(str(path))
    write_chunk_inventory(path)
    return path


__all__ += ["record_blocks", "COMPLETE_ATTR", "FINGERPRINT_ATTR", "verify_chunks", "write_chunk_inventory",
            "find_bad_chunk", "decode_error"]


# ----------------------------------------------------------------- predictor cubes (cube issue)


def write_cube(ds: xr.Dataset, path: str | Path, *, overwrite: bool = False,
               check_empty: bool = True) -> Path:
    """Write a (lazy) predictor cube atomically, refusing variables with no valid data.

    The cube is written to ``<path>.partial`` while the "has any valid value" flag of every float
    variable is computed in the same pass (one read of the sources); only when all is well is the
    partial store moved to ``path`` (replacing an existing one only with ``overwrite``). On any
    error the partial store is removed and an existing ``path`` is left untouched.

    Raises
    ------
    StoreError
        ``path`` exists and ``overwrite`` is False.
    DataError
        A variable has no valid (non-NaN) value: the source band is all nodata, or every pixel
        failed QC; the variable and its source file are named.
    """
    import shutil

    import dask

    from ..errors import DataError

    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreError("store exists", where=str(path),
                         fix="Choose another path, delete it, or run with --overwrite.")
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    names = [v for v in ds.data_vars if ds[v].dtype.kind == "f"] if check_empty else []
    flags = [ds[v].notnull().any().data for v in names]
    try:
        delayed = write_dataset(ds, partial, mode="w", compute=False)
        results = dask.compute(delayed, *flags)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    write_chunk_inventory(partial)
    empty = [v for v, ok in zip(names, results[1:]) if not bool(ok)]
    if empty:
        shutil.rmtree(partial, ignore_errors=True)
        srcs = [str(ds[v].attrs.get("source_file", ds[v].attrs.get("source", v))) for v in empty]
        raise DataError(
            f"variable(s) {empty} have no valid value (all nodata, fill or QC-masked) in the cube extent",
            where=", ".join(srcs),
            fix="Check the source band, its nodata/fill values and QC rule, and the bbox/dates.",
        )
    if path.exists():
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        partial.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(path)
    return path


__all__ += ["write_cube"]
