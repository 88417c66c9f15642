"""Typed recipe schema: the top-level :class:`Recipe` and one frozen dataclass per stage.

Each stage's config lives in its own module (``sites``, ``cube``, ``zones``, ``forest``,
``lstm``, ``mapping``, ``synthetic``, ``report``). A section absent from a recipe is ``None``;
a workflow that needs it fills in that section's defaults (see
:func:`globalflux.pipeline.resolve_sections`) so the resolved recipe shows every value used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._schema import option
from .cube import CubeConfig
from .daily import DailyWorldConfig, EffluxMapConfig
from .forest import ForestConfig
from .lstm import LSTMConfig
from .mapping import MappingConfig
from .report import ReportConfig
from .sites import SitesConfig
from .synthetic import SyntheticConfig
from .validation import ValidationConfig
from .zones import ZonesConfig

__all__ = [
    "Recipe",
    "WORKFLOWS",
    "CubeConfig",
    "DailyWorldConfig",
    "EffluxMapConfig",
    "ForestConfig",
    "LSTMConfig",
    "MappingConfig",
    "ReportConfig",
    "SitesConfig",
    "SyntheticConfig",
    "ValidationConfig",
    "ZonesConfig",
]

WorkflowName = Literal[
    "synthetic_zoned_rh",
    "srdb_rh_annual",
    "cosore_rh",
    "cosore_efflux_daily",
    "static_cube",
    "stac_cube",
    "efflux_daily_map",
]
WORKFLOWS: tuple[str, ...] = WorkflowName.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Recipe:
    """A whole run: which workflow, and the settings of each stage it uses."""

    name: str = option(doc="Short name of the run; written into every output's attributes.")
    workflow: WorkflowName = option(
        doc="Which pipeline runs: synthetic_zoned_rh (the demo), srdb_rh_annual, cosore_rh, "
        "cosore_efflux_daily, static_cube, stac_cube, efflux_daily_map (the daily LSTM map demo)."
    )
    description: str = option("", doc="Free text shown at the top of the report.")
    synthetic: SyntheticConfig | None = option(
        None, doc="The seeded synthetic world (workflow synthetic_zoned_rh)."
    )
    sites: SitesConfig | None = option(None, doc="Site observations: source, QC, aggregation.")
    cube: CubeConfig | None = option(None, doc="Predictor cube: sources, grid, chunks, extraction.")
    zones: ZonesConfig | None = option(None, doc="Environmentally similar zones (PCA + PSO k-means).")
    forest: ForestConfig | None = option(None, doc="Zoned and unified random forests, validation.")
    lstm: LSTMConfig | None = option(None, doc="The global LSTM for daily soil CO2 efflux.")
    mapping: MappingConfig | None = option(None, doc="Gridded inference with Dask and outputs.")
    report: ReportConfig | None = option(None, doc="Report and figures.")
    daily_world: DailyWorldConfig | None = option(
        None, doc="The seeded SYNTHETIC daily world (workflow efflux_daily_map).")
    efflux_map: EffluxMapConfig | None = option(
        None, doc="Daily efflux map from the LSTM: holdout sites, chunks, COGs, map scoring.")
    validation: ValidationConfig | None = option(
        None, doc="Validation schemes (record k-fold, by site, by location) and the uncertainty "
        "and coverage of global totals.")
