"""Settings of the zone classifier."""

from __future__ import annotations

from dataclasses import dataclass

from ..recipe import option


@dataclass(frozen=True)
class ZonesConfig:
    """Standardise the zone factors, PCA (>= variance share), k-means with PSO-searched centres."""

    n_zones: int = option(4, doc="Number of zones k.", min=1, max=20)
    variance: float = option(0.8, doc="Keep the fewest PCA components explaining at least this share.",
                             min=0.1, max=1.0)
    seed: int = option(0, doc="Random seed of the particle swarm and k-means.")
