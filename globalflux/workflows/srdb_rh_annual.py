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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import DataError

log = logging.getLogger("globalflux.workflows.srdb_rh_annual")

SECTIONS = ("sites", "cube", "zones", "forest")

#: Zone factors by default: the static analogues of Zhu et al.'s TEM, PRE, NDVI, LSWI, DEM, SOC
#: (LSWI has no static grid here; the NDVI minimum stands in for the dry-season state).
DEFAULT_FACTORS = ("mat", "map", "ndvi_max", "ndvi_min", "elevation", "soc")
#: Static grid predictors (all exist as grids, so a map can use them).
GRID_PREDICTORS = ("land_cover", "koppen", "ndvi_max", "ndvi_min", "elevation", "mat", "map", "soc")
#: gsbe annual predictors at the sites (MODIS GPP 8-day, ERA5-Land monthly).
GSBE_PREDICTORS = ("gpp_mean", "gpp_max", "gpp_min", "t2m_mean", "stl1_mean", "swvl1_mean",
                   "swvl1_min", "tp_sum", "lai_hv_mean", "lai_lv_mean")
RH_UNITS = "g C m-2 yr-1"
EARTH_RADIUS_M = 6371007.181  # the MODIS sphere

#: Span of the published totals below (Pg C yr-1), for the report's comparison sentence.
PUBLISHED_SPAN = (34.0, 51.0)
#: Published global RH totals quoted in the report (approximate values; see the references).
PUBLISHED = [
    ("Hashimoto et al. (2015), Biogeosciences 12, 4121-4132 (global soil respiration model "
     "calibrated on SRDB)", "approximately 51 Pg C yr-1"),
    ("Konings et al. (2019), Biogeosciences 16, 3059-3069 (satellite-driven estimates)",
     "approximately 34-48 Pg C yr-1 across their estimates"),
    ("Yao et al. (2021) (global data-driven RH dataset from SRDB by random forest)",
     "approximately 46.8 Pg C yr-1"),
]


# ------------------------------------------------------------------------------- data
def _static_cube(grids_root: str | Path, resolution: float, layers=None, land_threshold=0.5):
    from ..cube import static_cube
    from ..grid import GridSpec
    from ..io.static_grids import open_static_sources

    names = None
    if layers is not None:
        names = {n: True for n in layers}
    sources = open_static_sources(grids_root, names=names)
    return static_cube(sources, GridSpec.global_latlon(float(resolution)),
                       land_threshold=land_threshold)


