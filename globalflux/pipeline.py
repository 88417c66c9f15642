"""Wiring only: turn a recipe into a run folder and call the workflow's stages.

No science lives here. A workflow is a module ``globalflux.workflows.<name>`` with

* ``SECTIONS``: the recipe sections it uses (filled with defaults when absent), and
* ``run(recipe, ctx) -> None``: calls stage functions and writes through ``ctx``.

The run folder layout: ``.globalflux-run.json`` (the marker: recipe name, workflow, hash, status),
``recipe.yaml`` (resolved), ``log.txt``, ``report.md``, ``figures/``,
``metrics/``, ``maps/`` (Zarr) and ``maps/cog/`` (COG).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import RecipeError, StoreError

__all__ = ["RunContext", "run_recipe", "resolve_sections", "workflow_module", "MARKER", "read_marker",
           "recipe_hash"]

log = logging.getLogger("globalflux")

_SECTION_TYPES = {
    "synthetic": "SyntheticConfig",
    "sites": "SitesConfig",
    "cube": "CubeConfig",
    "zones": "ZonesConfig",
    "forest": "ForestConfig",
    "lstm": "LSTMConfig",
    "mapping": "MappingConfig",
    "report": "ReportConfig",
    "daily_world": "DailyWorldConfig",
    "efflux_map": "EffluxMapConfig",
    "validation": "ValidationConfig",
}


def workflow_module(name: str):
    """The module implementing workflow ``name``."""
    return importlib.import_module(f"globalflux.workflows.{name}")


def resolve_sections(recipe):
    """Fill in defaults for every section the recipe's workflow uses; reject unused sections."""
    from . import config

    mod = workflow_module(recipe.workflow)
    used = tuple(mod.SECTIONS) + ("report",)
    changes = {}
    for section in _SECTION_TYPES:
        value = getattr(recipe, section)
        if section in used and value is None:
            changes[section] = getattr(config, _SECTION_TYPES[section])()
        elif section not in used and value is not None:
            raise RecipeError(
                f"section '{section}' is not used by workflow '{recipe.workflow}'",
                where=section,
                fix=f"Remove it; this workflow uses: {', '.join(used)}.",
            )
    out = dataclasses.replace(recipe, **changes) if changes else recipe
    from .extras import check_recipe

    check_recipe(out)  # a missing optional extra ([lstm], [fast]) fails here, before any output
    return out


class RunContext:
    """The run folder and shared services (logging, progress, the Dask client) of one run.

    Parameters
    ----------
    recipe
        The resolved recipe.
    out
        The run folder.
    scheduler
        Address of an existing Dask scheduler (``tcp://host:port``); None starts a LocalCluster
        when a stage first asks for a client.
    resume
        Finish what is missing in an existing run folder instead of starting afresh.
    """

    def __init__(self, recipe, out: str | Path, *, scheduler: str | None = None, resume: bool = False,
                 connection: tuple[Any, Any] | None = None, scheduler_timeout: float | None = None):
        self.recipe = recipe
        self.out = Path(out)
        self.scheduler = scheduler
        self.scheduler_timeout = scheduler_timeout
        self.resume = resume
        # an already opened (client, cluster) pair, e.g. connected early to fail fast
        self._client, self._cluster = connection if connection is not None else (None, None)
        self._step = 0
        self.t0 = time.perf_counter()

    # folders ------------------------------------------------------------------------------
    @property
    def figures(self) -> Path:
        return self._dir("figures")

    @property
    def metrics(self) -> Path:
        return self._dir("metrics")

    @property
    def maps(self) -> Path:
        return self._dir("maps")

    @property
    def cogs(self) -> Path:
        return self._dir("maps/cog")

    @property
    def models(self) -> Path:
        return self._dir("models")

    def _dir(self, name: str) -> Path:
        p = self.out / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    # progress -----------------------------------------------------------------------------
    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Log the start and duration of a long step."""
        self._step += 1
        log.info("[%d] %s ...", self._step, what)
        t = time.perf_counter()
        yield
        log.info("[%d] %s done in %.1f s", self._step, what, time.perf_counter() - t)

    # dask ---------------------------------------------------------------------------------
    def client(self):
        """The Dask client: the given scheduler, or a LocalCluster from the mapping section."""
        if self._client is None:
            from .cluster import connect

            self._client, self._cluster = connect(self.scheduler, getattr(self.recipe, "mapping", None),
                                                  timeout=self.scheduler_timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


#: the marker file that makes a folder a globalflux run folder (JSON: recipe name, hash, status)
MARKER = ".globalflux-run.json"


def recipe_hash(recipe) -> str:
    """SHA-256 of the resolved recipe's YAML: the identity ``--resume`` checks."""
    import hashlib

    from .recipe import dump_recipe

    return hashlib.sha256(dump_recipe(recipe).encode("utf-8")).hexdigest()


def read_marker(out: str | Path) -> dict[str, Any] | None:
    """The run marker of folder ``out`` (None when there is none or it is unreadable)."""
    import json

    p = Path(out) / MARKER
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("globalflux_run") == 1 else None


def _write_marker(recipe, out: Path, status: str) -> None:
    import datetime as _dt
    import json

    from . import __version__
    from .io.paths import atomic_write_text

    old = read_marker(out) or {}
    data = {
        "globalflux_run": 1,
        "name": recipe.name,
        "workflow": recipe.workflow,
        "recipe_sha256": recipe_hash(recipe),
        "globalflux_version": __version__,
        "started": old.get("started") or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "status": status,
    }
    atomic_write_text(out / MARKER, json.dumps(data, indent=1) + "\n")


