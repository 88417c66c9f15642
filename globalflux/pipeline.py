"""Wiring only: turn a recipe into a run folder and call the workflow's stages.

No science lives here. A workflow is a module ``globalflux.workflows.<name>`` with

* ``SECTIONS``: the recipe sections it uses (filled with defaults when absent), and
* ``run(recipe, ctx) -> None``: calls stage functions and writes through ``ctx``.

The run folder layout: ``recipe.yaml`` (resolved), ``log.txt``, ``report.md``, ``figures/``,
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

__all__ = ["RunContext", "run_recipe", "resolve_sections", "workflow_module"]

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
    return dataclasses.replace(recipe, **changes) if changes else recipe


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
                 connection: tuple[Any, Any] | None = None):
        self.recipe = recipe
        self.out = Path(out)
        self.scheduler = scheduler
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

            self._client, self._cluster = connect(self.scheduler, getattr(self.recipe, "mapping", None))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def _prepare_out(recipe, out: Path, resume: bool, overwrite: bool) -> None:
    from .recipe import dump_recipe

    text = dump_recipe(recipe)
    existing = out / "recipe.yaml"
    if resume:
        if existing.is_file() and existing.read_text(encoding="utf-8") != text:
            from .recipe import read_yaml

            old = read_yaml(existing)
            raise StoreError(
                f"was made by another recipe (name {old.get('name')!r}, workflow "
                f"{old.get('workflow')!r})",
                where=str(out),
                fix="Resume with the same recipe and --set values, or choose another --out.",
            )
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise StoreError(
            "output folder exists and is not empty",
            where=str(out),
            fix="Use --resume to finish it, --overwrite to replace it, or another --out.",
        )
    elif out.exists() and overwrite:
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    existing.write_text(text, encoding="utf-8")


def run_recipe(
    recipe,
    out: str | Path,
    *,
    scheduler: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> Path:
    """Run a (validated) recipe into the folder ``out`` and return it."""
    recipe = resolve_sections(recipe)
    out = Path(out)
    early = None
    if scheduler:  # fail fast, before touching --out, on an unreachable scheduler
        from .cluster import connect

        early = connect(scheduler, getattr(recipe, "mapping", None))
    try:
        _prepare_out(recipe, out, resume, overwrite)
    except BaseException:
        if early is not None:
            RunContext(recipe, out, connection=early).close()
        raise
    handler = logging.FileHandler(out / "log.txt", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("globalflux").addHandler(handler)
    ctx = RunContext(recipe, out, scheduler=scheduler, resume=resume, connection=early)
    try:
        from . import __version__

        log.info("globalflux %s: workflow %s, recipe %s -> %s", __version__, recipe.workflow,
                 recipe.name, out)
        workflow_module(recipe.workflow).run(recipe, ctx)
        log.info("finished in %.1f s", time.perf_counter() - ctx.t0)
    finally:
        ctx.close()
        logging.getLogger("globalflux").removeHandler(handler)
        handler.close()
    return out


def validate(path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """Load a recipe, apply overrides and check its sections against its workflow."""
    from .recipe import load_recipe

    return resolve_sections(load_recipe(path, overrides))
