"""Settings of predictor cubes: sources, target grid, time handling, chunks, site extraction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._schema import option

_STATIC_LAYERS = ("land_mask", "land_cover", "koppen", "ndvi_max", "ndvi_min", "elevation", "mat", "map", "soc")


@dataclass(frozen=True)
class GridConfig:
    """The target grid of the cube (pixel edges on the bbox)."""

    crs: str = option("EPSG:4326", doc="CRS of the cube: EPSG:4326, or 'modis-sinusoidal' for the MODIS "
                      "sinusoidal projection (or any EPSG code / WKT).")
    resolution: float = option(0.5, doc="Pixel size in CRS units (degrees for EPSG:4326: 0.05 or 0.5 for the "
                               "static cube; 463.312716528 m for MODIS sinusoidal 500 m).", min=1e-9)
    bbox: tuple[float, float, float, float] = option(
        (-180.0, -90.0, 180.0, 90.0), doc="Outer edges W, S, E, N in CRS units.")


@dataclass(frozen=True)
class RasterSourceConfig:
    """One raster source (GeoTIFF/COG, NetCDF or Zarr), a single file or a dated series."""

    path: str = option(doc="File, Zarr folder, or a glob (e.g. 'lst/*.tif') of one file per date; dates are "
                       "read from the names (MODIS AYYYYDDD or YYYYMMDD).")
    variable: str | None = option(None, doc="Variable inside a NetCDF/Zarr file (needed when it holds several).")
    band: int = option(1, doc="1-based band of a GeoTIFF.", min=1)
    crs: str | None = option(None, doc="CRS used only when the file declares none (else a missing CRS is an error).")
    nodata: float | None = option(None, doc="Raw nodata value (default: the file's).")
    fill: tuple[float, ...] = option((), doc="Further raw fill values masked to NaN (e.g. MODIS fill classes).")
    valid_range: tuple[float, float] | None = option(None, doc="Valid raw DN range [min, max]; outside -> NaN.")
    scale: float | None = option(None, doc="Scale factor: value = DN * scale + offset (default: the file's).")
    offset: float | None = option(None, doc="Offset added after scaling (default: the file's).")
    units: str | None = option(None, doc="CF units of the decoded values (default: the file's).")
    categorical: bool = option(False, doc="Integer classes: no scaling, resampled by majority (mode).")
    resampling: Literal["average", "mode", "nearest", "bilinear"] = option(
        "average", doc="How the source is put on the cube grid (mode for categorical sources).")
    qc_path: str | None = option(None, doc="QC band file or glob (same dates as 'path'); pixels failing "
                                 "(qc & qc_mask) == qc_good are NaN before any statistic.")
    qc_band: int = option(1, doc="1-based band of the QC file.", min=1)
    qc_mask: int = option(0, doc="QC bits tested, as an integer (e.g. 3 for bits 0-1).", min=0)
    qc_good: int = option(0, doc="Value of the tested QC bits for a good pixel.", min=0)


@dataclass(frozen=True)
class StacConfig:
    """Where STAC items come from and which products to load."""

    catalog: str = option("https://planetarycomputer.microsoft.com/api/stac/v1",
                          doc="STAC API URL, or a local catalog.json / collection.json / ItemCollection file.")
    products: tuple[str, ...] = option(
        ("lst_day",), doc="Products from globalflux.io.products.PRODUCTS (e.g. lst_day, lst_night, sr_b01, sr_b02, "
        "sr_b03, sr_b06, gpp, lai, fpar); each names its collection, asset, scale, fill values and QC rule.")
    datetime: str = option("2019-01-01/2019-12-31", doc="Time range as START/END (RFC 3339 dates).")
    groupby: Literal["solar_day", "time", "id"] = option("solar_day", doc="How items are merged into time steps.")
    max_items: int | None = option(None, doc="Stop after this many items (None: all).", min=1)
    sign: Literal["none", "planetary_computer"] = option(
        "none", doc="Sign asset URLs: 'planetary_computer' needs the planetary-computer package.")
    load_chunk: int = option(1024, doc="Spatial chunk (pixels) of the odc-stac load.", min=64)


@dataclass(frozen=True)
class CubeConfig:
    """Predictor cube: source, target grid, time handling, chunks and site extraction."""

    source: Literal["synthetic", "rasters", "stac", "static"] = option(
        "synthetic", doc="Where predictors come from: the synthetic world, raster files, STAC items, or the "
        "real static grids.")
    grid: GridConfig = option(default_factory=GridConfig, doc="Target grid (CRS, resolution, bbox).")
    static_root: str = option("../shared/data/grids", doc="Folder of the real static grids (source: static).")
    static_layers: tuple[str, ...] = option(
        _STATIC_LAYERS, doc="Static layers to build: land_mask (gives land_mask and land_fraction), land_cover, "
        "koppen, ndvi_max, ndvi_min, elevation, mat, map, soc.")
    land_threshold: float = option(0.5, doc="land_mask = land fraction >= this (static cube).", min=0.0, max=1.0)
    rasters: dict[str, RasterSourceConfig] = option(
        default_factory=dict, doc="Raster sources by variable name (source: rasters).")
    stac: StacConfig = option(default_factory=StacConfig, doc="STAC settings (source: stac).")
    temporal: Literal["native", "8day", "daily"] = option(
        "8day", doc="Time steps of the cube: native (as loaded), 8day (MODIS periods, mean), daily (8-day "
        "composites linearly interpolated to days, for the LSTM).")
    indices: tuple[Literal["ndvi", "evi", "lswi"], ...] = option(
        (), doc="Vegetation/water indices computed from reflectance: ndvi and lswi need sr_b01/sr_b02/sr_b06, "
        "evi also sr_b03.")
    annual_stats: bool = option(False, doc="Add annual max/min/mean of each variable per observation year.")
    add_sin_doy: bool = option(False, doc="Add sin_doy = sin(2 pi (DOY - 1) / 365.25) as a "
                               "variable (globalflux.cube.day_of_year_angle).")
    chunking: Literal["auto", "fixed"] = option(
        "auto", doc="auto: whole time axis per chunk and 10-100 MB chunks (chunk_mb); fixed: chunk_time/y/x.")
    chunk_mb: float = option(32.0, doc="Target chunk size in MB for chunking: auto.", min=1.0, max=1000.0)
    chunk_time: int = option(-1, doc="Chunk length along time (-1: whole axis).", min=-1)
    chunk_y: int = option(128, doc="Chunk size along y.", min=1)
    chunk_x: int = option(128, doc="Chunk size along x.", min=1)
    extraction: Literal["nearest", "window"] = option("nearest", doc="Sampling at site coordinates.")
    window: int = option(3, doc="Window size in pixels for extraction: window.", min=1, max=99)
    sites: str | None = option(None, doc="Optional table (CSV or Parquet with site_id, lat, lon) of sites to "
                               "sample the written cube at; writes metrics/site_samples.csv.")
    store: str = option("cube.zarr", doc="Name of the Zarr store written under OUT/maps/.")


__all__ = ["CubeConfig", "GridConfig", "RasterSourceConfig", "StacConfig"]
