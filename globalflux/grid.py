"""Frozen specs: bounding boxes, target grids and the MODIS 8-day calendar.

Pure values and pure functions; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import GridError

__all__ = [
    "BBox",
    "GridSpec",
    "MODIS_SINUSOIDAL_WKT",
    "MODIS_500M",
    "modis_8day_start",
    "modis_8day_index",
    "modis_8day_periods",
    "period_lengths",
    "grid_of",
    "make_grid",
]

#: The MODIS sinusoidal projection (sphere of radius 6371007.181 m).
MODIS_SINUSOIDAL_WKT = (
    'PROJCS["unnamed",GEOGCS["Unknown datum based upon the custom spheroid",'
    'DATUM["Not specified (based on custom spheroid)",SPHEROID["Custom spheroid",6371007.181,0]],'
    'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Sinusoidal"],'
    'PARAMETER["longitude_of_center",0],PARAMETER["false_easting",0],'
    'PARAMETER["false_northing",0],UNIT["Meter",1]]'
)
#: The MODIS 500 m pixel size in metres (the "500 m" products are 463.3127 m).
MODIS_500M = 463.312716528


@dataclass(frozen=True)
class BBox:
    """An axis-aligned bounding box in the units of its CRS.

    Attributes
    ----------
    west, south, east, north
        Edges (degrees for EPSG:4326, metres for projected CRSs).
    """

    west: float = field(metadata={"doc": "West edge (minimum x)."})
    south: float = field(metadata={"doc": "South edge (minimum y)."})
    east: float = field(metadata={"doc": "East edge (maximum x)."})
    north: float = field(metadata={"doc": "North edge (maximum y)."})

    def __post_init__(self) -> None:
        if not (self.west < self.east and self.south < self.north):
            raise GridError(
                f"bbox {self.as_tuple()} is empty or inverted",
                where="bbox",
                fix="Give west < east and south < north (W,S,E,N).",
            )

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.west, self.south, self.east, self.north)

    def intersects(self, other: BBox) -> bool:
        return not (
            other.west >= self.east
            or other.east <= self.west
            or other.south >= self.north
            or other.north <= self.south
        )

    def intersection(self, other: BBox) -> BBox | None:
        if not self.intersects(other):
            return None
        return BBox(
            max(self.west, other.west),
            max(self.south, other.south),
            min(self.east, other.east),
            min(self.north, other.north),
        )

    @classmethod
    def parse(cls, text: str, where: str = "bbox") -> BBox:
        """Parse ``"W,S,E,N"``."""
        try:
            parts = [float(p) for p in str(text).split(",")]
        except ValueError:
            parts = []
        if len(parts) != 4:
            raise GridError(f"got {text!r}", where=where, fix="Write the bbox as W,S,E,N numbers.")
        return cls(*parts)


@dataclass(frozen=True)
class GridSpec:
    """A regular target grid: CRS, pixel size and extent (pixel edges on the bbox).

    Attributes
    ----------
    crs
        Any CRS string rasterio/pyproj understands (``"EPSG:4326"``, a WKT).
    resolution
        Pixel size in CRS units (positive; rows run north to south).
    bbox
        Outer edges of the grid, in CRS units.
    """

    crs: str = field(metadata={"doc": "CRS (EPSG code or WKT)."})
    resolution: float = field(metadata={"doc": "Pixel size in CRS units."})
    bbox: BBox = field(metadata={"doc": "Outer pixel edges in CRS units."})

    def __post_init__(self) -> None:
        if not self.resolution > 0:
            raise GridError(f"resolution {self.resolution} must be positive", where="grid.resolution",
                            fix="Give the pixel size in CRS units, e.g. 0.05 or 463.3127.")

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx), rounding the extent to whole pixels."""
        ny = int(round((self.bbox.north - self.bbox.south) / self.resolution))
        nx = int(round((self.bbox.east - self.bbox.west) / self.resolution))
        return ny, nx

    @property
    def x(self) -> np.ndarray:
        """Pixel-centre x coordinates, west to east."""
        return self.bbox.west + (np.arange(self.shape[1]) + 0.5) * self.resolution

    @property
    def y(self) -> np.ndarray:
        """Pixel-centre y coordinates, north to south."""
        return self.bbox.north - (np.arange(self.shape[0]) + 0.5) * self.resolution

    @property
    def transform(self):
        """The affine transform of the grid (rasterio ``Affine``)."""
        from affine import Affine

        return Affine(self.resolution, 0.0, self.bbox.west, 0.0, -self.resolution, self.bbox.north)

    @property
    def is_geographic(self) -> bool:
        return str(self.crs).upper() in ("EPSG:4326", "OGC:CRS84", "WGS84")

    @classmethod
    def global_latlon(cls, resolution: float) -> GridSpec:
        """The whole globe in EPSG:4326 at ``resolution`` degrees."""
        return cls("EPSG:4326", resolution, BBox(-180.0, -90.0, 180.0, 90.0))

    @classmethod
    def modis_sinusoidal(cls, bbox: BBox, resolution: float = MODIS_500M) -> GridSpec:
        """A grid in the MODIS sinusoidal projection (default 463.3127 m, the "500 m" pixel).

        ``bbox`` is in sinusoidal metres; its edges are snapped outwards onto the global MODIS
        pixel lattice (origin x = -20015109.354 m, y = 10007554.677 m) so that the grid's pixels
        coincide with MODIS tile pixels.
        """
        box = _snap_outwards(bbox, -20015109.354, 10007554.677, resolution)
        return cls(MODIS_SINUSOIDAL_WKT, resolution, box)

    @property
    def size(self) -> int:
        """Number of pixels."""
        ny, nx = self.shape
        return ny * nx

    def coords(self) -> dict[str, np.ndarray]:
        """Pixel-centre coordinates ``{"y": ..., "x": ...}`` (y north to south)."""
        return {"y": self.y, "x": self.x}

    def geobox(self):
        """The grid as an :class:`odc.geo.geobox.GeoBox` (for odc-stac and odc-geo)."""
        from odc.geo.geobox import GeoBox

        return GeoBox(self.shape, self.transform, self.crs)

    def contains(self, x, y) -> np.ndarray:
        """Whether points (in the grid's CRS) fall inside the grid's outer edges."""
        x = np.asarray(x, dtype="float64")
        y = np.asarray(y, dtype="float64")
        b = self.bbox
        return (x >= b.west) & (x <= b.east) & (y >= b.south) & (y <= b.north)

    def subset(self, bbox: BBox) -> GridSpec:
        """The part of this grid inside ``bbox``, snapped outwards to whole pixels.

        Raises
        ------
        GridError
            When ``bbox`` does not overlap the grid.
        """
        inter = self.bbox.intersection(bbox)
        if inter is None:
            raise GridError(
                f"bbox {bbox.as_tuple()} does not overlap the grid {self.bbox.as_tuple()}",
                where="bbox",
                fix="Give a bbox (W,S,E,N) inside the grid, in the grid's CRS units.",
            )
        box = _snap_outwards(inter, self.bbox.west, self.bbox.north, self.resolution)
        return GridSpec(self.crs, self.resolution, box)


