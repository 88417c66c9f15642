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

``local_cluster(n_workers, threads_per_worker, memory_limit, ...)``
    The one way globalflux starts a LocalCluster (``connect``, ``globalflux bench``): worker
    processes on 127.0.0.1, spawned with :data:`WORKER_MALLOC`, glibc's malloc thresholds that
    keep map blocks from paying page faults over again, and :data:`CLUSTER_CONFIG`, slower
    polling of Dask's own monitors (issue 15; see those constants).

``describe(client) -> dict``: workers, threads, memory (recorded beside benchmark numbers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import SchedulerError

__all__ = ["connect", "describe", "check_address", "probe", "dashboard_address", "DEFAULT_TIMEOUT",
           "local_cluster", "WORKER_MALLOC", "worker_malloc_env", "malloc_note", "CLUSTER_CONFIG",
           "cluster_config", "patched_environ"]

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


#: glibc malloc thresholds of the worker processes globalflux spawns (issue 15).
#:
#: Dask's Nanny spawns each worker with ``MALLOC_TRIM_THRESHOLD_=65536``
#: (``distributed.nanny.pre-spawn-environ``). Setting any threshold turns off glibc's dynamic
#: mmap threshold, so every allocation over 128 KiB becomes a fresh ``mmap``: its pages fault in
#: (zeroed by the kernel) on first touch and go back to the OS on ``free``. A map block allocates
#: tens of MB of arrays (decoded Zarr chunks, the feature matrix, predictions; an LSTM step
#: allocates MBs of gates per pixel batch), so a worker paid those page faults again on every
#: block and every step. Measured on the 2-core machine, 23x512x512 cube, fast forest, 1 worker
#: x 1 thread vs the synchronous pipeline (same blocks): with Dask's setting 2.6-3.2 s vs
#: 1.9-2.3 s; the synchronous run itself slows to 2.7-3.0 s under ``MALLOC_TRIM_THRESHOLD_=65536``;
#: with these values the worker takes 1.9-2.1 s. The LSTM map (365x64x64) went from 9.0-10.3 s
#: to 3.6-3.8 s per worker run. ``benchmarks/profile_map_cluster.py`` counts the page faults.
#:
#: The values are glibc's own dynamic ceilings on 64-bit Linux (an mmap threshold of at most
#: 32 MiB, trim threshold twice that): arrays up to 32 MiB are reused from the heap, and a
#: process keeps at most 64 MiB of free heap per arena before trimming it back to the OS, so
#: memory is still returned (peak worker RSS measured 446 vs 396 MiB on that cube). Other C
#: libraries ignore these variables. Set ``distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_``
#: in your Dask config to choose your own (then globalflux passes your ``MALLOC_*`` values on).
WORKER_MALLOC: dict[str, str] = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
                                 "MALLOC_TRIM_THRESHOLD_": str(64 * 2**20)}