def _prepare_out(recipe, out: Path, resume: bool, overwrite: bool) -> Path | None:
    """Make ``out`` the run folder; returns the old run folder moved aside by --overwrite (or None).

    Nothing is deleted here: an old run folder replaced by ``--overwrite`` is renamed beside it and
    removed by :func:`run_recipe` only after the new run finished.
    """
    import os

    from .io.paths import atomic_write_text, remove_stale_temps, writing
    from .recipe import dump_recipe

    if resume and overwrite:
        raise StoreError("--resume and --overwrite exclude each other", where=str(out),
                         fix="Use --resume to finish a run, or --overwrite to replace it.")
    text = dump_recipe(recipe)
    existing = out / "recipe.yaml"
    marker = read_marker(out)
    non_empty = out.is_dir() and any(out.iterdir())
    aside = None
    if resume and non_empty:
        if existing.is_file() and existing.read_text(encoding="utf-8") != text:
            from .recipe import read_yaml

            try:
                old = read_yaml(existing)
            except Exception:  # noqa: BLE001 - any unreadable recipe is "another recipe"
                old = {}
            raise StoreError(
                f"was made by another recipe (name {old.get('name')!r}, workflow "
                f"{old.get('workflow')!r})",
                where=str(out),
                fix="Resume with the same recipe and --set values, or choose another --out.",
            )
        if marker is None or marker.get("recipe_sha256") != recipe_hash(recipe):
            raise StoreError(
                f"is not a run folder of this recipe (no matching {MARKER})",
                where=str(out),
                fix="Resume only a folder that `globalflux run` made with this recipe; choose another --out.",
            )
        removed = remove_stale_temps(out)
        if removed:
            log.info("resume: removed %d temporary file(s) of the interrupted run", len(removed))
    elif non_empty and not overwrite:
        raise StoreError(
            "output folder exists and is not empty",
            where=str(out),
            fix="Use --resume to finish it, --overwrite to replace it, or another --out.",
        )
    elif non_empty and overwrite:
        if marker is None:
            raise StoreError(
                f"is not a globalflux run folder (no {MARKER}); --overwrite replaces only run folders",
                where=str(out),
                fix="Choose another --out, or move that folder away yourself.",
            )
        aside = out.with_name(f".{out.name}.globalflux-old-{os.getpid()}")
        with writing(out):
            os.replace(out, aside)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        _write_marker(recipe, out, "running")
        atomic_write_text(existing, text)
    return aside


def _restore(out: Path, aside: Path | None) -> None:
    """Put an old run folder back after the replacing run failed."""
    import os
    import shutil

    if aside is None or not aside.exists():
        return
    failed = out.with_name(f".{out.name}.globalflux-failed-{os.getpid()}")
    try:
        os.replace(out, failed)
        os.replace(aside, out)
        shutil.rmtree(failed, ignore_errors=True)
        log.warning("the new run failed: the previous run folder %s was put back", out)
    except OSError:  # pragma: no cover - leave both for the user to see
        log.warning("the new run failed; the previous run folder is at %s", aside)


def run_recipe(
    recipe,
    out: str | Path,
    *,
    scheduler: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    scheduler_timeout: float | None = None,
) -> Path:
    """Run a (validated) recipe into the folder ``out`` and return it.

    The :func:`~globalflux.preflight.preflight` runs first, then the run folder is made (or
    checked, for ``resume``; or, for ``overwrite``, the old marked run folder is moved aside and
    deleted only once the new run finished; if the new run fails, the old one is put back).
    """
    import shutil

    from .preflight import preflight

    recipe = resolve_sections(recipe)
    out = Path(out)
    preflight(recipe, out)
    early = None
    if scheduler:  # fail fast, before touching --out, on an unreachable scheduler
        from .cluster import connect

        early = connect(scheduler, getattr(recipe, "mapping", None), timeout=scheduler_timeout)
    try:
        aside = _prepare_out(recipe, out, resume, overwrite)
    except BaseException:
        if early is not None:
            RunContext(recipe, out, connection=early).close()
        raise
    handler = logging.FileHandler(out / "log.txt", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("globalflux").addHandler(handler)
    ctx = RunContext(recipe, out, scheduler=scheduler, resume=resume, connection=early,
                     scheduler_timeout=scheduler_timeout)
    ok = False
    try:
        from . import __version__

        log.info("globalflux %s: workflow %s, recipe %s -> %s", __version__, recipe.workflow,
                 recipe.name, out)
        try:
            workflow_module(recipe.workflow).run(recipe, ctx)
        except OSError as exc:
            from .io.paths import is_write_error, write_error

            if not is_write_error(exc):
                raise
            raise write_error(exc) from None
        _write_marker(recipe, out, "finished")
        log.info("finished in %.1f s", time.perf_counter() - ctx.t0)
        ok = True
    finally:
        ctx.close()
        logging.getLogger("globalflux").removeHandler(handler)
        handler.close()
        if aside is not None:
            if ok:
                shutil.rmtree(aside, ignore_errors=True)
            else:
                _restore(out, aside)
    return out


def validate(path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """Load a recipe, apply overrides and check its sections against its workflow."""
    from .preflight import preflight
    from .recipe import load_recipe

    return preflight(resolve_sections(load_recipe(path, overrides)))
