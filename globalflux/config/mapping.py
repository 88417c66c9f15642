"""Settings of gridded inference and outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._schema import option


@dataclass(frozen=True)
class MappingConfig:
    """Apply models over cube chunks with Dask; write Zarr (resumable), COG and STAC."""

    n_workers: int = option(2, doc="Workers of the default LocalCluster.", min=1)
    threads_per_worker: int = option(1, doc="Threads per worker of the LocalCluster.", min=1)
    memory_limit: str = option("2GiB", doc="Memory limit per LocalCluster worker: a byte size "
                               "(2GiB, 512MB) or 'auto'.")
    scheduler_timeout: float = option(
        30.0, doc="Seconds to wait for an existing --scheduler (connect and handshake) before failing "
        "(the CLI option --scheduler-timeout overrides it).", min=0.5, max=600.0
    )
    dashboard_host: str = option(
        "127.0.0.1", doc="Interface the LocalCluster's Dask dashboard listens on; 127.0.0.1 keeps it on "
        "this machine. Set an IP address (or 0.0.0.0) only to share it on a trusted network.")
    max_graph_tasks: int = option(
        100_000, doc="Largest Dask graph submitted at once; more blocks go in batches.", min=100
    )
    progress: bool = option(True, doc="Log a progress bar (blocks done, rate, ETA) while mapping.")
    cog: bool = option(True, doc="Also write one Cloud-Optimized GeoTIFF per time step.")
    cog_per: Literal["step", "stack"] = option(
        "step", doc="COG layout: one file per time step, or one band stack per variable."
    )
    cog_overviews: bool = option(
        True, doc="Build internal COG overviews (averaged for continuous layers, nearest for "
        "categorical ones such as zones).")
    catalog: bool = option(True, doc="Write a STAC Collection + Items describing the COGs and Zarr.")
    zarr_format: int = option(
        3, doc="Zarr format of the map stores: 3 (default) or 2, which GDAL's Zarr driver (GDAL 3.10 "
        "as bundled with rasterio) can open, e.g. rasterio.open('ZARR:\"maps/rh.zarr\":/rh').",
        min=2, max=3,
    )