_MALLOC_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def worker_malloc_env() -> dict[str, str]:
    """The ``MALLOC_*`` environment for workers globalflux spawns: :data:`WORKER_MALLOC`, or the
    user's own when their Dask config sets ``distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_``
    (Dask's defaults never set it)."""
    import dask
    import distributed  # noqa: F401 - registers its config defaults

    cfg = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    if cfg.get("MALLOC_MMAP_THRESHOLD_") is not None:
        return {k: str(cfg[k]) for k in _MALLOC_KEYS if cfg.get(k) is not None}
    return dict(WORKER_MALLOC)


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Within: this process's environment has ``values`` (None removes the variable), which
    processes started inside inherit; the variables are put back as they were afterwards."""
    saved = {k: os.environ.get(k) for k in values}

    def put(items) -> None:
        for k, v in items:
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)

    put(values.items())
    try:
        yield
    finally:
        put(saved.items())


@contextlib.contextmanager
def _spawn_environ(env: Mapping[str, str]) -> Iterator[None]:
    """Within: Nannies created here spawn workers with exactly ``env`` as their ``MALLOC_*``.

    The Nanny reads ``distributed.nanny.pre-spawn-environ`` (os.environ wins over the config for
    its keys) and copies it into this process's environment before spawning; the spawned worker
    inherits this environment. So both are set here, and this process's ``MALLOC_*`` variables
    are put back afterwards (the Nanny keeps its own copy for restarts)."""
    import dask

    cfg = {k: v for k, v in (dask.config.get("distributed.nanny.pre-spawn-environ",
                                             default={}) or {}).items()
           if k not in _MALLOC_KEYS}
    with patched_environ({k: env.get(k) for k in _MALLOC_KEYS}), \
            dask.config.set({"distributed.nanny.pre-spawn-environ": {**cfg, **env}}):
        yield


#: Dask settings of the LocalCluster globalflux starts (issue 15): its own monitors poll less.
#:
#: An idle LocalCluster of 2 workers used 12-15 % of one core with Dask's defaults (measured on
#: the 2-core machine, 20 s windows): each worker samples every thread's stack every 10 ms for
#: the dashboard's profile, every event loop (scheduler, nannies, workers) wakes every 20 ms to
#: check its own health, and the system monitors read psutil every 500 ms. With these values it
#: used 3 %. On 2 cores that overhead is taken from the map: with two workers busy there is no
#: spare core to absorb it (the 2 / 1 workers ratio of ``bench_throughput`` went from 1.48 and
#: 1.62 in two runs to 1.74-2.08 in three). What stays: profiles (sampled every 100 ms instead of 10), the warning about a
#: blocked event loop (after 3 s, as before; checked every 0.5 s), the dashboard's system plots
#: (every 2 s), and the memory monitor that pauses, spills and restarts workers (unchanged).
#: A key the user's Dask config sets to something other than Dask's default is left to them.
CLUSTER_CONFIG: dict[str, str] = {
    "distributed.worker.profile.interval": "100ms",
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
}


def cluster_config() -> dict[str, str]:
    """:data:`CLUSTER_CONFIG` without the keys the user's Dask config has set (to a value other
    than Dask's shipped default)."""
    import dask
    import distributed  # noqa: F401 - registers its config defaults

    shipped = dask.config.merge(*dask.config.defaults)
    out = {}
    for key, value in CLUSTER_CONFIG.items():
        if dask.config.get(key, default=None) == dask.config.get(key, default=None,
                                                                 config=shipped):
            out[key] = value
    return out


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1, memory_limit="2GiB", *,
                  dashboard_address: str = "127.0.0.1:0", malloc: Mapping[str, str] | None = None,
                  config: Mapping[str, Any] | None = None, **kwargs):
    """Start a ``distributed.LocalCluster`` of worker processes bound to 127.0.0.1.

    ``malloc``: the workers' ``MALLOC_*`` environment; None is :func:`worker_malloc_env`
    (``{}`` leaves glibc's defaults, ``{"MALLOC_TRIM_THRESHOLD_": "65536"}`` is Dask's own).
    ``config``: Dask settings of the scheduler and workers; None is :func:`cluster_config`,
    ``{}`` leaves Dask's. Other keyword arguments go to ``LocalCluster`` (``silence_logs``
    defaults to WARNING).
    """
    import dask
    from distributed import LocalCluster

    env = worker_malloc_env() if malloc is None else {k: str(v) for k, v in malloc.items()}
    cfg = cluster_config() if config is None else dict(config)
    kwargs.setdefault("silence_logs", logging.WARNING)
    # spawned workers receive this process's Dask config when they start
    with _spawn_environ(env), dask.config.set(cfg):
        return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                            memory_limit=memory_limit, processes=True, host="127.0.0.1",
                            dashboard_address=dashboard_address, **kwargs)


def _malloc_environ() -> dict[str, str | None]:
    """Module-level (runs on a worker): its ``MALLOC_*`` variables."""
    return {k: os.environ.get(k) for k in _MALLOC_KEYS}


def malloc_note(client) -> str | None:
    """One line when workers of ``client`` run with a fixed malloc trim threshold and no mmap
    threshold (Dask's default), naming the variables to start them with; else None."""
    try:
        envs = client.run(_malloc_environ)
    except Exception:  # noqa: BLE001 - a hint only: workers without globalflux, no workers
        return None
    slow = [w for w, e in envs.items()
            if e.get("MALLOC_TRIM_THRESHOLD_") is not None and e.get("MALLOC_MMAP_THRESHOLD_") is None]
    if not slow:
        return None
    fix = " ".join(f"{k}={v}" for k, v in WORKER_MALLOC.items())
    return (f"{len(slow)} of {len(envs)} workers run with MALLOC_TRIM_THRESHOLD_="
            f"{envs[slow[0]]['MALLOC_TRIM_THRESHOLD_']} and no MALLOC_MMAP_THRESHOLD_ (Dask's "
            f"default), which makes every map block page-fault its arrays again (measured 1.3-2.5x "
            f"slower); start the workers with {fix} in their environment (docs/deployment.md)")


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
    from distributed import Client

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
        note = malloc_note(client)
        if note:
            log.info(note, extra={"console": False})
            print(f"globalflux: note: {note}", file=sys.stderr)
        return client, None
    n_workers = int(getattr(mapping, "n_workers", 2))
    threads = int(getattr(mapping, "threads_per_worker", 1))
    memory = getattr(mapping, "memory_limit", "2GiB")
    cluster = local_cluster(n_workers, threads, memory,
                            dashboard_address=dashboard_address(mapping))
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