def _snap_outwards(bbox: BBox, x0: float, y0: float, r: float) -> BBox:
    """``bbox`` widened to whole ``r`` pixels of the lattice whose corner is (``x0``, ``y0``)."""
    west = x0 + np.floor((bbox.west - x0) / r + 1e-9) * r
    east = x0 + np.ceil((bbox.east - x0) / r - 1e-9) * r
    north = y0 - np.floor((y0 - bbox.north) / r + 1e-9) * r
    south = y0 - np.ceil((y0 - bbox.south) / r - 1e-9) * r
    return BBox(float(west), float(south), float(east), float(north))


def make_grid(crs: str, resolution: float, bbox) -> GridSpec:
    """A GridSpec from recipe values; ``crs="modis-sinusoidal"`` means the MODIS sinusoidal
    projection (bbox in metres, snapped to the MODIS pixel lattice)."""
    box = bbox if isinstance(bbox, BBox) else BBox(*[float(v) for v in bbox])
    if str(crs).lower() in ("modis-sinusoidal", "modis_sinusoidal", "sinusoidal"):
        return GridSpec.modis_sinusoidal(box, resolution)
    g = GridSpec(str(crs), float(resolution), box)
    ny, nx = g.shape
    if ny < 1 or nx < 1:
        raise GridError(f"bbox {box.as_tuple()} holds no {resolution} pixel", where="cube.grid",
                        fix="Give a bbox at least one pixel wide and high.")
    return g


