"""Workflow ``srdb_rh_annual``: SRDB annual heterotrophic respiration with zoned random forests.

Stages (Zhu et al. 2024, on the real data available offline):

1. SRDB annual RH records (:func:`globalflux.io.srdb.read_srdb`: chamber methods, unmanipulated,
   quality flags, ``Study_midyear >= sites.min_year + 0.5``), joined with MODIS GPP and
   ERA5-Land annual statistics at the sites that have them (:mod:`globalflux.io.gsbe`).
2. The real static cube (:func:`globalflux.cube.static_cube`, ``cube.grid``) sampled at each site
   (``cube.extraction``): land cover, Köppen group, NDVI max/min, elevation, MAT, MAP, SOC.
3. Zone factors per site; k-selection report (inertia, silhouette, Calinski-Harabasz, smallest
   zone's site count) and Tamhane's T2 comparisons of the factors between zones.
4. Two predictor sets, each validated by site (``forest.validation``) for the zoned forest and
   the unified baseline: ``site`` (static + gsbe) and ``grid`` (static grid predictors only, the
   ones a global map can use).
5. The ``grid`` zoned forest, refitted on all sites, is written as a model package
   (``RUN/model/``, with its area of applicability) and, through the same functions as
   ``globalflux map`` (:func:`globalflux.mapping.map_cube`, :func:`~globalflux.mapping.map_to_store`:
   resumable), maps RH on every land pixel of the static cube at each of
   ``forest.map_resolutions`` with a per-tree uncertainty band, zones, DI and AOA, written as Zarr
   and COG; the global total in Pg C yr-1 with its land area and per-tree spread.

Everything is written into the run folder; the report compares zoned and unified LOSO R2/RMSE
side by side and the global total with published estimates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import DataError
from ..models.forest import table_i
from ..totals import EARTH_RADIUS_M, KOPPEN_GROUPS, map_coverage, pixel_area_m2  # noqa: F401
from ..zones import zone_factors
from .static_cube import global_static_cube

log = logging.getLogger("globalflux.workflows.srdb_rh_annual")

SECTIONS = ("sites", "cube", "zones", "forest", "validation")

#: Zone factors by default: the static analogues of Zhu et al.'s TEM, PRE, NDVI, LSWI, DEM, SOC
#: (LSWI has no static grid here; the NDVI minimum stands in for the dry-season state).
DEFAULT_FACTORS = ("mat", "map", "ndvi_max", "ndvi_min", "elevation", "soc")
#: Static grid predictors (all exist as grids, so a map can use them).
GRID_PREDICTORS = ("land_cover", "koppen", "ndvi_max", "ndvi_min", "elevation", "mat", "map", "soc")
#: gsbe annual predictors at the sites (MODIS GPP 8-day, ERA5-Land monthly).
GSBE_PREDICTORS = ("gpp_mean", "gpp_max", "gpp_min", "t2m_mean", "stl1_mean", "swvl1_mean",
                   "swvl1_min", "tp_sum", "lai_hv_mean", "lai_lv_mean")
RH_UNITS = "g C m-2 yr-1"
#: MODIS IGBP land-cover class of permanent snow and ice (left out of gap fill and variant).
PERMANENT_ICE = 15

# ------------------------------------------------------------------------------- data
def srdb_site_table(srdb_path, grids_root, *, resolution: float = 0.5,
                    min_midyear: float | None = 2000.5, gsbe_path=None,
                    extraction: str = "window", window: int = 3, cube=None,
                    methods=("IRGA", "Gas chromatography"),
                    quality_flags=("Q10", "Q11", "Q12", "Q13", "Q14"), with_removed=False):
    """SRDB RH records with static-cube (and gsbe) predictors.

    With ``with_removed`` a third item is returned: the counts of
    :func:`globalflux.io.srdb.read_srdb`'s filters (``reason, n_removed``).

    Returns
    -------
    sites
        One row per site: ``site_id, lat, lon, n_records`` and the static predictors.
    records
        One row per SRDB record: ``site_id, lat, lon, year_start, Rh_annual`` (g C m-2 yr-1),
        the static predictors of its site and, with ``gsbe_path``, the gsbe annual predictors.
    """
    from ..extract import sample_points
    from ..io.srdb import read_srdb

    srdb = read_srdb(srdb_path, require=("Rh_annual",), min_midyear=min_midyear,
                     methods=tuple(methods), quality_flags=tuple(quality_flags))
    rec = srdb.records
    if gsbe_path is not None:
        from ..io.gsbe import join_srdb_gsbe, read_gsbe

        rec = join_srdb_gsbe(rec, read_gsbe(gsbe_path))
    if cube is None:
        cube = global_static_cube(grids_root, resolution)
    pts = srdb.sites[["site_id", "lat", "lon"]]
    samp = sample_points(cube, pts, method=extraction, window=window,
                         variables=[v for v in GRID_PREDICTORS + ("land_fraction",) if v in cube])
    samp = samp.drop(columns=["lat", "lon", "pixel_x", "pixel_y"], errors="ignore")
    for c in ("land_cover", "koppen"):
        if c in samp:  # fill codes (255 no data, 0 no class) are not classes
            samp[c] = samp[c].astype("float64").where(~samp[c].isin([255, 0]))
    sites = srdb.sites.merge(samp, on="site_id", how="left")
    records = rec.merge(samp, on="site_id", how="left")
    if with_removed:
        return sites, records, srdb.removed
    return sites, records


# ------------------------------------------------------------------------------- mapping
def tree_totals_block(*arrays: np.ndarray, estimator: Any, columns: list[str]) -> np.ndarray:
    """Per-tree area-weighted sums of one block: ``sum(weight * tree_t)`` for every tree t.

    The last two arrays are the land mask and the weight (m2 of land per pixel); returns
    (1, 1, n_trees + 1) float64: the per-tree sums (tree t of every zone's forest forms
    realisation t), then the land area (m2) of the pixels predicted.
    """
    *feats, mask, weight = arrays
    n_trees = estimator.n_estimators
    out = np.zeros((1, 1, n_trees + 1))
    X = np.stack([np.asarray(f, dtype="float64").reshape(-1) for f in feats], axis=1)
    w = np.asarray(weight, dtype="float64").reshape(-1)
    ok = np.asarray(mask, dtype=bool).reshape(-1) & np.isfinite(X).all(axis=1) & np.isfinite(w)
    if not ok.any():
        return out
    frame = pd.DataFrame(X[ok], columns=columns)
    P = estimator.predict_trees(frame)  # (n_trees, rows); NaN where a row has no zone
    rows = np.isfinite(P).all(axis=0)
    wk = w[ok][rows]
    out[0, 0, :n_trees] += P[:, rows] @ wk
    out[0, 0, n_trees] += wk.sum()
    return out




def global_total(model, cube: xr.Dataset, features: list[str]) -> dict[str, float]:
    """Global RH total (Pg C yr-1) from the per-tree area-weighted sums, with the land area used.

    Land area per pixel = spherical pixel area x ``land_fraction`` (land pixels of
    ``land_mask`` only). Tree t of every zone forest forms realisation t of the map; the total's
    mean, SD and 5-95 % range are over those realisations. ``area_predicted_km2`` is the land
    area with every predictor present (the area the total covers); ``land_area_km2`` all land
    of the mask.
    """
    import dask.array as dsa

    area = pixel_area_m2(cube)
    weight = (area * cube["land_fraction"].astype("float64")).where(cube["land_mask"])
    arrays = [cube[f].astype("float32") for f in features] + [cube["land_mask"], weight]
    arrays = list(xr.broadcast(*arrays))
    tmpl = arrays[0]
    arrays = [a.chunk(dict(zip(tmpl.dims, tmpl.chunks, strict=True))).data for a in arrays]
    n_trees = model.n_estimators
    sums = dsa.map_blocks(tree_totals_block, *arrays, estimator=model, columns=list(features),
                          dtype="float64", new_axis=2,
                          chunks=(tuple(1 for _ in arrays[0].chunks[0]),
                                  tuple(1 for _ in arrays[0].chunks[1]), (n_trees + 1,)))
    summed, land_area = dsa.compute(sums.sum(axis=(0, 1)), weight.sum().data)
    pg = np.asarray(summed[:n_trees]) / 1e15
    return {"total_pg": float(pg.mean()), "total_sd_pg": float(pg.std()),
            "total_q05_pg": float(np.quantile(pg, 0.05)), "total_q95_pg": float(np.quantile(pg, 0.95)),
            "area_predicted_km2": float(summed[n_trees]) / 1e6,
            "land_area_km2": float(land_area) / 1e6, "n_trees": int(n_trees)}


def _aoa_shares(stored: xr.Dataset, res: float) -> dict[str, float]:
    """Share of the mapped land area, and of the mapped RH total, outside the area of
    applicability (land area = spherical pixel area x land fraction)."""
    w = pixel_area_m2(stored) * stored["land_fraction"].astype("float64")
    mapped = stored["rh"].notnull() & (stored["aoa"] >= 0)
    outside = mapped & (stored["aoa"] == 0)
    flux = (stored["rh"] * w).where(mapped)
    area_all, area_out, tot_all, tot_out = (
        float(v) for v in xr.Dataset({"a": w.where(mapped).sum(), "b": w.where(outside).sum(),
                                      "c": flux.sum(), "d": flux.where(outside).sum()})
        .compute().to_array().values)
    row = {"resolution_deg": float(res), "threshold_di": float(stored["aoa"].attrs.get(
        "threshold", np.nan)), "share_of_mapped_land_outside_aoa": area_out / area_all,
        "share_of_total_outside_aoa": tot_out / tot_all}
    log.info("area of applicability at %s deg: %.1f%% of mapped land (%.1f%% of the RH total) "
             "outside", res, 100 * row["share_of_mapped_land_outside_aoa"],
             100 * row["share_of_total_outside_aoa"])
    return row


def _write_model_package(ctx, recipe, final, Xg: pd.DataFrame, y, groups, records, cube,
                         held_out: pd.DataFrame):
    """Write ``RUN/model/`` (the grid zoned forest, its AOA) and load it back verified."""
    from ..applicability import AreaOfApplicability
    from ..io.model_package import input_statistics, load_model, table_sha256, write_package
    from ..metrics import summary

    cfg_f = recipe.forest
    if cfg_f.validation == "loso":
        folds = groups
    else:
        from ..validation import spatial_block_folds

        folds = spatial_block_folds(records["lat"], records["lon"], cfg_f.block_deg,
                                    n_folds=cfg_f.n_block_folds, random_state=cfg_f.seed)
    aoa = AreaOfApplicability().fit(Xg, final.importance_weights(), folds)
    units = {c: cube[c].attrs.get("units") for c in Xg.columns if c in cube}
    roles = {c: "zone_factor" for c in final.zone_factors_ if c not in final.predictors_}
    scores = summary(held_out["y_obs"], held_out["y_pred"]) if {"y_obs", "y_pred"} <= set(
        held_out.columns) else {}
    write_package(
        ctx.out / "model", final, inputs=input_statistics(Xg, units, roles),
        target={"name": "rh", "units": RH_UNITS,
                "standard_name": "heterotrophic_respiration_carbon_flux",
                "long_name": "annual heterotrophic respiration (zoned random forest, mean of "
                "trees)"},
        time_step="annual", applicability=aoa,
        training={"sha256": table_sha256(Xg.assign(Rh_annual=y, site_id=groups)),
                  "n_rows": int(len(Xg)), "n_sites": int(len(np.unique(groups)))},
        validation={"scheme": cfg_f.validation,
                    **{k: v for k, v in scores.items() if k in ("n", "r2", "rmse", "bias")}},
        recipe=recipe)
    return load_model(ctx.out / "model")


def _write_cog(da: xr.DataArray, folder: Path, name: str, tags: dict[str, str]) -> list[Path]:
    from ..io.cog import write_cogs

    return list(write_cogs(da, folder, prefix=name, nodata=np.nan if da.dtype.kind == "f" else -1,
                           tags=tags))


# ------------------------------------------------------------------------------- QC, validation
def srdb_qc(records: pd.DataFrame, removed: pd.DataFrame, cfg_sites, cfg_v,
            factors: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """SRDB QC with counts: the reader's filters, the QC steps, then rows without zone factors.

    Locations (``location_id``; :func:`globalflux.validation.location_groups` with
    ``validation.location_km`` and, with ``validation.join_studies``, SRDB ``Study_number``) are
    assigned before the QC (the location-year average needs them) and again after it, so that
    a location never chains through a dropped site.

    Returns the kept records and ``qc_counts``: ``stage, step, rule, n_before, n_removed,
    n_after`` (stage ``read_srdb``: :func:`globalflux.io.srdb.read_srdb`'s filters; ``qc``:
    :func:`globalflux.sites.srdb_quality_control`; ``predictors``: no zone factors at the site).
    """
    from ..sites import srdb_quality_control
    from ..validation import location_groups

    def locate(rec: pd.DataFrame) -> np.ndarray:
        study = rec["Study_number"].to_numpy() if cfg_v.join_studies else None
        return location_groups(rec["lat"].to_numpy(dtype="float64"),
                               rec["lon"].to_numpy(dtype="float64"),
                               location_km=cfg_v.location_km, study=study)

    rows = []
    n = int(removed.loc[removed["reason"] == "read", "n_removed"].sum())
    for r in removed.itertuples():
        if r.reason in ("read", "kept"):
            continue
        rows.append({"stage": "read_srdb", "step": r.reason, "rule": "read_srdb filter",
                     "n_before": n, "n_removed": int(r.n_removed), "n_after": n - int(r.n_removed)})
        n -= int(r.n_removed)
    rec = records.reset_index(drop=True).copy()
    rec["location_id"] = locate(rec)
    rec, counts = srdb_quality_control(rec, cfg_sites.srdb_qc_rules())
    counts.insert(0, "stage", "qc")
    n0 = len(rec)
    keep = rec[list(factors)].notna().all(axis=1) & rec["Rh_annual"].notna()
    rec = rec.loc[keep].reset_index(drop=True)
    rows_tail = [{"stage": "predictors", "step": "no_zone_factors",
                  "rule": "a zone factor is missing at the site", "n_before": n0,
                  "n_removed": n0 - len(rec), "n_after": len(rec)}]
    rec["location_id"] = locate(rec)
    table = pd.concat([pd.DataFrame(rows), counts, pd.DataFrame(rows_tail)], ignore_index=True)
    table.loc[len(table)] = {"stage": "kept", "step": "kept",
                             "rule": f"{rec['site_id'].nunique()} sites, "
                             f"{rec['location_id'].nunique()} locations",
                             "n_before": len(rec), "n_removed": 0, "n_after": len(rec)}
    return rec, table


def map_model(cfg_f, cfg_z, factors: Sequence[str], predictors: Sequence[str]):
    """The zoned forest of the map, fitted by location: zones need ``forest.min_zone_locations``."""
    return cfg_f.zoned(factors, cfg_z.classifier(), predictors=list(predictors)).set_params(
        min_zone_sites=cfg_f.min_zone_locations)


@dataclass(frozen=True)
class SrdbValidation:
    """Results of :func:`validate_srdb`.

    Attributes
    ----------
    table
        ``scheme, model, predictors, n, n_groups, r2, rmse, bias`` (``validation_schemes.csv``).
    preds
        (scheme, predictor set, model) -> held-out predictions.
    decisions
        Zone-choice decisions of every outer fold: ``scheme, predictors, fold, zone, n_groups,
        n_rows, inner_mse_zone, inner_mse_unified, choice, reason``.
    headline
        The headline scheme (``lolo`` when run, else the last scheme).
    """

    table: pd.DataFrame
    preds: dict
    decisions: pd.DataFrame
    headline: str


def validate_srdb(ctx, cfg_f, cfg_z, cfg_v, records: pd.DataFrame, y: np.ndarray,
                  sets: dict[str, list[str]], factors: Sequence[str]) -> SrdbValidation:
    """Every scheme of ``validation.schemes`` for the zone-choice forest (whose fits also give
    the plain zoned and the unified forest's predictions) and the zone-as-feature forest on the
    ``grid`` predictors; the ``site`` predictors (gsbe statistics exist at the sites only) under
    the headline scheme. Fits are grouped by location (inner elimination and zone choice).
    """
    from ..validation import validate_schemes

    schemes = list(cfg_v.schemes)
    headline = "lolo" if "lolo" in schemes else schemes[-1]
    sites = records["site_id"].astype(str).to_numpy()
    locs = records["location_id"].astype(str).to_numpy()
    tables, preds, decisions = [], {}, []
    for set_name, predictors in sets.items():
        if set_name != "grid" and not cfg_v.site_set:
            continue
        X = records[list(dict.fromkeys(predictors + list(factors)))]
        models = {"zone_choice": cfg_f.zone_choice(factors, cfg_z.classifier(), predictors=predictors)}
        if set_name == "grid":
            models["zone_feature"] = cfg_f.zone_feature(factors, cfg_z.classifier(),
                                                        predictors=predictors)
        run_schemes = schemes if set_name == "grid" else [headline]

        def step(scheme, model, _set=set_name):
            return ctx.step(f"{scheme}: {model} forest, {_set} predictors "
                            f"({len(np.unique(sites))} sites, {len(np.unique(locs))} locations)")

        tab, pr = validate_schemes(models, X, y, sites=sites, locations=locs, schemes=run_schemes,
                                   k=cfg_v.k_folds, random_state=cfg_f.seed, n_jobs=cfg_f.n_jobs,
                                   with_std=True, on_fold=step)
        tab.insert(2, "predictors", set_name)
        tables.append(tab)
        for (scheme, model), p in pr.items():
            preds[(scheme, set_name, model)] = p
            dec = p.attrs.get("fold_decisions")
            if model == "zone_choice" and dec is not None:
                decisions.append(dec.assign(scheme=scheme, predictors=set_name))
    table = pd.concat(tables, ignore_index=True)
    dec = pd.concat(decisions, ignore_index=True) if decisions else pd.DataFrame()
    if len(dec):
        dec = dec[["scheme", "predictors", "fold"] + [c for c in dec.columns
                                                     if c not in ("scheme", "predictors", "fold")]]
    return SrdbValidation(table=table, preds=preds, decisions=dec, headline=headline)


# ------------------------------------------------------------------------------- total
@dataclass(frozen=True)
class TotalResult:
    """Results of :func:`total_with_uncertainty`.

    Attributes
    ----------
    table
        ``global_total.csv``: one row per coverage level (``complete``: pixels with every
        predictor; ``filled``: plus the nearest-valid fill; ``all``: plus the model variant
        without the missing predictors) with the total, its area and uncertainty.
    coverage
        Land area and the area each level covers, per Köppen main group.
    bootstrap
        The bootstrap replicates' totals.
    variant_predictors
        Predictors of the model variant.
    gap_filled
        The ``gap_filled`` flag layer of the fill.
    residual_bins
        The residual-SD step function (upper bin edges, SD, n).
    total_map
        The map behind the ``all`` total (``rh``), its ``coverage_level`` (0-3) and
        ``gap_filled`` layers.
    """

    table: pd.DataFrame
    coverage: pd.DataFrame
    bootstrap: pd.DataFrame
    variant_predictors: list[str]
    gap_filled: xr.DataArray
    residual_bins: pd.DataFrame
    total_map: xr.Dataset


def total_with_uncertainty(cfg_f, cfg_z, cfg_v, factors, records: pd.DataFrame, y: np.ndarray,
                           predictors: list[str], cube: xr.Dataset,
                           lolo_pred: pd.DataFrame) -> TotalResult:
    """Global total of the map model with bootstrap and residual uncertainty, at three coverages.

    1. ``complete``: land pixels with every predictor; 2. ``filled``: plus pixels whose missing
    predictors take the nearest valid value within ``validation.gap_fill_km``
    (:func:`globalflux.cube.fill_nearest`); 3. ``all``: plus the remaining land pixels, predicted
    by a unified forest on the predictors present on at least 90% of their area (a model variant
    without the missing predictors). Pixels lacking even those stay out; their area is listed.
    """
    from ..cube import fill_nearest
    from ..totals import (
        land_weight,
        predict_map,
        residual_error_total,
        residual_sd_model,
        total_pg,
        total_uncertainty,
    )

    feats = list(dict.fromkeys(predictors + list(factors)))
    land = np.asarray(cube["land_mask"].values, dtype=bool)
    weight = land_weight(cube)
    wv = np.asarray(weight.values)
    # permanent snow and ice (MODIS IGBP class 15) has no soil to respire: it is left out of the
    # fill and the variant (its area is reported), so neither extrapolates onto ice sheets
    ice = (np.asarray(cube["land_cover"].values) == PERMANENT_ICE) if "land_cover" in cube \
        else np.zeros(land.shape, dtype=bool)
    eligible = land & ~ice
    fillable = [f for f in feats if cube[f].dtype.kind == "f"]
    filled, flag = fill_nearest(cube, fillable, max_km=cfg_v.gap_fill_km,
                                where=xr.DataArray(eligible, dims=("y", "x")))

    def present(ds, names):
        ok = land.copy()
        for f in names:
            ok &= np.isfinite(np.asarray(ds[f].values, dtype="float64"))
        return ok

    complete, with_fill = present(cube, feats), present(filled, feats)
    gap = eligible & ~with_fill
    gap_w = np.where(gap, np.nan_to_num(wv), 0.0)
    variant = [f for f in predictors
               if gap_w.sum() == 0 or (gap_w * np.isfinite(np.asarray(filled[f].values,
                                                                         dtype="float64"))).sum()
               >= 0.9 * gap_w.sum()]
    X = records[feats]
    gap_da = xr.DataArray(gap, dims=("y", "x"))

    def maps(rows, groups) -> dict[str, np.ndarray]:
        zoned = map_model(cfg_f, cfg_z, factors, predictors).fit(X.iloc[rows], y[rows], groups=groups)
        m_fill = predict_map(zoned, filled, feats)
        m_all = m_fill.copy()
        if variant and gap.any():
            var = cfg_f.unified(predictors=variant).fit(X[variant].iloc[rows], y[rows],
                                                        groups=groups)
            m_var = predict_map(var, filled, variant, where=gap_da)
            m_all = np.where(np.isfinite(m_fill), m_fill, m_var)
        return {"complete": np.where(complete, m_fill, np.nan), "filled": m_fill, "all": m_all}

    all_rows = np.arange(len(records))
    groups = records["location_id"].astype(str).to_numpy()
    full = maps(all_rows, groups)
    boot = pd.DataFrame()
    if cfg_v.bootstrap > 0:
        from ..totals import bootstrap_totals

        def progress(b):
            if (b + 1) % 10 == 0:
                log.info("bootstrap: %d of %d refits done", b + 1, cfg_v.bootstrap)

        boot = bootstrap_totals(maps, groups, weight, n=cfg_v.bootstrap, random_state=cfg_f.seed,
                                on_replicate=progress, n_jobs=cfg_f.n_jobs)
    res_model = residual_sd_model(lolo_pred["y_obs"], lolo_pred["y_pred"])
    land_km2 = float(np.nansum(wv) / 1e6)
    rows = []
    for level, m in full.items():
        t, area = total_pg(m, weight)
        sd = residual_error_total(m, weight, res_model, block_deg=cfg_v.residual_block_deg)
        b = boot[f"{level}_pg"].to_numpy() if len(boot) else np.array([])
        u = total_uncertainty(t, b, sd)
        rows.append({"resolution_deg": float(abs(float(cube["y"][1] - cube["y"][0]))),
                     "coverage": level, "area_km2": area, "land_area_km2": land_km2,
                     "area_share": area / land_km2, **u,
                     "ice_left_out_km2": float(np.nansum(np.where(ice & ~np.isfinite(m), wv, 0))
                                               / 1e6),
                     "residual_block_deg": cfg_v.residual_block_deg,
                     "gap_fill_km": cfg_v.gap_fill_km,
                     "variant_predictors": " ".join(variant) if level == "all" else ""})
    table = pd.DataFrame(rows)
    from ..totals import map_coverage

    cov = []
    for level, m in full.items():
        c = map_coverage(cube, feats, valid=xr.DataArray(np.isfinite(m), dims=("y", "x")))
        c.insert(0, "coverage", level)
        cov.append(c)
    bins = pd.DataFrame({"pred_upper_edge": res_model.edges, "residual_sd": res_model.sd,
                         "n": res_model.n})
    level = np.zeros(land.shape, dtype="uint8")
    level[np.isfinite(full["all"])] = 3
    level[np.isfinite(full["filled"])] = 2
    level[np.isfinite(full["complete"])] = 1
    coords = {"y": cube["y"], "x": cube["x"]}
    total_map = xr.Dataset({
        "rh": xr.DataArray(full["all"].astype("float32"), dims=("y", "x"), coords=coords,
                           attrs={"units": RH_UNITS, "long_name": "annual RH behind the global "
                                  "total (map model; gap fill; model variant in the rest)"}),
        "coverage_level": xr.DataArray(level, dims=("y", "x"), coords=coords, attrs={
            "units": "1", "long_name": "0 not predicted, 1 every predictor, 2 nearest-valid "
            "gap fill, 3 model variant without the missing predictors"}),
        "gap_filled": flag,
        "land_fraction": cube["land_fraction"],
    })
    return TotalResult(table=table, coverage=pd.concat(cov, ignore_index=True), bootstrap=boot,
                       variant_predictors=variant, gap_filled=flag, residual_bins=bins,
                       total_map=total_map)


# ------------------------------------------------------------------------------- run
def run(recipe, ctx) -> None:
    """Run the recipe (see the module docstring)."""
    from .. import report
    from ..mapping import map_cube, map_to_store, mapping_chunks
    from ..provenance import provenance_attrs
    from ..validation import score
    from ..zones import k_selection_report, tamhane_t2

    cfg_sites, cfg_cube, cfg_z, cfg_f = recipe.sites, recipe.cube, recipe.zones, recipe.forest
    cfg_v = recipe.validation
    if cfg_sites.source not in ("srdb", "gsbe"):
        raise DataError(f"sites.source is {cfg_sites.source!r}", where="sites.source",
                        fix="The srdb_rh_annual workflow reads SRDB: use 'srdb' (or 'gsbe').")
    if cfg_cube.source != "static":
        raise DataError(f"cube.source is {cfg_cube.source!r}", where="cube.source",
                        fix="The srdb_rh_annual workflow samples the real static cube: use 'static'.")
    factors = zone_factors(cfg_z.factors, GRID_PREDICTORS, DEFAULT_FACTORS)
    min_mid = cfg_sites.srdb_min_midyear
    res0 = float(cfg_cube.grid.resolution)

    with ctx.step(f"SRDB RH records, QC, locations, gsbe predictors and the static cube at {res0} deg"):
        cube0 = global_static_cube(cfg_cube.static_root, res0, land_threshold=cfg_cube.land_threshold)
        sites, records, removed = srdb_site_table(
            cfg_sites.srdb_path, cfg_cube.static_root, min_midyear=min_mid,
            gsbe_path=cfg_sites.gsbe_path, extraction=cfg_cube.extraction, window=cfg_cube.window,
            cube=cube0, methods=cfg_sites.srdb_methods, quality_flags=cfg_sites.srdb_exclude_flags,
            with_removed=True)
        records, qc_counts = srdb_qc(records, removed, cfg_sites, cfg_v, factors)
        qc_counts.to_csv(ctx.metrics / "qc_counts.csv", index=False)
        log.info("SRDB QC: %s", "; ".join(f"{r.step} -{r.n_removed}" for r in qc_counts.itertuples()))
        if records["location_id"].nunique() < max(cfg_z.n_zones * 2, 4):
            raise DataError(f"{records['location_id'].nunique()} locations with RH and zone factors",
                            where=cfg_sites.srdb_path,
                            fix="Relax the SRDB QC keys (sites.srdb_*) or use fewer zones.")
        sites = sites[sites["site_id"].isin(records["site_id"])]
        records.to_csv(ctx.metrics / "training_table.csv", index=False)

    y = records["Rh_annual"].to_numpy(dtype="float64")
    groups = records["location_id"].astype(str).to_numpy()
    site_rows = records.groupby("location_id", sort=True)[factors + ["lat", "lon"]].mean()
    gsbe_cols = [c for c in GSBE_PREDICTORS if c in records.columns]
    sets = {"grid": list(GRID_PREDICTORS), "site": list(GRID_PREDICTORS) + gsbe_cols}

    with ctx.step("k-selection report and zone factor differences"):
        ksel = pd.DataFrame()
        if cfg_z.k_range:
            ksel = k_selection_report(site_rows[factors], site_rows.index, k_range=cfg_z.k_range,
                                      variance=cfg_z.variance, n_particles=cfg_z.n_particles,
                                      n_iter=cfg_z.n_iter, patience=cfg_z.patience,
                                      random_state=cfg_z.seed)
            ksel.to_csv(ctx.metrics / "k_selection.csv", index=False)
        zc = cfg_z.classifier().fit(site_rows[factors])
        t2 = tamhane_t2(site_rows[factors], zc.labels_)
        t2.to_csv(ctx.metrics / "tamhane_t2.csv", index=False)

    val = validate_srdb(ctx, cfg_f, cfg_z, cfg_v, records, y, sets, factors)
    val.table.to_csv(ctx.metrics / "validation_schemes.csv", index=False)
    val.decisions.to_csv(ctx.metrics / "zone_choice_fold_decisions.csv", index=False)
    headline = val.headline
    results = {set_name: {kind: val.preds[(headline, set_name, kind)] for kind in ("zoned", "unified")}
               for set_name in sets if (headline, set_name, "zoned") in val.preds}
    for set_name, d in results.items():
        for kind, pred in d.items():
            pred.to_csv(ctx.metrics / f"pred_{set_name}_{kind}.csv")

    # skill tables (headline scheme, per zone)
    skill_rows = []
    for set_name, d in results.items():
        for kind, pred in d.items():
            s = score(pred, by="zone" if "zone" in pred else None)
            s.insert(0, "model", kind)
            s.insert(0, "predictors", set_name)
            skill_rows.append(s)
    skill = pd.concat(skill_rows, ignore_index=True)
    skill.to_csv(ctx.metrics / "skill.csv", index=False)
    overall = skill[skill["group"] == "all"].pivot(index="predictors", columns="model",
                                                     values=["r2", "rmse", "bias"])
    overall.columns = [f"{m} {k}" for k, m in overall.columns]
    side = overall.reset_index()[["predictors", "zoned r2", "unified r2", "zoned rmse",
                                  "unified rmse", "zoned bias", "unified bias"]]
    side.to_csv(ctx.metrics / "zoned_vs_unified.csv", index=False)

    with ctx.step("final zoned (grid predictors), unified and zone-choice forests on all locations"):
        Xg = records[list(dict.fromkeys(sets["grid"] + factors))]
        final = map_model(cfg_f, cfg_z, factors, sets["grid"]).fit(Xg, y, groups=groups)
        final_u = cfg_f.unified(predictors=sets["grid"]).fit(Xg, y, groups=groups)
        final_c = cfg_f.zone_choice(factors, cfg_z.classifier(), predictors=sets["grid"]).fit(
            Xg, y, groups=groups)
        final_c.decisions_.to_csv(ctx.metrics / "zone_choice_decisions.csv", index=False)
        Xs = records[list(dict.fromkeys(sets["site"] + factors))]
        final_s = map_model(cfg_f, cfg_z, factors, sets["site"]).fit(Xs, y, groups=groups)
        tab_i = table_i(final, final_u)
        tab_i.to_csv(ctx.metrics / "selected_variables_grid.csv")
        final_s.table_selected_.to_csv(ctx.metrics / "selected_variables_site.csv")

    with ctx.step("model package of the grid zoned forest (model/) and its area of applicability"):
        model = _write_model_package(ctx, recipe, final, Xg, y, groups, records, cube0,
                                     results["grid"]["zoned"])

    attrs = provenance_attrs(recipe=recipe)
    totals = []
    coverage: list[pd.DataFrame] = []
    maps_done = []
    aoa_rows: list[dict[str, float]] = []
    for res in cfg_f.map_resolutions:
        with ctx.step(f"global RH map at {res} deg (Zarr, COG) and global total"):
            cube = cube0 if float(res) == res0 else global_static_cube(
                cfg_cube.static_root, res, land_threshold=cfg_cube.land_threshold)
            feats = list(Xg.columns)
            # compute the static layers once (regridding is the costly part), then map by the
            # blocks of the one chunk decision (mapping.mapping_chunks)
            cube = cube.load()
            cube = cube.chunk(mapping_chunks(cube.sizes, len(feats) + 1, workers=2))
            if cube.rio.crs is None:
                cube = cube.rio.write_crs("EPSG:4326")
            # the one mapping path (as `globalflux map model/ CUBE`): resumable, block by block
            mapped = map_cube(model, cube, quantiles=(0.05, 0.95))
            pieces = dict(mapped.data_vars)
            pieces["land_fraction"] = cube["land_fraction"]
            tag = f"{res:g}deg".replace(".", "p")
            path = ctx.maps / f"rh_{tag}.zarr"
            map_to_store(ctx.client() if ctx.scheduler else None, pieces, path,
                         attrs=dict(attrs, **mapped.attrs,
                                    title=f"{recipe.name}: annual RH, zoned random forest, "
                                    f"{res} deg"),
                         mask=cube["land_mask"].astype(bool), resume=ctx.resume)
            from ..io.store import open_dataset

            stored = open_dataset(path, chunks={})
            stored = stored.rio.write_crs("EPSG:4326")
            tags = {k: str(v) for k, v in attrs.items() if isinstance(v, str) and k != "recipe"}
            for v in ("rh", "rh_sd", "zone", "aoa"):
                _write_cog(stored[v], ctx.cogs, f"{v}_{tag}", tags)
            aoa_rows.append(_aoa_shares(stored, res))
            tot = global_total(final, cube, feats)
            cov = map_coverage(cube, feats)
            cov.insert(0, "resolution_deg", float(res))
            coverage.append(cov)
            mean_map = float((stored["rh"] * pixel_area_m2(stored) * stored["land_fraction"]).sum()) / 1e15
            tot.update(resolution_deg=float(res), total_from_mean_map_pg=mean_map)
            totals.append(tot)
            maps_done.append((res, stored))
            log.info("global RH at %s deg: %.1f Pg C/yr (tree SD %.1f) over %.4g km2 of land with "
                     "every predictor (%.4g km2 land in the mask)", res, tot["total_pg"],
                     tot["total_sd_pg"], tot["area_predicted_km2"], tot["land_area_km2"])
    if aoa_rows:
        pd.DataFrame(aoa_rows).to_csv(ctx.metrics / "applicability.csv", index=False)
    totals_df = pd.DataFrame(totals)
    cov_df = pd.concat(coverage, ignore_index=True) if coverage else pd.DataFrame()
    if len(totals_df):
        totals_df.to_csv(ctx.metrics / "forest_spread.csv", index=False)
        cov_df.to_csv(ctx.metrics / "map_coverage.csv", index=False)

    with ctx.step(f"global total at {cfg_v.bootstrap_resolution} deg: coverage, gap fill, "
                  f"model variant, bootstrap over locations ({cfg_v.bootstrap}), residual error"):
        cube_t = cube0 if float(cfg_v.bootstrap_resolution) == res0 else global_static_cube(
            cfg_cube.static_root, cfg_v.bootstrap_resolution, land_threshold=cfg_cube.land_threshold)
        lolo_pred = val.preds[(val.headline, "grid", "zoned")]
        tot = total_with_uncertainty(cfg_f, cfg_z, cfg_v, factors, records, y, sets["grid"],
                                     cube_t.load(), lolo_pred)
        tot.table.to_csv(ctx.metrics / "global_total.csv", index=False)
        tot.coverage.to_csv(ctx.metrics / "total_coverage.csv", index=False)
        tot.bootstrap.to_csv(ctx.metrics / "bootstrap_totals.csv", index=False)
        tot.residual_bins.to_csv(ctx.metrics / "residual_sd_bins.csv", index=False)
        from ..io.store import write_dataset as _write

        tmap = tot.total_map.assign_attrs(**{**attrs, "title": f"{recipe.name}: RH behind the "
                                             "global total, with coverage level and gap-fill flag"})
        tag_t = f"{cfg_v.bootstrap_resolution:g}deg".replace(".", "p")
        _write(tmap.rio.write_crs("EPSG:4326"), ctx.maps / f"rh_total_{tag_t}.zarr", mode="w")

    with ctx.step("figures and report"):
        _report(ctx, recipe, SrdbRunResults(
            records=records, sites=sites, factors=list(factors), qc_counts=qc_counts, ksel=ksel,
            t2=t2, zc=zc, skill=skill, side=side, results=results, validation=val, final=final,
            final_s=final_s, final_u=final_u, final_c=final_c, table_i=tab_i,
            forest_spread=totals_df, maps_done=maps_done, total=tot, cov_df=cov_df,
            applicability=pd.DataFrame(aoa_rows)), report)


@dataclass(frozen=True)
class SrdbRunResults:
    """Everything the report of one srdb_rh_annual run says (see :func:`run`)."""

    records: pd.DataFrame
    sites: pd.DataFrame
    factors: list[str]
    qc_counts: pd.DataFrame
    ksel: pd.DataFrame
    t2: pd.DataFrame
    zc: Any
    skill: pd.DataFrame
    side: pd.DataFrame
    results: dict
    validation: SrdbValidation
    final: Any
    final_s: Any
    final_u: Any
    final_c: Any
    table_i: pd.DataFrame
    forest_spread: pd.DataFrame
    maps_done: list
    total: TotalResult | None
    cov_df: pd.DataFrame | None = None
    applicability: pd.DataFrame | None = None


ATTRIBUTION = (
    "Zhu et al. (2024) mapped heterotrophic respiration with zoned random forests from 8-day RH "
    "(DGRsD and COSORE) and MODIS-era drivers. This workflow adapts their method to SRDB annual "
    "RH and static predictors (the 8-day data and drivers are not available offline); it is an "
    "adaptation, not a reproduction, and every comparison with their numbers is context.")


def _report(ctx, recipe, r: SrdbRunResults, report) -> None:
    from ..report import markdown_table
    from ..totals import compare_with_published, published_table
    from ..validation import SCHEME_LABELS

    dpi = recipe.report.dpi
    figs = recipe.report.figures
    cfg_f, cfg_z, cfg_v = recipe.forest, recipe.zones, recipe.validation
    records, sites, factors, zc = r.records, r.sites, r.factors, r.zc
    results, final, final_s, final_u = r.results, r.final, r.final_s, r.final_u
    maps_done = r.maps_done
    n_sites = records["site_id"].nunique()
    n_locs = records["location_id"].nunique()
    if figs:
        for set_name, d in results.items():
            zp = d["zoned"]
            panels = {f"zone {z}": (g["y_obs"], g["y_pred"]) for z, g in zp.groupby("zone")}
            report.scatter_obs_pred(None, None, ctx.figures / f"obs_pred_zones_{set_name}.png",
                                    panels=panels, units=RH_UNITS, dpi=dpi)
            report.scatter_obs_pred(None, None, ctx.figures / f"obs_pred_{set_name}.png",
                                    panels={"zoned": (zp["y_obs"], zp["y_pred"]),
                                            "unified": (d["unified"]["y_obs"], d["unified"]["y_pred"])},
                                    units=RH_UNITS, dpi=dpi)
        report.importance_png(final, final_u, ctx.figures / "importance_grid.png", dpi)
        report.importance_png(final_s, None, ctx.figures / "importance_site.png", dpi)
        for res, stored in maps_done:
            tag = f"{res:g}deg".replace(".", "p")
            step = max(1, int(round(0.25 / res)))  # PNGs at <= 0.25 deg
            rh = stored["rh"].isel(y=slice(None, None, step), x=slice(None, None, step))
            zone = stored["zone"].isel(y=slice(None, None, step), x=slice(None, None, step))
            report.map_png(rh, ctx.figures / f"rh_map_{tag}.png", units=RH_UNITS, dpi=dpi,
                           title=f"Annual RH, zoned RF ({res} deg)", vmin=0,
                           vmax=float(np.nanpercentile(rh.values, 99)))
            sd = stored["rh_sd"].isel(y=slice(None, None, step), x=slice(None, None, step))
            report.map_png(sd, ctx.figures / f"rh_sd_map_{tag}.png", units=RH_UNITS, dpi=dpi,
                           title=f"Tree SD of RH ({res} deg)", cmap="magma")
            report.map_png(zone.where(zone >= 0), ctx.figures / f"zone_map_{tag}.png", dpi=dpi,
                           categorical=True, title=f"Zones ({res} deg) and SRDB RH sites",
                           points=(sites["lon"], sites["lat"]))

    kept_qc = r.qc_counts[r.qc_counts["stage"] == "qc"]
    body = [
        f"SRDB annual heterotrophic respiration (Rh_annual, {RH_UNITS}): {len(records)} records at "
        f"{n_sites} sites in {n_locs} locations (sites within {cfg_v.location_km:g} km of one "
        f"another{', or of one study,' if cfg_v.join_studies else ''} form a location). "
        f"Study_midyear >= {recipe.sites.srdb_min_midyear}. gsbe MODIS GPP / ERA5-Land annual "
        f"predictors present for {int((records.get('gsbe_years', pd.Series(0)) > 0).sum())} records.",
        ATTRIBUTION,
        "Quality control (`metrics/qc_counts.csv`; `read_srdb`: the reader's filters, `qc`: the "
        "recipe's SRDB QC keys `sites.srdb_*`, in this order); the QC steps removed "
        f"{int(kept_qc['n_removed'].sum())} records:\n\n"
        + markdown_table(r.qc_counts, floatfmt=".0f"),
        f"Zone factors (per location, static cube at {recipe.cube.grid.resolution} deg, extraction "
        f"`{recipe.cube.extraction}`): {', '.join(factors)}. PCA kept {zc.n_components_} components "
        f"(>= {cfg_z.variance:.0%} of variance); k = {cfg_z.n_zones} zones (PSO k-means, seed "
        f"{cfg_z.seed}). Locations per zone on all data: "
        + ", ".join(f"zone {z}: {int((zc.labels_ == z).sum())}" for z in range(cfg_z.n_zones)) + ".",
        "Every fit (scaler, PCA, zones, feature selection, zone choice, forest) is refitted in each "
        "fold on the training rows only and grouped by location: zones are fitted on one row per "
        "location, and the elimination's inner CV "
        f"({'leave-one-location-out' if cfg_f.inner_folds is None else f'{cfg_f.inner_folds}-fold'}) "
        "and the zone choice's inner CV "
        f"({cfg_f.choice_folds}-fold) never split a location. {cfg_f.n_estimators} trees, "
        f"max_features {cfg_f.max_features:.3g}; a zone needs {cfg_f.min_zone_locations} training "
        "locations for a forest of its own.",
    ]
    sections = [("Data, quality control and set-up", "\n\n".join(body))]

    # ---- validation schemes
    vt = r.validation.table
    head = r.validation.headline
    wide = vt.pivot_table(index=["predictors", "model"], columns="scheme", values="r2",
                          sort=False).reset_index()
    wide.columns = [c if c in ("predictors", "model") else f"r2 {c}" for c in wide.columns]
    rm = vt.pivot_table(index=["predictors", "model"], columns="scheme", values="rmse",
                        sort=False).reset_index()
    for c in rm.columns:
        if c not in ("predictors", "model"):
            wide[f"rmse {c}"] = rm[c].to_numpy()
    labels = "; ".join(f"`{k}`: {v}" for k, v in SCHEME_LABELS.items() if k in set(vt["scheme"]))
    g = vt[(vt["scheme"] == head) & (vt["predictors"] == "grid")].set_index("model")
    sentence = ""
    if {"zoned", "unified", "zone_choice"} <= set(g.index):
        sentence = (f"Headline ({SCHEME_LABELS.get(head, head)}), grid predictors: zoned R2 "
                    f"{g.loc['zoned', 'r2']:.2f}, unified {g.loc['unified', 'r2']:.2f}, evidence-"
                    f"chosen zone-aware {g.loc['zone_choice', 'r2']:.2f}"
                    + (f", zone as a feature {g.loc['zone_feature', 'r2']:.2f}"
                       if "zone_feature" in g.index else "") + " (RMSE "
                    f"{g.loc['zoned', 'rmse']:.0f}, {g.loc['unified', 'rmse']:.0f}, "
                    f"{g.loc['zone_choice', 'rmse']:.0f} {RH_UNITS}).")
        kf = vt[(vt["scheme"] == "record_kfold") & (vt["predictors"] == "grid")
                & (vt["model"] == "unified")]
        if len(kf):
            sentence += (f" The same unified forest scores R2 {kf['r2'].item():.2f} under "
                         "record-level k-fold, the scheme most papers report: records of one site "
                         "or location then sit on both sides of a split.")
    sections.append((
        f"Validation: three schemes (headline: {head})",
        f"{labels}. `zone_choice`: per zone, the zone's own forest or the unified forest, chosen "
        "by inner CV on the training folds; `zoned` and `unified` predictions come from the same "
        "fits; `zone_feature`: one forest with zone membership as predictors. `grid`: static grid "
        "predictors (the map model)"
        + ("; `site`: plus gsbe statistics at the sites (headline scheme only, to fit the "
           "compute budget)" if cfg_v.site_set else "; the `site` set (plus gsbe statistics at "
           "the sites) was not validated in this run (validation.site_set: false)")
        + ". `n_groups`: sites (record_kfold, loso) or locations (lolo). "
        "`metrics/validation_schemes.csv`.\n\n" + sentence + "\n\n"
        + markdown_table(wide) + "\n\n" + markdown_table(vt)))

    # ---- zone choice
    dec = r.validation.decisions
    zc_text = ("Decisions of the zone-choice model fitted on all locations "
               "(`metrics/zone_choice_decisions.csv`):\n\n" + markdown_table(r.final_c.decisions_))
    if len(g) and {"zone_choice", "unified"} <= set(g.index) and \
            g.loc["zone_choice", "r2"] < g.loc["unified", "r2"]:
        d = dec[(dec["scheme"] == head) & (dec["predictors"] == "grid")]
        summ = d.groupby("zone").agg(folds=("fold", "nunique"),
                                     chose_zone=("choice", lambda c: int((c == "zone").sum())),
                                     median_inner_mse_zone=("inner_mse_zone", "median"),
                                     median_inner_mse_unified=("inner_mse_unified", "median"),
                                     median_groups=("n_groups", "median")).reset_index()
        zc_text += (f"\n\nUnder {head} the zone-aware model's R2 "
                    f"({g.loc['zone_choice', 'r2']:.3f}) is below the unified forest's "
                    f"({g.loc['unified', 'r2']:.3f}). The inner-CV decisions explain it: in the "
                    "outer folds below, a zone forest was chosen wherever its inner error on the "
                    "training locations was lower, and these small inner samples do not carry "
                    "over to held-out locations (`metrics/zone_choice_fold_decisions.csv`):\n\n"
                    + markdown_table(summ, floatfmt=".4g"))
    sections.append(("Zoning chosen by evidence", zc_text))
    s_txt = (f"Pooled held-out predictions ({head}), overall and per zone.\n\n"
             + markdown_table(r.side) + "\n\n"
             + markdown_table(r.skill[["predictors", "model", "group", "n", "n_sites", "r2",
                                       "rmse", "bias"]]))
    sections.append((f"Zoned vs unified per zone ({head})", s_txt))
    if len(r.ksel):
        sections.append(("Choosing k", "Location-level zone factors; silhouette and "
                         "Calinski-Harabasz: higher is better.\n\n" + markdown_table(r.ksel)))
    t2 = r.t2
    sig = t2[t2["significant"]]
    sections.append(("Zone differences (Tamhane's T2)",
                     f"{len(sig)} of {len(t2)} factor x zone-pair comparisons differ at "
                     "family-wise 5% (Welch t, Sidak-adjusted; `metrics/tamhane_t2.csv`).\n\n"
                     + markdown_table(t2[["factor", "group_a", "group_b", "mean_a", "mean_b", "p_adj"]],
                                      floatfmt=".3g")))
    ti = r.table_i.reset_index().astype(object).where(r.table_i.reset_index().notna(), "")
    sections.append(("Chosen variables (layout of Zhu et al. 2024, Table I; context)",
                     "Importance rank (1 = most important) of each chosen predictor, final grid "
                     "models on all locations.\n\n" + markdown_table(ti)
                     + ("\n\nNotes: " + "; ".join(final.notes_) if final.notes_ else "")))

    # ---- global total
    tot = r.total
    if tot is not None and len(tot.table):
        tt = tot.table
        show = tt[["coverage", "area_km2", "area_share", "total_pg", "boot_mean_pg",
                   "boot_q05_pg", "boot_q95_pg", "resid_sd_pg", "q05_pg", "q95_pg"]]
        allrow = tt[tt["coverage"] == "all"].iloc[0]
        comp = tt[tt["coverage"] == "complete"].iloc[0]
        cov_all = tot.coverage[tot.coverage["coverage"] == "all"]
        left = cov_all[cov_all["group"] == "all land"].iloc[0]
        method = (
            f"Map model: the zoned forest on grid predictors. Total = sum of RH x spherical pixel "
            f"area x land fraction over land pixels at {allrow['resolution_deg']:g} deg. "
            f"Coverage levels: `complete` = land pixels with every predictor; `filled` = plus "
            f"pixels whose missing predictors take the nearest valid value within "
            f"{cfg_v.gap_fill_km:g} km (flag layer `gap_filled` in `maps/rh_total_*.zarr`); `all` "
            f"= plus the remaining land, predicted by a unified forest without the missing "
            f"predictors ({tot.variant_predictors and ', '.join(tot.variant_predictors) or 'none'}). "
            f"Uncertainty: (1) bootstrap over locations, {int(allrow['n_boot'])} refits of the whole "
            "model (zones, selection, forests) on locations drawn with replacement: mean and 5-95% "
            "of the totals (`boot_*`); (2) held-out residual error: per-pixel residual SD from the "
            f"{head} residuals of the map model in 5 bins of the predicted value "
            "(`metrics/residual_sd_bins.csv`), fully correlated within "
            f"{cfg_v.residual_block_deg:g} deg blocks and independent between blocks "
            "(`resid_sd_pg`); `q05_pg`-`q95_pg` combine both (bootstrap mean -/+ 1.645 x "
            "sqrt(boot SD^2 + resid SD^2)).")
        spread = ""
        if len(r.forest_spread):
            fs = r.forest_spread
            spread = ("\n\nForest spread (map layer `rh_sd`; not an uncertainty of the total): "
                      + "; ".join(f"{row.resolution_deg:g} deg: 5-95% of per-tree totals "
                                  f"{row.total_q05_pg:.1f}-{row.total_q95_pg:.1f} Pg C yr-1"
                                  for row in fs.itertuples()) + ".")
        skill_note = ""
        if "zoned" in g.index:
            skill_note = (f" The map model's held-out R2 ({head}) is {g.loc['zoned', 'r2']:.2f}, "
                          "so the spatial pattern is weakly constrained by the SRDB sites.")
        pub = published_table()
        sentences = []
        for lvl, row in (("complete", comp), ("all", allrow)):
            centre = row["boot_mean_pg"] if np.isfinite(row["boot_mean_pg"]) else row["total_pg"]
            text, rel_l = compare_with_published(centre, row["q05_pg"], row["q95_pg"], pub)
            sentences.append(f"`{lvl}` ({row['area_km2'] / 1e6:.0f} million km2): {text}")
            if lvl == "complete":
                rel = rel_l.rename(columns={"relation": "relation (complete)"})
            else:
                rel["relation (all)"] = rel_l["relation"].to_numpy()
        sentence = "\n\n".join(sentences)
        rel_show = rel[["study", "value", "low", "high", "period", "method",
                        "relation (complete)", "relation (all)", "verified", "reference"]]
        sections.append((
            "Global annual RH total",
            method + "\n\n" + markdown_table(show, floatfmt=".4g")
            + f"\n\nAll land is {allrow['land_area_km2'] / 1e6:.1f} million km2. The total over "
            f"pixels with every predictor covers {comp['area_km2'] / 1e6:.1f} million km2 "
            f"({comp['area_share']:.0%}); with the fill and the variant "
            f"{allrow['area_km2'] / 1e6:.1f} million km2 ({allrow['area_share']:.0%}). "
            f"Permanent snow and ice (MODIS IGBP {PERMANENT_ICE}) without every predictor is "
            f"neither filled nor predicted by the variant: "
            f"{allrow['ice_left_out_km2'] / 1e6:.1f} million km2 left out, whose RH is taken as "
            "negligible. The fill and the variant extrapolate into arid and polar land that no "
            "SRDB site samples; read `filled` and `all` with that in mind. Left out in all "
            f"(permanent ice, or no value for the variant's predictors): "
            f"{(left['land_km2'] - left['predicted_km2']) / 1e6:.2f} million km2, by Köppen group "
            "below (`metrics/total_coverage.csv`).\n\n"
            + markdown_table(cov_all, floatfmt=".4g") + spread
            + "\n\nPublished global RH estimates (Pg C yr-1; context, not a reproduction: the "
            "data, drivers and periods differ). `relation`: the total's 5-95% interval lies "
            "wholly above or below the estimate's reported range, or overlaps it.\n\n"
            + markdown_table(rel_show) + "\n\n" + sentence + skill_note))
    if r.cov_df is not None and len(r.cov_df):
        sections.append(("Map coverage (map layers)",
                         "Land area with every predictor, per Köppen main group, of the written "
                         "maps (`metrics/map_coverage.csv`).\n\n"
                         + markdown_table(r.cov_df, floatfmt=".4g")))
    if r.applicability is not None and len(r.applicability):
        lines = [f"- {a.resolution_deg:g} deg: {a.share_of_mapped_land_outside_aoa:.1%} of the "
                 f"mapped land area and {a.share_of_total_outside_aoa:.1%} of the mapped RH total "
                 f"lie outside it (DI above the threshold {a.threshold_di:.3g})"
                 for a in r.applicability.itertuples()]
        sections.append((
            "Area of applicability",
            "Meyer and Pebesma (2021), as CAST's `trainDI`/`aoa`: `di` in the map store is the "
            "importance-weighted, standardised distance of a pixel's predictors to the nearest "
            "training record, divided by the mean distance between training records; `aoa` is 0 "
            "where `di` exceeds the threshold taken from the cross-validated training DI "
            "(`metrics/applicability.csv`).\n\n" + "\n".join(lines)))
    figs_list = sorted(p.name for p in ctx.figures.glob("*.png"))
    sections.append(("Figures", "\n".join(f"![{n}](figures/{n})" for n in figs_list)))
    report.write_report(ctx.out / "report.md", f"{recipe.name}: SRDB annual RH, zoned random forests",
                        sections, provenance={"recipe": "recipe.yaml", "data": "SRDB (Jian et al. 2021, "
                                              "MIT), gsbe (MIT), static grids (see PROVENANCE.md)"})


