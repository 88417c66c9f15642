"""Settings of the synthetic daily efflux world and of the daily efflux map (workflow
``efflux_daily_map``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import RecipeError
from ._schema import option


@dataclass(frozen=True)
class DailyWorldConfig:
    """A seeded SYNTHETIC region at 500 m with daily drivers and a known daily efflux.

    The world is a regular EPSG:4326 grid whose north-west corner is (``west``, ``north``).
    Land and sea, zones, daily drivers (land-surface temperature, soil moisture, precipitation,
    LAI), the true efflux (with memory: rain pulses after dry spells, lagged vegetation) and the
    sites are generated from ``seed`` (:func:`globalflux.testing.daily.make_daily_world`).
    """

    seed: int = option(7, doc="Random seed; the same seed gives the same world.")
    ny: int = option(64, doc="Rows of the 500 m grid.", min=16, max=4000)
    nx: int = option(64, doc="Columns of the 500 m grid.", min=16, max=4000)
    resolution: float = option(0.0045, doc="Pixel size in degrees (0.0045 deg is about 500 m).",
                               min=1e-4, max=1.0, units="degree")
    year: int = option(2020, doc="First calendar year of the daily series.", min=1980, max=2100)
    n_years: int = option(2, doc="Number of years of daily series.", min=1, max=20)
    n_zones: int = option(4, doc="Number of true zones (each with its own efflux response).",
                          min=2, max=6)
    n_sites: int = option(40, doc="Number of measurement sites sampled on land.", min=4, max=2000)
    min_sites_per_zone: int = option(6, doc="Each true zone gets at least this many sites.",
                                     min=1, max=1000)
    min_record_days: int = option(
        240, doc="Shortest site record (days between its first and last observation).", min=30,
        units="d")
    noise_sd: float = option(0.1, doc="Observation noise: SD of the log-normal multiplicative "
                             "error of a daily chamber value.", min=0.0, max=2.0)
    sea_fraction: float = option(0.15, doc="Approximate share of the region that is sea.",
                                 min=0.0, max=0.8)
    west: float = option(10.0, doc="Longitude of the region's west edge (degrees, EPSG:4326).",
                         min=-180.0, max=180.0, units="degree_east")
    north: float = option(46.0, doc="Latitude of the region's north edge (degrees).",
                          min=-90.0, max=90.0, units="degree_north")

    def validate(self, *, path: str = "", source: str | None = None) -> None:
        where = f"{source}: {path}" if source else (path or "daily_world")
        south = self.north - self.ny * self.resolution
        east = self.west + self.nx * self.resolution
        if south < -90.0 or east > 180.0:
            raise RecipeError(
                f"the world ({self.ny}x{self.nx} pixels of {self.resolution} deg from "
                f"west={self.west}, north={self.north}) reaches south={south:.4f}, east={east:.4f}",
                where=where, fix="Move west/north or use fewer/smaller pixels.")
        if self.min_record_days > 365 * self.n_years:
            raise RecipeError(
                f"min_record_days {self.min_record_days} is longer than the series "
                f"({self.n_years} year(s))", where=f"{where}.min_record_days",
                fix="Lower min_record_days or raise n_years.")

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the whole world in degrees."""
        return (self.west, self.north - self.ny * self.resolution,
                self.west + self.nx * self.resolution, self.north)


@dataclass(frozen=True)
class EffluxMapConfig:
    """Daily efflux map from the LSTM: held-out sites, map chunks, COG cadence, map scoring."""

    holdout_fraction: float = option(
        0.2, doc="Share of the sites never shown to training (neither targets nor drivers in the "
        "scalers); the LSTM is scored on their whole record (split=holdout).", min=0.0, max=0.8)
    time_chunk: int = option(
        92, doc="Days per time chunk of the map: one Dask task per chunk and spatial block, the "
        "LSTM state (h, c) handed from one chunk to the next (the values do not depend on it).",
        min=1, units="d")
    chunk_y: int = option(64, doc="Rows per spatial block of the map.", min=8)
    chunk_x: int = option(64, doc="Columns per spatial block of the map.", min=8)
    cog_every: Literal["day", "month"] = option(
        "month", doc="COG cadence: one COG per day of the map, or one per calendar month holding "
        "the monthly mean daily efflux.")
    far_km: float = option(
        5.0, doc="Pixels at least this far (km) from every training site form the map score "
        "row pixels_far_from_sites.", min=0.0, units="km")
    driver_cube: str | None = option(
        None, doc="Real inputs: a daily driver cube (Zarr, dims time/y/x, e.g. written by the "
        "stac_cube workflow with cube.temporal: daily) holding lstm.drivers and lstm.statics. "
        "Sites' drivers are extracted from it and it is mapped; daily_world is then not used. "
        "Needs sites_file.")
    sites_file: str | None = option(
        None, doc="Real inputs: the canonical long site table (Parquet, e.g. from `globalflux "
        "sites cosore PATH --variable Rs --aggregation daily`): site_id, lat, lon, igbp, time, "
        "variable, value, units; rows of variable lstm.target are used.")
    map_cube: str | None = option(
        None, doc="Optional driver cube (Zarr, dims time/y/x, daily, the lstm.drivers and "
        "lstm.statics) to map with the trained model instead of the world's own cube, e.g. "
        "another region or year. It has no answer key, so map_vs_truth is not written for it.")

    def validate(self, *, path: str = "", source: str | None = None) -> None:
        where = f"{source}: {path}" if source else (path or "efflux_map")
        if bool(self.driver_cube) != bool(self.sites_file):
            given, other = (("driver_cube", "sites_file") if self.driver_cube
                            else ("sites_file", "driver_cube"))
            raise RecipeError(f"{given} is set but {other} is not", where=f"{where}.{other}",
                              fix="Real inputs need both: the daily driver cube and the site "
                              "table (or neither, for the synthetic daily world).")