def grid_of(obj, *, crs: str | None = None, where: str = "source") -> GridSpec:
    """The :class:`GridSpec` of a DataArray/Dataset with regular 1-D ``x``/``y`` pixel-centre coords.

    Parameters
    ----------
    obj
        xarray object with ``x`` and ``y`` coordinates (y may run either way).
    crs
        The CRS; default: the object's rioxarray CRS.
    where
        Name of the source, for error messages.

    Raises
    ------
    GridError
        No CRS, fewer than 2 pixels along an axis, or irregular / non-square pixels.
    """
    if crs is None:
        rio_crs = obj.rio.crs if "spatial_ref" in obj.coords or hasattr(obj, "rio") else None
        if rio_crs is None:
            raise GridError("has no CRS", where=where,
                            fix="Write one with da.rio.write_crs('EPSG:4326') or fix the source file.")
        crs = rio_crs.to_string()
    x = np.asarray(obj["x"].values, dtype="float64")
    y = np.asarray(obj["y"].values, dtype="float64")
    if x.size < 2 and y.size < 2:
        raise GridError(f"grid of shape ({y.size}, {x.size}) is too small", where=where,
                        fix="A source needs at least 2 pixels along x or y to know its pixel size.")
    ref = x if x.size >= 2 else y
    dx = np.diff(ref)
    res = float(np.abs(ref[-1] - ref[0]) / (ref.size - 1))
    dy = np.diff(y) if y.size >= 2 else np.array([res])
    dxx = np.diff(x) if x.size >= 2 else np.array([res])
    if not (np.allclose(np.abs(dx), res, rtol=1e-6, atol=1e-9 * max(1.0, res))
            and np.allclose(np.abs(dy), res, rtol=1e-4) and np.allclose(np.abs(dxx), res, rtol=1e-4)):
        raise GridError("pixels are not regular and square", where=where,
                        fix="Reproject the source onto a regular grid first.")
    res = float(f"{res:.10g}")  # float noise of stored coordinates (1/120 -> 0.008333333333)
    west = _snap(float(x.min()) - res / 2)
    north = _snap(float(y.max()) + res / 2)
    ny, nx = y.size, x.size
    return GridSpec(str(crs), res, BBox(west, _snap(north - ny * res), _snap(west + nx * res), north))


def _snap(v: float) -> float:
    """Round an edge coordinate to 1e-6 CRS units (removes float noise of stored coordinates)."""
    return float(np.round(v, 6))


# --------------------------------------------------------------------------- MODIS 8-day calendar


def modis_8day_start(time) -> pd.DatetimeIndex:
    """The start date of the MODIS 8-day period holding each date.

    Periods start on day of year 1, 9, 17, ..., 361 of each year; the last period of a year is
    short (5 days, 6 in leap years) and never crosses into the next year.
    """
    t = pd.DatetimeIndex(pd.to_datetime(np.asarray(time))).normalize()
    doy = t.day_of_year.to_numpy()
    start_doy = ((doy - 1) // 8) * 8 + 1
    years = t.year.to_numpy()
    base = pd.to_datetime({"year": years, "month": np.ones_like(years), "day": np.ones_like(years)})
    return pd.DatetimeIndex(base + pd.to_timedelta(start_doy - 1, unit="D"))


def modis_8day_index(time) -> tuple[np.ndarray, np.ndarray]:
    """(year, period number 0..45) of each date."""
    t = pd.DatetimeIndex(pd.to_datetime(np.asarray(time)))
    return t.year.to_numpy(), ((t.day_of_year.to_numpy() - 1) // 8)


def modis_8day_periods(start: str | pd.Timestamp, end: str | pd.Timestamp) -> pd.DatetimeIndex:
    """All MODIS 8-day period start dates whose periods overlap ``[start, end]``."""
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    out = []
    for year in range(s.year, e.year + 1):
        starts = pd.Timestamp(year=year, month=1, day=1) + pd.to_timedelta(np.arange(0, 366, 8), "D")
        starts = starts[starts.year == year]
        out.append(starts)
    idx = pd.DatetimeIndex(np.concatenate([o.to_numpy() for o in out]))
    first = modis_8day_start([s])[0]
    return idx[(idx >= first) & (idx <= e)]


def period_lengths(starts) -> np.ndarray:
    """Number of days in each MODIS 8-day period (8, or 5/6 for the last of a year)."""
    s = pd.DatetimeIndex(starts)
    year_end = pd.to_datetime({"year": s.year + 1, "month": 1, "day": 1})
    nxt = s + pd.Timedelta(days=8)
    end = np.minimum(nxt.to_numpy(), pd.DatetimeIndex(year_end).to_numpy())
    return ((end - s.to_numpy()) / np.timedelta64(1, "D")).astype(int)
