"""Settings of the zoned and unified random forests."""

from __future__ import annotations

from dataclasses import dataclass

from ..recipe import option


@dataclass(frozen=True)
class ForestConfig:
    """One random forest per zone and a unified baseline, validated leave-one-site-out."""

    n_estimators: int = option(100, doc="Trees per forest.", min=1, max=5000)
    corr_threshold: float = option(0.9, doc="Drop predictors correlated above |r| (Zhu et al. 2024).",
                                   min=0.0, max=1.0)
    seed: int = option(0, doc="Random seed of the forests.")