def srdb_site_table(srdb_path, grids_root, *, resolution: float = 0.5,
                    min_midyear: float | None = 2000.5, gsbe_path=None,
                    extraction: str = "window", window: int = 3, cube=None,
                    methods=("IRGA", "Gas chromatography"),
                    quality_flags=("Q10", "Q11", "Q12", "Q13", "Q14")):
    """SRDB RH records with static-cube (and gsbe) predictors.

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
        cube = _static_cube(grids_root, resolution)
    pts = srdb.sites[["site_id", "lat", "lon"]]
    samp = sample_points(cube, pts, method=extraction, window=window,
                         variables=[v for v in GRID_PREDICTORS + ("land_fraction",) if v in cube])
    samp = samp.drop(columns=["lat", "lon", "pixel_x", "pixel_y"], errors="ignore")
    for c in ("land_cover", "koppen"):
        if c in samp:  # fill codes (255 no data, 0 no class) are not classes
            samp[c] = samp[c].astype("float64").where(~samp[c].isin([255, 0]))
    sites = srdb.sites.merge(samp, on="site_id", how="left")
    records = rec.merge(samp, on="site_id", how="left")
    return sites, records


# ------------------------------------------------------------------------------- models
def _validate(cfg_forest, model, X, y, groups, lat, lon):
    from ..validation import cross_predict, loso, spatial_block_folds

    if cfg_forest.validation == "loso":
        return loso(model, X, y, groups, n_jobs=cfg_forest.n_jobs, with_std=True)
    folds = spatial_block_folds(lat, lon, cfg_forest.block_deg, n_folds=cfg_forest.n_block_folds,
                                random_state=cfg_forest.seed)
    return cross_predict(model, X, y, groups, folds, n_jobs=cfg_forest.n_jobs, with_std=True)


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


def pixel_area_m2(cube: xr.Dataset) -> xr.DataArray:
    """Area of each pixel on a sphere (m2): R^2 dlon (sin(lat_n) - sin(lat_s))."""
    y = cube["y"].values
    x = cube["x"].values
    dy = abs(float(y[1] - y[0])) if len(y) > 1 else 1.0
    dx = abs(float(x[1] - x[0])) if len(x) > 1 else 1.0
    lat_n = np.deg2rad(np.clip(y + dy / 2, -90, 90))
    lat_s = np.deg2rad(np.clip(y - dy / 2, -90, 90))
    band = EARTH_RADIUS_M**2 * np.deg2rad(dx) * (np.sin(lat_n) - np.sin(lat_s))
    return xr.DataArray(band, dims=("y",), coords={"y": cube["y"]}, name="pixel_area",
                        attrs={"units": "m2"})


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


KOPPEN_GROUPS = {1: "A tropical", 2: "B arid", 3: "C temperate", 4: "D cold", 5: "E polar"}


def map_coverage(cube: xr.Dataset, features: list[str]) -> pd.DataFrame:
    """Land area (km2) and the part with every predictor present, per Köppen main group.

    Shows where the map (and its total) has no value: land pixels lacking a predictor.
    """
    w = (pixel_area_m2(cube) * cube["land_fraction"].astype("float64")).where(cube["land_mask"])
    ok = xr.ones_like(cube["land_mask"], dtype=bool)
    for f in features:
        ok = ok & np.isfinite(cube[f].astype("float32"))
    kg = cube["koppen"].astype("int16") if "koppen" in cube else xr.zeros_like(w, dtype="int16")
    frame = pd.DataFrame({"koppen": np.asarray(kg.values).ravel(),
                          "w": np.asarray(w.values).ravel(),
                          "ok": np.asarray(ok.values).ravel()})
    frame = frame[np.isfinite(frame["w"])]
    frame["wp"] = frame["w"].where(frame["ok"], 0.0)
    out = frame.groupby("koppen").agg(land_km2=("w", "sum"), predicted_km2=("wp", "sum")) / 1e6
    out = out.reset_index()
    out.insert(1, "group", [KOPPEN_GROUPS.get(int(k), "none (0)") for k in out["koppen"]])
    total = pd.DataFrame([{"koppen": -1, "group": "all land",
                           "land_km2": out["land_km2"].sum(),
                           "predicted_km2": out["predicted_km2"].sum()}])
    out = pd.concat([out, total], ignore_index=True)
    out["predicted_share"] = out["predicted_km2"] / out["land_km2"]
    return out


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


def _zone_factors(cfg_z, allowed: Sequence[str]) -> list[str]:
    """``zones.factors`` (default: DEFAULT_FACTORS), each checked to be one of ``allowed``."""
    factors = list(cfg_z.factors) or list(DEFAULT_FACTORS)
    bad = [f for f in factors if f not in allowed]
    if bad:
        raise DataError(f"unknown zone factor(s) {bad}", where="zones.factors",
                        fix=f"Use static grid layers: {', '.join(allowed)}.")
    return factors


# ------------------------------------------------------------------------------- run
def run(recipe, ctx) -> None:
    """Run the recipe (see the module docstring)."""
    from .. import report
    from ..mapping import map_cube, map_to_store, mapping_chunks
    from ..provenance import provenance_attrs
    from ..validation import score
    from ..zones import k_selection_report, tamhane_t2

    cfg_sites, cfg_cube, cfg_z, cfg_f = recipe.sites, recipe.cube, recipe.zones, recipe.forest
    if cfg_sites.source not in ("srdb", "gsbe"):
        raise DataError(f"sites.source is {cfg_sites.source!r}", where="sites.source",
                        fix="The srdb_rh_annual workflow reads SRDB: use 'srdb' (or 'gsbe').")
    if cfg_cube.source != "static":
        raise DataError(f"cube.source is {cfg_cube.source!r}", where="cube.source",
                        fix="The srdb_rh_annual workflow samples the real static cube: use 'static'.")
    factors = _zone_factors(cfg_z, GRID_PREDICTORS)
    min_mid = cfg_sites.srdb_min_midyear
    res0 = float(cfg_cube.grid.resolution)

    with ctx.step(f"SRDB RH records, gsbe predictors and the static cube at {res0} deg"):
        cube0 = _static_cube(cfg_cube.static_root, res0, land_threshold=cfg_cube.land_threshold)
        sites, records = srdb_site_table(
            cfg_sites.srdb_path, cfg_cube.static_root, min_midyear=min_mid,
            gsbe_path=cfg_sites.gsbe_path, extraction=cfg_cube.extraction, window=cfg_cube.window,
            cube=cube0, methods=cfg_sites.srdb_methods, quality_flags=cfg_sites.srdb_exclude_flags)
        n0 = len(records)
        keep = records[factors].notna().all(axis=1) & records["Rh_annual"].notna()
        dropped = records.loc[~keep, "site_id"].nunique()
        records = records.loc[keep].reset_index(drop=True)
        log.info("%d SRDB RH records at %d sites; %d records at %d sites without zone factors dropped",
                 len(records), records["site_id"].nunique(), n0 - len(records), dropped)
        if records["site_id"].nunique() < max(cfg_z.n_zones * 2, 4):
            raise DataError(f"{records['site_id'].nunique()} sites with RH and zone factors",
                            where=cfg_sites.srdb_path, fix="Relax sites.min_year or use fewer zones.")
        records.to_csv(ctx.metrics / "training_table.csv", index=False)

    y = records["Rh_annual"].to_numpy(dtype="float64")
    groups = records["site_id"].astype(str).to_numpy()
    site_rows = records.groupby("site_id", sort=True)[factors + ["lat", "lon"]].mean()
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

    results: dict[str, dict[str, pd.DataFrame]] = {}
    lat = records["lat"].to_numpy(dtype="float64")
    lon = records["lon"].to_numpy(dtype="float64")
    for set_name, preds in sets.items():
        X = records[list(dict.fromkeys(preds + factors))]
        for kind in ("zoned", "unified"):
            model = (cfg_f.zoned(factors, cfg_z.classifier(), predictors=preds) if kind == "zoned"
                     else cfg_f.unified(predictors=preds))
            with ctx.step(f"{cfg_f.validation}: {kind} forest, {set_name} predictors "
                          f"({records['site_id'].nunique()} sites)"):
                pred = _validate(cfg_f, model, X, y, groups, lat, lon)
            pred.to_csv(ctx.metrics / f"pred_{set_name}_{kind}.csv")
            results.setdefault(set_name, {})[kind] = pred

    # skill tables
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

    with ctx.step("final zoned (grid predictors) and unified forests on all sites"):
        Xg = records[list(dict.fromkeys(sets["grid"] + factors))]
        final = cfg_f.zoned(factors, cfg_z.classifier(), predictors=sets["grid"]).fit(Xg, y, groups=groups)
        final_u = cfg_f.unified(predictors=sets["grid"]).fit(Xg, y, groups=groups)
        Xs = records[list(dict.fromkeys(sets["site"] + factors))]
        final_s = cfg_f.zoned(factors, cfg_z.classifier(), predictors=sets["site"]).fit(Xs, y, groups=groups)
        table_i = _table_i(final, final_u)
        table_i.to_csv(ctx.metrics / "selected_variables_grid.csv")
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
            cube = cube0 if float(res) == res0 else _static_cube(
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
        totals_df.to_csv(ctx.metrics / "global_total.csv", index=False)
        cov_df.to_csv(ctx.metrics / "map_coverage.csv", index=False)

    with ctx.step("figures and report"):
        _report(ctx, recipe, records, sites, factors, ksel, t2, zc, skill, side, results, final,
                final_s, final_u, table_i, totals_df, maps_done, report, cov_df)


def _report(ctx, recipe, records, sites, factors, ksel, t2, zc, skill, side, results, final,
            final_s, final_u, table_i, totals_df, maps_done, report, cov_df=None) -> None:
    from ..report import markdown_table

    dpi = recipe.report.dpi
    figs = recipe.report.figures
    cfg_f, cfg_z = recipe.forest, recipe.zones
    n_sites = records["site_id"].nunique()
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
        _importance_png(final, final_u, ctx.figures / "importance_grid.png", dpi)
        _importance_png(final_s, None, ctx.figures / "importance_site.png", dpi)
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

    body = [
        f"SRDB annual heterotrophic respiration (Rh_annual, {RH_UNITS}): {len(records)} records at "
        f"{n_sites} sites (filters of `globalflux.io.srdb.read_srdb`; Study_midyear >= "
        f"{recipe.sites.srdb_min_midyear}). gsbe MODIS GPP / ERA5-Land annual predictors present for "
        f"{int((records.get('gsbe_years', pd.Series(0)) > 0).sum())} records.",
        f"Zone factors (per site, static cube at {recipe.cube.grid.resolution} deg, extraction "
        f"`{recipe.cube.extraction}`): {', '.join(factors)}. PCA kept {zc.n_components_} components "
        f"(>= {cfg_z.variance:.0%} of variance); k = {cfg_z.n_zones} zones (PSO k-means, seed "
        f"{cfg_z.seed}). Sites per zone on all data: "
        + ", ".join(f"zone {z}: {int((zc.labels_ == z).sum())}" for z in range(cfg_z.n_zones)) + ".",
        f"Validation: {cfg_f.validation} (every step — scaler, PCA, zones, feature selection, forest — "
        f"refitted in each fold on the training sites only); elimination inner CV: "
        f"{'leave-one-site-out' if cfg_f.inner_folds is None else f'{cfg_f.inner_folds}-fold grouped by site'}; "
        f"{cfg_f.n_estimators} trees, max_features {cfg_f.max_features:.3g}.",
    ]
    sections = [("Data and set-up", "\n\n".join(body))]
    s = ("Pooled held-out predictions, overall. `grid`: static grid predictors only (the map "
         "model); `site`: grid predictors plus gsbe GPP/ERA5-Land annual statistics at the sites.\n\n"
         + markdown_table(side) + "\n\nPer zone:\n\n"
         + markdown_table(skill[["predictors", "model", "group", "n", "n_sites", "r2", "rmse", "bias"]]))
    sections.append(("Zoned vs unified (" + cfg_f.validation + ")", s))
    if len(ksel):
        sections.append(("Choosing k", "Site-level zone factors; silhouette and Calinski-Harabasz: "
                         "higher is better.\n\n" + markdown_table(ksel)))
    sig = t2[t2["significant"]]
    sections.append(("Zone differences (Tamhane's T2)",
                     f"{len(sig)} of {len(t2)} factor x zone-pair comparisons differ at "
                     "family-wise 5% (Welch t, Sidak-adjusted; `metrics/tamhane_t2.csv`).\n\n"
                     + markdown_table(t2[["factor", "group_a", "group_b", "mean_a", "mean_b", "p_adj"]],
                                      floatfmt=".3g")))
    ti = table_i.reset_index().astype(object).where(table_i.reset_index().notna(), "")
    sections.append(("Chosen variables (like Zhu et al. 2024, Table I)",
                     "Importance rank (1 = most important) of each chosen predictor, final grid "
                     "models on all sites.\n\n" + markdown_table(ti)
                     + ("\n\nNotes: " + "; ".join(final.notes_) if final.notes_ else "")))
    if len(totals_df):
        t = totals_df[["resolution_deg", "total_pg", "total_sd_pg", "total_q05_pg", "total_q95_pg",
                       "area_predicted_km2", "land_area_km2", "total_from_mean_map_pg"]]
        pub = "\n".join(f"- {ref}: {val}" for ref, val in PUBLISHED)
        sections.append((
            "Global annual RH map and total",
            "Zoned forest with grid predictors, refitted on all sites, applied to every land pixel "
            "(`maps/rh_*.zarr`, COGs in `maps/cog/`). Total = sum of RH x spherical pixel area x "
            "land fraction over land pixels. Uncertainty: tree t of every zone forest is one "
            "realisation of the map; SD and 5-95% of the realisations' totals. This is the "
            "forest's sampling spread, not a full uncertainty (no input or structural error).\n\n"
            + markdown_table(t, floatfmt=".4g")
            + "\n\n`area_predicted_km2`: land area (pixel area x land fraction) where every "
            "predictor exists, i.e. the area the total covers; `land_area_km2`: all land pixels of "
            "the mask. MAT, MAP and SOC exist at 0.5 deg only, so the 0.05 deg map repeats them "
            "within each 0.5 deg cell."
            + ("\n\nWhere the map has values (land area with every predictor, by Köppen main "
               "group; the MAT/MAP/SOC grid leaves out most arid and polar land, whose RH is "
               "low but not zero, so the total covers less than all land):\n\n"
               + markdown_table(cov_df, floatfmt=".4g") if cov_df is not None and len(cov_df) else "")
            + "\n\nPublished global RH estimates for comparison (Pg C "
            "yr-1):\n\n" + pub + "\n\n" + _comparison(totals_df, side, cfg_f.validation)
            + " The band above is the forest's own spread; it does not include the error of "
            f"extrapolating from {records['site_id'].nunique()} SRDB sites to every land pixel."))
    figs_list = sorted(p.name for p in ctx.figures.glob("*.png"))
    sections.append(("Figures", "\n".join(f"![{n}](figures/{n})" for n in figs_list)))
    report.write_report(ctx.out / "report.md", f"{recipe.name}: SRDB annual RH, zoned random forests",
                        sections, provenance={"recipe": "recipe.yaml", "data": "SRDB (Jian et al. 2021, "
                                              "MIT), gsbe (MIT), static grids (see PROVENANCE.md)"})


def _comparison(totals_df: pd.DataFrame, side: pd.DataFrame, validation: str = "loso") -> str:
    """A sentence placing the computed total against the published span and the map skill."""
    lo, hi = PUBLISHED_SPAN
    parts = []
    for row in totals_df.itertuples():
        where = "above" if row.total_pg > hi else ("below" if row.total_pg < lo else "within")
        parts.append(f"At {row.resolution_deg:g} deg the total ({row.total_pg:.1f} Pg C yr-1, "
                     f"5-95% of trees {row.total_q05_pg:.1f}-{row.total_q95_pg:.1f}) is {where} the "
                     f"span of these estimates (approximately {lo:g}-{hi:g}), although it covers "
                     f"only {row.area_predicted_km2 / 1e6:.0f} million km2 of land.")
    grid = side[side["predictors"] == "grid"]
    if len(grid):
        parts.append(f"The map model's held-out R2 ({validation}) is {grid['zoned r2'].item():.2f} "
                     f"(unified forest: {grid['unified r2'].item():.2f}), so the map's spatial "
                     "pattern is weakly constrained by the SRDB sites.")
    return " ".join(parts)


def _table_i(zoned, unified) -> pd.DataFrame:
    """Zhu et al. (2024) Table I layout: candidates x (zones, unified), importance ranks."""
    from ..models.forest import selection_table

    imps = {f"zone {z}": imp for z, imp in zoned.feature_importances_.items()}
    imps["unified"] = unified.feature_importances_
    return selection_table(imps, zoned.predictors_)


def _importance_png(zoned, unified, path: Path, dpi: int) -> None:
    from ..report import _plt

    plt = _plt()
    models = {f"zone {z}": imp for z, imp in zoned.feature_importances_.items()}
    if unified is not None:
        models["unified"] = unified.feature_importances_
    fig, axes = plt.subplots(1, len(models), figsize=(3.0 * len(models), 3.6), squeeze=False)
    for ax, (name, imp) in zip(axes[0], models.items(), strict=True):
        imp = imp.sort_values()
        ax.barh(list(imp.index), imp.to_numpy())
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle("impurity importance of chosen predictors", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
