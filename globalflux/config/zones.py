"""Settings of the zone classifier (Zhu et al. 2024): factors, PCA share, PSO k-means."""

from __future__ import annotations

from dataclasses import dataclass

from ._schema import option


@dataclass(frozen=True)
class ZonesConfig:
    """Standardise the zone factors, PCA (>= variance share), k-means with PSO-searched centres."""

    n_zones: int = option(4, doc="Number of zones k (choose it with the k-selection report).",
                          min=1, max=20)
    variance: float = option(0.8, doc="Keep the fewest PCA components explaining at least this share.",
                             min=0.1, max=1.0)
    seed: int = option(0, doc="Random seed of the particle swarm and k-means.", min=0, max=2**32 - 1)
    factors: tuple[str, ...] = option(
        (), doc="Zone factor names (columns of the training table / variables of the cube); "
        "empty: the workflow's default factors."
    )
    n_particles: int = option(30, doc="PSO swarm size (particles = candidate sets of k centres).",
                              min=1, max=1000)
    n_iter: int = option(100, doc="PSO iterations (at most).", min=0, max=10000)
    inertia: float = option(0.72, doc="PSO inertia weight w.", min=0.0, max=2.0)
    c1: float = option(1.49, doc="PSO cognitive acceleration coefficient (pull to the particle's best).",
                       min=0.0, max=5.0)
    c2: float = option(1.49, doc="PSO social acceleration coefficient (pull to the swarm's best).",
                       min=0.0, max=5.0)
    n_lloyd: int = option(300, doc="Maximum Lloyd iterations of the local search of each particle.",
                          min=1, max=10000)
    patience: int | None = option(
        20, doc="Stop the swarm when its best WCSS has not improved for this many iterations "
        "(null: run every iteration).", min=1)
    k_range: tuple[int, ...] = option(
        (2, 3, 4, 5, 6, 7, 8), doc="Numbers of zones tried in the k-selection report (inertia, "
        "silhouette, Calinski-Harabasz, smallest zone's site count); empty: no report."
    )

    def classifier(self, n_zones: int | None = None):
        """An unfitted :class:`globalflux.zones.ZoneClassifier` with these settings."""
        from ..zones import ZoneClassifier

        return ZoneClassifier(
            n_zones=self.n_zones if n_zones is None else n_zones, variance=self.variance,
            n_particles=self.n_particles, n_iter=self.n_iter, inertia=self.inertia, c1=self.c1,
            c2=self.c2, n_lloyd=self.n_lloyd, patience=self.patience, random_state=self.seed,
        )
