"""Settings of site observations (COSORE, SRDB, gsbe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..recipe import option


@dataclass(frozen=True)
class SitesConfig:
    """Where site observations come from, how they are quality-controlled and aggregated."""

    source: Literal["synthetic", "cosore", "srdb", "gsbe"] = option(
        "synthetic", doc="Site data source."
    )
    cosore_path: str = option("../shared/data/cosore",
                              doc="COSORE tree (folder holding datasets/). Relative to the current folder.")
    srdb_path: str = option("../shared/data/srdb", doc="SRDB folder (srdb-data.csv).")
    gsbe_path: str = option("../shared/data/gsbe", doc="gsbe folder (caches/*.parquet).")
    variable: Literal["Rs", "Rh"] = option("Rh", doc="Measured flux: Rs total efflux, Rh heterotrophic.")
    aggregation: Literal["daily", "8day", "annual"] = option("8day", doc="Time step of site series.")
    min_year: int | None = option(None, doc="Drop records before this year (Zhu et al. 2024 use 2000).")
    cache_dir: str | None = option(None, doc="Parquet cache of converted RDS files; null: ~/.cache/globalflux.")
