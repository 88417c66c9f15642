"""Dask clients: an existing scheduler (``tcp://host:port``) or a LocalCluster. Never a home-made one."""

from __future__ import annotations

import logging

from .errors import SchedulerError

__all__ = ["connect"]

log = logging.getLogger("globalflux")


def connect(scheduler: str | None, mapping=None, *, timeout: float = 10.0):
    """Return ``(client, cluster_or_None)``.

    Parameters
    ----------
    scheduler
        Address of a running ``dask scheduler``; None starts a LocalCluster sized by ``mapping``.
    mapping
        A :class:`globalflux.config.MappingConfig` (workers, threads, memory limit) or None.
    timeout
        Seconds to wait for an existing scheduler before failing with a clear error.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise SchedulerError(
                f"cannot reach the Dask scheduler within {timeout:g} s ({exc.__class__.__name__})",
                where=scheduler,
                fix="Check the address (tcp://HOST:PORT) and that `dask scheduler` is running, "
                "or leave out --scheduler to use a LocalCluster.",
            ) from None
        log.info("using Dask scheduler %s (dashboard: %s)", scheduler, client.dashboard_link)
        return client, None
    n_workers = getattr(mapping, "n_workers", 2)
    threads = getattr(mapping, "threads_per_worker", 1)
    memory = getattr(mapping, "memory_limit", "2GiB")
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads,
        memory_limit=memory,
        processes=True,
        dashboard_address=":0",
    )
    client = Client(cluster)
    log.info("started LocalCluster: %d workers x %d threads (dashboard: %s)", n_workers, threads,
             client.dashboard_link)
    return client, cluster
