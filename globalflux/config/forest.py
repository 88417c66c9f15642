"""Settings of the zoned and unified random forests and their validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._schema import option


@dataclass(frozen=True)
class ForestConfig:
    """One random forest per zone and a unified baseline, validated by site."""

    n_estimators: int = option(100, doc="Trees per forest.", min=1, max=5000)
    corr_threshold: float = option(0.9, doc="Drop predictors correlated above |r| (Zhu et al. 2024).",
                                   min=0.0, max=1.0)
    seed: int = option(0, doc="Random seed of the forests.", min=0, max=2**32 - 1)
    max_features: float = option(1 / 3, doc="Share of predictors tried at each split "
                                 "(1/3: R randomForest's regression default).", min=0.01, max=1.0)
    min_samples_leaf: int = option(1, doc="Minimum rows per leaf.", min=1, max=1000)
    eliminate: bool = option(True, doc="Importance-based backward elimination of predictors while "
                             "the inner grouped-CV R2 does not drop.")
    min_features: int = option(3, doc="Elimination stops at this many predictors.", min=1, max=1000)
    inner_folds: int | None = option(
        None, doc="Inner validation of the elimination, by site on the training sites only: "
        "null = leave-one-site-out, K = grouped K-fold (cheaper).", min=2)
    selection_n_estimators: int | None = option(
        None, doc="Trees of the forests fitted during elimination (null: n_estimators).", min=1)
    min_zone_sites: int = option(5, doc="A zone with fewer training sites is predicted by the "
                                 "all-sites forest (logged, listed in the report).", min=1)
    engine: Literal["sklearn", "lightgbm", "lleaves"] = option(
        "sklearn", doc="Forest implementation: sklearn RandomForestRegressor (needed for the "
        "per-tree uncertainty band), or the bounded LightGBM RF of globalflux.models.fast "
        "(lightgbm, or lleaves-compiled).")
    validation: Literal["loso", "spatial_blocks"] = option(
        "loso", doc="Outer validation of the synthetic demo's zoned-vs-unified table: "
        "leave-one-site-out or spatially blocked folds (srdb_rh_annual and cosore_rh report the "
        "schemes of validation.schemes).")
    block_deg: float = option(5.0, doc="Block edge in degrees for validation: spatial_blocks.",
                              min=0.01, max=180.0)
    n_block_folds: int | None = option(
        10, doc="Deal the spatial blocks into this many folds (null: one fold per block).", min=2)
    map_resolutions: tuple[float, ...] = option(
        (0.5, 0.05), doc="Global maps (workflow srdb_rh_annual): static-cube resolutions in "
        "degrees on which the RH map, its tree spread and the global total are made; empty: no map.")
    min_zone_locations: int = option(
        10, doc="Zone-aware models (and the zoned forest fitted by location): a zone with fewer "
        "training locations gets no forest of its own; its rows go to the unified forest.", min=1)
    choice_folds: int = option(
        3, doc="Zone choice: grouped (by location) inner folds, on the training rows only, that "
        "decide per zone between the zone's own forest and the unified forest.", min=2, max=50)
    n_jobs: int = option(1, doc="Parallel validation folds (joblib processes); keep 1 on shared "
                         "machines.", min=1, max=256)

    def inner_cv(self) -> str | int:
        """The ``inner_cv`` argument of the forests."""
        return "loso" if self.inner_folds is None else int(self.inner_folds)

    def zoned(self, zone_factors, zone_classifier, predictors=None):
        """An unfitted :class:`globalflux.models.forest.ZonedForestRegressor`."""
        from ..models.forest import ZonedForestRegressor

        return ZonedForestRegressor(
            zone_factors=list(zone_factors), zone_classifier=zone_classifier,
            predictors=None if predictors is None else list(predictors), **self._common(),
            min_zone_sites=self.min_zone_sites,
        )

    def unified(self, predictors=None):
        """An unfitted :class:`globalflux.models.forest.UnifiedForestRegressor`."""
        from ..models.forest import UnifiedForestRegressor

        return UnifiedForestRegressor(predictors=None if predictors is None else list(predictors),
                                      **self._common())

    def zone_choice(self, zone_factors, zone_classifier, predictors=None):
        """An unfitted :class:`globalflux.models.forest.ZoneChoiceForestRegressor`."""
        from ..models.forest import ZoneChoiceForestRegressor

        return ZoneChoiceForestRegressor(
            zone_factors=list(zone_factors), zone_classifier=zone_classifier,
            predictors=None if predictors is None else list(predictors), **self._common(),
            min_zone_sites=self.min_zone_locations, choice_cv=self.choice_folds,
        )

    def zone_feature(self, zone_factors, zone_classifier, predictors=None):
        """An unfitted :class:`globalflux.models.forest.ZoneFeatureForestRegressor`."""
        from ..models.forest import ZoneFeatureForestRegressor

        return ZoneFeatureForestRegressor(
            zone_factors=list(zone_factors), zone_classifier=zone_classifier,
            predictors=None if predictors is None else list(predictors), **self._common())

    def _common(self) -> dict:
        return dict(n_estimators=self.n_estimators, max_features=self.max_features,
                    min_samples_leaf=self.min_samples_leaf, corr_threshold=self.corr_threshold,
                    eliminate=self.eliminate, min_features=self.min_features,
                    inner_cv=self.inner_cv(), selection_n_estimators=self.selection_n_estimators,
                    engine=self.engine, n_jobs=1, random_state=self.seed)
