"""Settings of site observations (COSORE, SRDB, gsbe): where they are, QC and aggregation.

The QC steps and their defaults are documented in :mod:`globalflux.sites`; the SRDB filters of
the RH method (adapted from Zhu et al. 2024, who used 8-day RH from DGRsD and COSORE) in
:mod:`globalflux.io.srdb`; the SRDB QC steps in :func:`globalflux.sites.srdb_quality_control`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._schema import option


@dataclass(frozen=True)
class SitesConfig:
    """Where site observations come from, how they are quality-controlled and aggregated."""

    source: Literal["synthetic", "cosore", "srdb", "gsbe"] = option(
        "synthetic", doc="Site data source."
    )
    cosore_path: str = option("../shared/data/cosore",
                              doc="COSORE tree (folder holding datasets/). Relative to the current folder.")
    srdb_path: str = option("../shared/data/srdb", doc="SRDB folder (srdb-data.csv).")
    gsbe_path: str = option("../shared/data/gsbe", doc="gsbe folder (caches/*.parquet).")
    variable: Literal["Rs", "Rh"] = option("Rh", doc="Measured flux: Rs total efflux, Rh heterotrophic.")
    aggregation: Literal["daily", "8day", "annual"] = option("8day", doc="Time step of site series.")
    min_year: int | None = option(None, doc="Drop records before this year (Zhu et al. 2024 use 2000).")
    cache_dir: str | None = option(None, doc="Parquet cache of converted RDS files; null: ~/.cache/globalflux.")
    percentile_filter: bool = option(
        True, doc="COSORE: drop flux records outside the 1st-99th percentile of their IGBP class "
        "and variable (Smykalov et al.).")
    flux_bounds: tuple[float, float] = option(
        (0.0, 50.0), units="umol CO2 m-2 s-1",
        doc="COSORE: physically allowed CO2 efflux (min, max) in umol CO2 m-2 s-1; records outside are removed.")
    ts_bounds: tuple[float, float] = option(
        (-40.0, 60.0), units="degC", doc="COSORE: allowed soil temperature (min, max) in degC.")
    exclude_manipulated: bool = option(
        True, doc="COSORE: drop ports under experimental treatments (warming, irrigation, girdled Rs "
        "plots, ...); Rh ports of trenched/girdled/root-exclusion plots are kept.")
    srdb_min_midyear: float | None = option(
        None, doc="SRDB: keep records with Study_midyear >= this (2000.5: the MODIS era, as Zhu et al. 2024's 8-day data); null keeps all.")
    srdb_methods: tuple[str, ...] = option(
        ("IRGA", "Gas chromatography"), doc="SRDB: allowed Meas_method values (chamber methods; adapted from Zhu et al. 2024).")
    srdb_exclude_flags: tuple[str, ...] = option(
        ("Q10", "Q11", "Q12", "Q13", "Q14"),
        doc="SRDB: drop records carrying any of these Quality_flag codes (potential/suspected/known "
        "problem, duplicate, inconsistency).")

    srdb_drop_duplicates: bool = option(
        True, doc="SRDB QC: drop exact duplicates (same site, years and Rh_annual value; the "
        "first record is kept).")
    srdb_drop_rh_above_rs: bool = option(
        True, doc="SRDB QC: drop records with Rh_annual > Rs_annual (RH is part of RS).")
    srdb_max_rh_rs: float | None = option(
        0.9, doc="SRDB QC: drop records with Rh_annual / Rs_annual above this ratio (typical "
        "trenching artefacts); null keeps every ratio.", min=0.01, max=10.0)
    srdb_partition_methods: tuple[str, ...] = option(
        ("Exclusion", "Trench", "Extraction", "Comparison", "Subtraction", "Isotope",
         "Gap/clear cut/clip", "DeepPVC", "Girdling"),
        doc="SRDB QC: Partition_method values to keep (default: the field-measured ones; Model, "
        "Regression, TBCA, Incubation, Other are dropped); add 'unknown' to keep records "
        "without a method; empty keeps all.")
    srdb_average_location_year: bool = option(
        False, doc="SRDB QC: average the records of one location (validation.location_km) and "
        "year span into one record.")

    def srdb_qc_rules(self):
        """The :class:`globalflux.sites.SrdbQCRules` these settings describe."""
        from ..sites import SrdbQCRules

        return SrdbQCRules(drop_duplicates=self.srdb_drop_duplicates,
                           drop_rh_above_rs=self.srdb_drop_rh_above_rs,
                           max_rh_rs=self.srdb_max_rh_rs,
                           partition_methods=tuple(self.srdb_partition_methods),
                           average_location_year=self.srdb_average_location_year)

    def qc_rules(self):
        """The :class:`globalflux.sites.QCRules` these settings describe."""
        from ..sites import QCRules

        return QCRules(flux_bounds=self.flux_bounds, ts_bounds=self.ts_bounds,
                       exclude_manipulated=self.exclude_manipulated)
