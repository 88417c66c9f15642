"""scikit-learn's estimator checks for ZoneClassifier and the forests (zoned, unified, zone
choice, zone as feature).

Expected failures (each with its reason; sklearn reports them as xfail):

* ``ZoneClassifier`` with its defaults, ``check_clustering``: the check clusters 2-D blobs into 3
  and asks for an adjusted Rand index > 0.4. The classifier keeps only the principal components
  explaining >= 80% of the variance (Zhu et al. 2024), i.e. one of the two, and names its k
  ``n_zones`` (the check only sets ``n_clusters``), so ARI = 0.36. The same check passes with
  ``variance=1.0, n_zones=3`` (second instance below, no expected failure).
* ``ZonedForestRegressor``, ``check_estimators_pickle``: the forest accepts NaN in predictors
  (tag ``allow_nan``), so the check puts NaN into random cells of every column; with
  ``zone_factors=None`` every column is a zone factor, and zone factors must be finite (the zone
  of a site is undefined without them), which fit reports as a DataError.
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from globalflux.models.forest import (
    UnifiedForestRegressor,
    ZoneChoiceForestRegressor,
    ZonedForestRegressor,
    ZoneFeatureForestRegressor,
)
from globalflux.zones import ZoneClassifier

EXPECTED = {
    "ZoneClassifier(default)": {
        "check_clustering": "PCA keeps the components explaining >= 80% of variance (1 of 2 on "
        "the check's blobs) and k is named n_zones: ARI 0.36 < 0.4; passes with variance=1.0, "
        "n_zones=3.",
    },
    "ZonedForestRegressor": {
        "check_estimators_pickle": "NaN is allowed in predictors only; the check puts NaN into "
        "every column and here every column is a zone factor, which must be finite.",
    },
}
# the zone-aware forests share the zoned forest's zone factors (same reason)
EXPECTED["ZoneChoiceForestRegressor"] = EXPECTED["ZonedForestRegressor"]
EXPECTED["ZoneFeatureForestRegressor"] = EXPECTED["ZonedForestRegressor"]


def _expected(est):
    if isinstance(est, ZoneClassifier):
        return EXPECTED["ZoneClassifier(default)"] if est.variance < 1.0 else {}
    return EXPECTED.get(type(est).__name__, {})


@parametrize_with_checks(
    [
        ZoneClassifier(n_particles=5, n_iter=5),
        ZoneClassifier(n_zones=3, variance=1.0, n_particles=5, n_iter=5),
        ZonedForestRegressor(zone_classifier=ZoneClassifier(n_zones=2, n_particles=5, n_iter=3),
                             n_estimators=10, inner_cv=3),
        UnifiedForestRegressor(n_estimators=10, inner_cv=3),
        ZoneChoiceForestRegressor(zone_classifier=ZoneClassifier(n_zones=2, n_particles=5, n_iter=3),
                                  n_estimators=10, inner_cv=3, min_zone_sites=2, choice_cv=2),
        ZoneFeatureForestRegressor(zone_classifier=ZoneClassifier(n_zones=2, n_particles=5, n_iter=3),
                                   n_estimators=10, inner_cv=3),
    ],
    expected_failed_checks=_expected,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
