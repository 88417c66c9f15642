"""Dask clients: an existing scheduler (``tcp://host:port``) or a LocalCluster. Never a home-made one.

``connect(scheduler, mapping=None, *, timeout=None) -> (client, cluster_or_None)``
    ``scheduler`` None starts a LocalCluster sized by the recipe's ``mapping`` section
    (``n_workers``, ``threads_per_worker``, ``memory_limit``); an address connects to a running
    ``dask scheduler`` (any deployment: ``dask scheduler``/``dask worker`` by hand,
    dask-jobqueue on SLURM/PBS, dask-kubernetes, Coiled; see docs/deployment.md). An address
    that does not answer a Dask handshake within ``timeout`` seconds (default
    ``mapping.scheduler_timeout`` or 30 s) raises :class:`~globalflux.errors.SchedulerError` naming
    it: no hang, also when something else (say a web server) listens on that port.
    The LocalCluster's scheduler and workers bind 127.0.0.1 and so does its dashboard, unless the
    recipe key ``mapping.dashboard_host`` asks otherwise. The dashboard address is logged.

``describe(client) -> dict``: workers, threads, memory (recorded beside benchmark numbers).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading

from .errors import SchedulerError

__all__ = ["connect", "describe", "check_address", "probe", "dashboard_address", "DEFAULT_TIMEOUT"]

log = logging.getLogger("globalflux")

_ADDRESS = re.compile(r"^(tcp|tls|inproc|ws|wss|ucx)://[^\s/:]+(:\d+)?$")


def check_address(scheduler: str) -> str:
    """Return ``scheduler`` if it looks like ``tcp://HOST:PORT``; else a clear SchedulerError."""
    text = str(scheduler).strip()
    if not _ADDRESS.match(text):
        raise SchedulerError(
            f"{text!r} is not a scheduler address",
            where="--scheduler",
            fix="Write it as tcp://HOST:PORT (the address `dask scheduler` prints), or leave "
            "out --scheduler to use a LocalCluster.",
        )
    return text


DEFAULT_TIMEOUT = 30.0


def dashboard_address(mapping=None) -> str:
    """``HOST:0`` for a LocalCluster dashboard: ``mapping.dashboard_host`` or 127.0.0.1."""
    host = str(getattr(mapping, "dashboard_host", None) or "127.0.0.1")
    return f"[{host}]:0" if ":" in host else f"{host}:0"


async def _identity(address: str, timeout: float) -> dict:
    from distributed.comm import connect as comm_connect

    comm = await asyncio.wait_for(comm_connect(address, timeout=timeout), timeout)
    try:
        await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), timeout)
        reply = await asyncio.wait_for(comm.read(), timeout)
    finally:
        comm.abort()
    return reply


def probe(address: str, timeout: float) -> dict:
    """Ask ``address`` for its Dask identity within ``timeout`` seconds (whole exchange bounded).

    Raises :class:`SchedulerError` naming the address when nothing answers, or when what answers
    is not a Dask scheduler (e.g. a web server on that port).
    """
    result: dict = {}

    def target() -> None:
        try:
            result["reply"] = asyncio.run(asyncio.wait_for(_identity(address, timeout), timeout))
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    t = threading.Thread(target=target, name="globalflux-scheduler-probe", daemon=True)
    t.start()
    t.join(timeout + 2.0)
    err = result.get("error")
    reply = result.get("reply")
    if t.is_alive() or err is not None or not isinstance(reply, dict) or \
            reply.get("type") != "Scheduler":
        what = err.__class__.__name__ if err is not None else (
            "no answer" if t.is_alive() or reply is None else "not a Dask scheduler")
        raise SchedulerError(
            f"cannot reach the Dask scheduler within {timeout:g} s ({what})",
            where=address,
            fix="Check the address (tcp://HOST:PORT) and that `dask scheduler` is running, "
            "or leave out --scheduler to use a LocalCluster.",
        )
    return reply


def _dashboard(client) -> str:
    link = getattr(client, "dashboard_link", None) or "n/a"
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return f"{link} (not served: bokeh is missing; pip install 'bokeh>=3.1')"
    return link


def connect(scheduler: str | None, mapping=None, *, timeout: float | None = None):
    """Return ``(client, cluster_or_None)``.

    Parameters
    ----------
    scheduler
        Address of a running ``dask scheduler``; None starts a LocalCluster sized by ``mapping``.
    mapping
        A :class:`globalflux.config.MappingConfig` (workers, threads, memory limit, scheduler
        timeout) or None (2 workers x 1 thread, 2 GiB each).
    timeout
        Seconds to wait for an existing scheduler before failing with a clear error; default
        ``mapping.scheduler_timeout`` (30 s).
    """
    from distributed import Client, LocalCluster

    if timeout is None:
        timeout = float(getattr(mapping, "scheduler_timeout", DEFAULT_TIMEOUT))
    if scheduler:
        address = check_address(scheduler)
        probe(address, timeout)  # bounded: a port that is not Dask cannot hang the Client
        try:
            client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SchedulerError(
                f"cannot reach the Dask scheduler within {timeout:g} s ({exc.__class__.__name__})",
                where=address,
                fix="Check the address (tcp://HOST:PORT) and that `dask scheduler` is running, "
                "or leave out --scheduler to use a LocalCluster.",
            ) from None
        info = describe(client)
        msg = (f"Dask scheduler {address}: {info['workers']} workers, {info['threads']} threads "
               f"(dashboard: {_dashboard(client)})")
        log.info(msg, extra={"console": False})  # into log.txt; the console gets it once
        print(f"globalflux: {msg}", file=sys.stderr)
        return client, None
    n_workers = int(getattr(mapping, "n_workers", 2))
    threads = int(getattr(mapping, "threads_per_worker", 1))
    memory = getattr(mapping, "memory_limit", "2GiB")
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads,
        memory_limit=memory,
        processes=True,
        host="127.0.0.1",
        dashboard_address=dashboard_address(mapping),
        silence_logs=logging.WARNING,
    )
    client = Client(cluster, set_as_default=False)
    msg = (f"started LocalCluster: {n_workers} workers x {threads} threads, {memory} each "
           f"(dashboard: {_dashboard(client)})")
    log.info(msg, extra={"console": False})  # into log.txt; the console gets it once
    print(f"globalflux: {msg}", file=sys.stderr)
    return client, cluster


def describe(client) -> dict:
    """Workers, threads and memory limit per worker of a connected client."""
    if client is None:
        return {"workers": 0, "threads": 0, "memory_limit": None, "scheduler": "threads"}
    info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) else \
        client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    mem = sorted({int(w.get("memory_limit", 0) or 0) for w in workers.values()})
    return {
        "workers": len(workers),
        "threads": threads,
        "memory_limit": mem[0] if len(mem) == 1 else mem,
        "scheduler": info.get("address", "?"),
    }


def _accepts_n_workers(client) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False
