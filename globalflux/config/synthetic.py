"""Settings of the seeded synthetic world (globalflux.testing.synthetic)."""

from __future__ import annotations

from dataclasses import dataclass

from ..recipe import option


@dataclass(frozen=True)
class SyntheticConfig:
    """A seeded synthetic region at 500 m with a known zone structure and RH response."""

    seed: int = option(42, doc="Random seed; the same seed gives the same world.")
    ny: int = option(256, doc="Rows of the 500 m grid.", min=16, max=20000)
    nx: int = option(256, doc="Columns of the 500 m grid.", min=16, max=20000)
    year: int = option(2020, doc="Calendar year of the 8-day series.", min=2000, max=2100)
    n_years: int = option(1, doc="Number of years of 8-day series.", min=1, max=20)
    n_zones: int = option(4, doc="Number of true zones in the world.", min=2, max=8)
    n_sites: int = option(60, doc="Number of measurement sites sampled.", min=4, max=5000)
    noise_sd: float = option(0.15, doc="Observation noise (relative SD) of site RH.", min=0.0, max=2.0)
    west: float = option(10.0, doc="Longitude of the region's west edge (degrees, EPSG:4326).",
                         min=-180.0, max=180.0)
    north: float = option(48.0, doc="Latitude of the region's north edge (degrees).",
                          min=-90.0, max=90.0)
