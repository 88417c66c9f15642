"""Settings of the validation schemes and of the uncertainty and coverage of global totals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._schema import option

Scheme = Literal["record_kfold", "loso", "lolo"]


@dataclass(frozen=True)
class ValidationConfig:
    """Validation schemes side by side, and how the global total's uncertainty is estimated."""

    schemes: tuple[Scheme, ...] = option(
        ("record_kfold", "loso", "lolo"),
        doc="Validation schemes reported side by side: record_kfold (record-level k-fold, "
        "optimistic, as most papers report), loso (leave-one-site-out), lolo "
        "(leave-one-location-out, the headline).")
    location_km: float = option(
        5.0, units="km", doc="Sites closer than this (great-circle distance, chained) form one "
        "location for leave-one-location-out.", min=0.0, max=1000.0)
    join_studies: bool = option(
        True, doc="Also put every site of one study (SRDB Study_number) into one location.")
    site_set: bool = option(
        True, doc="srdb_rh_annual: also validate the site predictor set (grid predictors plus "
        "gsbe statistics at the sites) under the headline scheme (costs one more full run of "
        "folds).")
    k_folds: int = option(10, doc="Folds of the record-level k-fold scheme.", min=2, max=100)
    bootstrap: int = option(
        50, doc="Bootstrap over locations for the global total: refit the map model this many "
        "times on locations drawn with replacement (0: no bootstrap).", min=0, max=1000)
    bootstrap_resolution: float = option(
        0.5, units="degree", doc="Grid resolution (degrees) on which the bootstrap totals are "
        "computed.", min=0.01, max=10.0)
    residual_block_deg: float = option(
        5.0, units="degree", doc="Residual-error propagation: pixels within one square block of "
        "this edge share one error (fully correlated); blocks are independent.",
        min=0.1, max=180.0)
    gap_fill_km: float = option(
        300.0, units="km", doc="Land pixels lacking a predictor take the nearest valid value "
        "within this distance (flagged in the gap_filled layer); 0: no fill.", min=0.0,
        max=5000.0)
