"""Settings of the seeded synthetic world (globalflux.testing.synthetic)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import GridError, RecipeError
from ._schema import option


@dataclass(frozen=True)
class SyntheticConfig:
    """A seeded synthetic region at 500 m with a known zone structure and RH response.

    The world is a regular EPSG:4326 grid whose north-west corner is (``west``, ``north``) and
    whose pixels are ``resolution`` degrees (0.0045 deg ~ 500 m). Land and sea, static zone
    factors, 8-day predictors, the true zones and the true RH are generated from ``seed``; the
    same settings always give the same world.
    """

    seed: int = option(42, doc="Random seed; the same seed gives the same world.", min=0, max=2**32 - 1)
    ny: int = option(256, doc="Rows of the 500 m grid.", min=16, max=20000)
    nx: int = option(256, doc="Columns of the 500 m grid.", min=16, max=20000)
    resolution: float = option(0.0045, doc="Pixel size in degrees (0.0045 deg is about 500 m).",
                               min=1e-4, max=1.0, units="degree")
    year: int = option(2020, doc="First calendar year of the 8-day series.", min=2000, max=2100)
    n_years: int = option(1, doc="Number of years of 8-day series (46 MODIS periods a year).",
                          min=1, max=20)
    n_zones: int = option(4, doc="Number of true zones in the world (climate prototypes).",
                          min=2, max=8)
    n_sites: int = option(60, doc="Number of measurement sites sampled on land.", min=4, max=5000)
    min_sites_per_zone: int = option(
        6, doc="Each true zone gets at least this many sites (networks are uneven, but a zone "
        "without sites cannot be learned).", min=1, max=1000)
    noise_sd: float = option(0.15, doc="Observation noise of site RH: SD of the log-normal "
                             "multiplicative error of a one-day (manual) campaign.",
                             min=0.0, max=2.0)
    sea_fraction: float = option(0.2, doc="Approximate share of the region that is sea "
                                 "(the east side, behind a ragged coastline).", min=0.0, max=0.8)
    west: float = option(10.0, doc="Longitude of the region's west edge (degrees, EPSG:4326).",
                         min=-180.0, max=180.0, units="degree_east")
    north: float = option(48.0, doc="Latitude of the region's north edge (degrees).",
                          min=-90.0, max=90.0, units="degree_north")
    sites_file: str | None = option(
        None, doc="Optional Parquet table with columns site_id, lat, lon (e.g. the output of "
        "`globalflux sites`; one row per site is used): put the synthetic sites at these "
        "locations instead of drawing them. Points off the world's land are dropped (logged). "
        "Relative to the current folder.")
    bbox: tuple[float, float, float, float] | None = option(
        None, doc="Sub-region to map, [west, south, east, north] in degrees; null maps the whole "
        "world. Must overlap the world (west..west+nx*resolution, north-ny*resolution..north).")

    def validate(self, *, path: str = "", source: str | None = None) -> None:
        """Cross-field checks: the world fits on the globe; ``bbox`` is well formed."""
        where = f"{source}: {path}" if source else path
        south = self.north - self.ny * self.resolution
        east = self.west + self.nx * self.resolution
        if south < -90.0 or east > 180.0:
            raise RecipeError(
                f"the world ({self.ny}x{self.nx} pixels of {self.resolution} deg from "
                f"west={self.west}, north={self.north}) reaches south={south:.4f}, east={east:.4f}",
                where=where or "synthetic",
                fix="Move west/north or use fewer/smaller pixels so it stays within "
                "-180..180 and -90..90.")
        if self.bbox is not None:
            w, s, e, n = self.bbox
            if not (w < e and s < n):
                raise GridError(f"bbox {list(self.bbox)} is empty or inverted",
                                where=f"{where}.bbox" if where else "synthetic.bbox",
                                fix="Give [west, south, east, north] with west < east and "
                                "south < north.")
            W, S, E, N = self.extent
            if w >= E or e <= W or s >= N or n <= S:
                raise GridError(
                    f"bbox {list(self.bbox)} is outside the synthetic world "
                    f"[{W:.4f}, {S:.4f}, {E:.4f}, {N:.4f}]",
                    where=f"{where}.bbox" if where else "synthetic.bbox",
                    fix="Give a [west, south, east, north] that overlaps the world, or null for "
                    "the whole world.")

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the whole world in degrees."""
        return (self.west, self.north - self.ny * self.resolution,
                self.west + self.nx * self.resolution, self.north)
