"""Settings of gridded inference and outputs."""

from __future__ import annotations

from dataclasses import dataclass

from ..recipe import option


@dataclass(frozen=True)
class MappingConfig:
    """Apply models over cube chunks with Dask; write Zarr and COG."""

    n_workers: int = option(2, doc="Workers of the default LocalCluster.", min=1)
    threads_per_worker: int = option(1, doc="Threads per worker of the LocalCluster.", min=1)
    memory_limit: str = option("2GiB", doc="Memory limit per LocalCluster worker.")
    cog: bool = option(True, doc="Also write one Cloud-Optimized GeoTIFF per time step.")
