"""The demo: zoned random forests for heterotrophic respiration on the synthetic world.

Stages (each a library call; this module only wires them and writes through the run context):

1. :func:`globalflux.testing.synthetic.make_world` builds the seeded world (predictors, zone
   factors, land mask, sites, and the answer key).
2. The predictor cube is written as a chunked Zarr store ``OUT/maps/predictors.zarr``
   (CF attributes, CRS, provenance; resumable) and reopened lazily: every later step reads it.
3. The sites' training table is extracted from the cube at the site coordinates and joined with
   the site observations on the MODIS 8-day periods.
4. Zones: a :class:`globalflux.zones.ZoneClassifier` (standardise, PCA, PSO k-means) on the six
   zone factors, inside the zoned forest; its zones are labelled on every land pixel and
   compared with the true zones (adjusted Rand index).
5. A random forest per zone and one unified forest on the same predictors, both validated
   leave-one-site-out (:func:`globalflux.validation.loso`).
6. The zoned forest maps RH over every land pixel and 8-day step with Dask into
   ``OUT/maps/rh.zarr`` (block-wise, resumable) and one COG per step in ``OUT/maps/cog/``.
7. Figures, ``OUT/metrics/*.csv`` and ``OUT/report.md``; everything says SYNTHETIC.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import DataError, GridError

__all__ = ["SECTIONS", "run", "training_table", "crop_to_bbox"]

SECTIONS = ("synthetic", "cube", "zones", "forest", "mapping", "validation")

log = logging.getLogger("globalflux")


# ------------------------------------------------------------------------------ stage helpers


def crop_to_bbox(ds: xr.Dataset, bbox: tuple[float, float, float, float] | None,
                 where: str = "synthetic.bbox") -> xr.Dataset:
    """The part of ``ds`` (x = lon, y = lat descending) inside ``bbox`` = (W, S, E, N).

    Raises
    ------
    GridError
        If no pixel centre lies inside the bbox.
    """
    if bbox is None:
        return ds
    w, s, e, n = bbox
    out = ds.sel(x=slice(w, e), y=slice(n, s))
    if out.sizes["x"] == 0 or out.sizes["y"] == 0:
        x, y = ds["x"].values, ds["y"].values
        raise GridError(
            f"bbox {list(bbox)} holds no pixel of the world "
            f"[{x.min():.4f}, {y.min():.4f}, {x.max():.4f}, {y.max():.4f}] (pixel centres)",
            where=where, fix="Give a [west, south, east, north] that covers at least one pixel.")
    return out


def training_table(cube: xr.Dataset, long: pd.DataFrame, sites: pd.DataFrame,
                   predictors: list[str], factors: list[str], *, method: str = "nearest",
                   window: int = 3) -> pd.DataFrame:
    """Join site observations with the cube at the sites: one row per site and 8-day period.

    Parameters
    ----------
    cube
        Predictor cube (time, y, x) with the predictors and the static zone factors.
    long
        Canonical long table (``site_id, lat, lon, igbp, time, variable, value, units, n``);
        rows with ``variable == "Rh"`` are used.
    sites
        Site table with ``site_id, lat, lon``.
    method, window
        Extraction at the sites (:func:`globalflux.extract.sample_points`): the pixel holding
        the site, or the mean of a ``window`` x ``window`` pixel window.

    Returns
    -------
    DataFrame with ``site_id, time, rh, n`` and every predictor and factor column; rows whose
    predictors are missing (sea pixel, gap) are dropped.
    """
    from ..extract import join_sites, sample_points

    names = list(predictors) + list(factors)
    obs = long[long["variable"] == "Rh"]
    samples = sample_points(cube[names], sites[["site_id", "lat", "lon"]], method=method,
                            window=window)
    table = join_sites(samples, obs, on="8day")
    return _normalise_join(table, predictors, factors)


def _normalise_join(table: pd.DataFrame, predictors, factors) -> pd.DataFrame:
    """The joined table as ``site_id, time, rh, n, <predictors>, <factors>``."""
    if "Rh" in table.columns and "rh" not in table.columns:
        table = table.rename(columns={"Rh": "rh"})
    elif "value" in table.columns and "rh" not in table.columns:
        table = table.rename(columns={"value": "rh"})
    if "n_Rh" in table.columns and "n" not in table.columns:
        table = table.rename(columns={"n_Rh": "n"})
    cols = ["site_id", "time", "rh"] + (["n"] if "n" in table.columns else [])
    cols += [c for c in list(predictors) + list(factors) if c not in cols]
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise DataError(f"training table lacks columns {missing}", where="training table",
                        fix=f"Columns present: {list(table.columns)}.")
    table = table[cols].dropna(subset=["rh"] + list(predictors) + list(factors))
    if table.empty:
        raise DataError("no site observation has predictors", where="training table",
                        fix="Check that the sites lie on land pixels of the cube.")
    return table.reset_index(drop=True)


class _Timer:
    """Step timings for the report (wall seconds)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.rows: list[tuple[str, float]] = []

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        t = time.perf_counter()
        with self.ctx.step(what):
            yield
        self.rows.append((what, time.perf_counter() - t))

    def table(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=["step", "seconds"])
        return pd.concat([df, pd.DataFrame([("total", float(df["seconds"].sum()))],
                                           columns=df.columns)], ignore_index=True)


# ---------------------------------------------------------------------------------------- run


def run(recipe, ctx) -> None:
    """Run the demo into ``ctx.out`` (see the module docstring for the stages)."""
    from ..applicability import AreaOfApplicability
    from ..io.model_package import input_statistics, load_model, table_sha256, write_package
    from ..mapping import map_cube, map_to_store
    from ..metrics import summary
    from ..provenance import provenance_attrs
    from ..validation import spatial_block_folds
    from ..testing.synthetic import FACTORS, PREDICTORS, RH_UNITS, make_world

    timer = _Timer(ctx)
    cfg_syn, cfg_cube, cfg_zones = recipe.synthetic, recipe.cube, recipe.zones
    cfg_forest, cfg_map, cfg_rep = recipe.forest, recipe.mapping, recipe.report
    if cfg_cube.source != "synthetic":
        raise DataError(f"cube.source is {cfg_cube.source!r}", where="cube.source",
                        fix="The synthetic_zoned_rh workflow builds its own cube: use 'synthetic'.")
    attrs = provenance_attrs(recipe=recipe, synthetic=True)
    predictors = list(PREDICTORS)
    factors = list(cfg_zones.factors) or list(FACTORS)
    unknown = [f for f in factors if f not in FACTORS]
    if unknown:
        raise DataError(f"zone factor(s) {unknown} are not in the synthetic cube",
                        where="zones.factors",
                        fix=f"Choose among {', '.join(FACTORS)} (or leave it empty for all six).")

    site_locations = None
    if cfg_syn.sites_file:
        from ..io.tables import read_table

        site_locations = read_table(cfg_syn.sites_file)  # a missing file names itself

    with timer.step("build the synthetic world"):
        try:
            world = make_world(cfg_syn, site_locations=site_locations)
        except DataError as exc:
            if site_locations is None:
                raise
            raise DataError(exc.message, where=f"synthetic.sites_file {cfg_syn.sites_file}",
                            fix=exc.fix) from None
        if world.sites.attrs.get("dropped_sites"):
            log.info("%d site(s) of %s are off the world's land and were dropped: %s",
                     len(world.sites.attrs["dropped_sites"]), cfg_syn.sites_file,
                     ", ".join(world.sites.attrs["dropped_sites"][:10]))
        log.info("world: %dx%d pixels (%d land), %d periods, %d sites, %d observations",
                 world.config.ny, world.config.nx, int(world.cube["land_mask"].sum()),
                 world.cube.sizes["time"], len(world.sites), len(world.long))

    with timer.step("write the predictor cube (Zarr)"):
        if getattr(cfg_cube, "chunking", "fixed") == "auto":
            from ..cube import choose_chunks

            chunks = choose_chunks(dict(world.cube.sizes), 4, target_mb=cfg_cube.chunk_mb)
        else:
            chunks = {"time": cfg_cube.chunk_time if cfg_cube.chunk_time > 0 else -1,
                      "y": cfg_cube.chunk_y, "x": cfg_cube.chunk_x}
        log.info("predictor cube chunks: %s", chunks)
        src = world.cube.chunk(chunks)
        pieces = {name: src[name] for name in src.data_vars}
        cube_path = map_to_store(None, pieces, ctx.maps / "predictors.zarr",
                                 attrs=dict(attrs, title="SYNTHETIC predictor cube"),
                                 resume=ctx.resume, progress=False,
                                 zarr_format=cfg_map.zarr_format)
        cube = _open_store(cube_path)

    with timer.step("extract the sites' training table"):
        table = training_table(cube, world.long, world.sites, predictors, factors,
                               method=cfg_cube.extraction, window=cfg_cube.window)
        table = table.merge(world.sites[["site_id", "zone_true", "lat", "lon"]], on="site_id",
                            how="left")
        log.info("training table: %d rows at %d sites", len(table), table["site_id"].nunique())

    X = table[predictors + factors]
    y = table["rh"].to_numpy(dtype="float64")
    groups = table["site_id"].astype(str).to_numpy()

    cfg_v = recipe.validation
    with timer.step("validation schemes (record k-fold, by site, by location): zoned, unified "
                    "and zone-choice forests"):
        schemes, scheme_preds = _validate_schemes(cfg_zones, cfg_forest, cfg_v, factors,
                                                  predictors, X, y, table)
        schemes.to_csv(ctx.metrics / "validation_schemes.csv", index=False)
    if cfg_forest.validation == "loso" and ("loso", "zoned") in scheme_preds:
        zoned_loso = scheme_preds[("loso", "zoned")]  # the same fits as the schemes table
        unified_loso = scheme_preds[("loso", "unified")]
    else:
        with timer.step(f"{cfg_forest.validation} validation: zoned and unified forests"):
            zoned_loso = _validate(_zoned(cfg_zones, cfg_forest, factors, predictors), X, y,
                                   groups, table, cfg_forest)
            unified_loso = _validate(_unified(cfg_forest, predictors), X, y, groups, table,
                                     cfg_forest)

    with timer.step("fit the final zoned forest"):
        model = _zoned(cfg_zones, cfg_forest, factors, predictors).fit(X, y, groups=groups)

    with timer.step("area of applicability and the model package (model/)"):
        folds = groups if cfg_forest.validation == "loso" else spatial_block_folds(
            table["lat"], table["lon"], cfg_forest.block_deg, n_folds=cfg_forest.n_block_folds,
            random_state=cfg_forest.seed)
        aoa = AreaOfApplicability().fit(X, model.importance_weights(), folds)
        units = {c: cube[c].attrs.get("units") for c in X.columns}
        roles = {c: "zone_factor" for c in factors if c not in predictors}
        zs = summary(y, _aligned(zoned_loso, table, "zoned"))
        write_package(
            ctx.out / "model", model,
            inputs=input_statistics(X, units, roles),
            target={"name": "rh", "units": RH_UNITS,
                    "standard_name": "heterotrophic_respiration_carbon_flux",
                    "long_name": "heterotrophic respiration (zoned RF, SYNTHETIC)"},
            time_step="8-day", applicability=aoa,
            training={"sha256": table_sha256(table[["site_id", "time", "rh"] + list(X.columns)]),
                      "n_rows": int(len(table)), "n_sites": int(table["site_id"].nunique())},
            validation={"scheme": cfg_forest.validation,
                        **{k: v for k, v in zs.items() if k in ("n", "r2", "rmse", "bias")}},
            recipe=recipe, synthetic=True)
        model = load_model(ctx.out / "model")  # map with what was written (verified)
        log.info("model package %s (sha256 %s); AOA threshold DI = %.3f", ctx.out / "model",
                 model.package_.checksum[:12], aoa.threshold_)

    land = cube["land_mask"].astype(bool)
    region = crop_to_bbox(cube, cfg_syn.bbox)
    land_r = region["land_mask"].astype(bool)

    with timer.step("zones over every land pixel and recovery of the true zones"):
        zclf = _zone_classifier_of(model)
        zone = zclf.predict_cube(cube, factors, mask=land)
        zone_map = zone.compute().values
        truth_zone = world.truth["zone_true"].values
        lm = land.values
        from sklearn.metrics import adjusted_rand_score

        ari = float(adjusted_rand_score(truth_zone[lm], zone_map[lm]))
        log.info("zones: adjusted Rand index vs truth on %d land pixels = %.3f", int(lm.sum()), ari)

    with timer.step("map RH with Dask into Zarr (resumable)"):
        client = ctx.client()
        # the same path as `globalflux map model/ maps/predictors.zarr`
        mapped = map_cube(model, region, mask=land_r)
        pieces = dict(mapped.data_vars)
        pieces["land_mask"] = region["land_mask"].assign_attrs(
            long_name="land (true) or sea (false)", units="1")
        attrs = dict(attrs, **mapped.attrs)
        # as_current: helpers that look up "the" client (distributed.as_completed) find this one
        with client.as_current():
            rh_path = map_to_store(
                client, pieces, ctx.maps / "rh.zarr",
                attrs=dict(attrs, title="SYNTHETIC RH map (zoned random forest)"),
                mask=land_r, resume=ctx.resume, zarr_format=cfg_map.zarr_format)

    rh_store = _open_store(rh_path)
    cog_paths: list[Path] = []
    if cfg_map.cog:
        with timer.step("one COG per 8-day step"):
            cog_paths = _write_cogs(rh_store["rh"], ctx.cogs, attrs, resume=ctx.resume,
                                    per=cfg_map.cog_per)
        if cfg_map.catalog and cog_paths:
            with timer.step("STAC collection of the products"):
                from ..io.catalog import write_catalog

                write_catalog(cog_paths, ctx.maps / "stac", collection_id=f"{recipe.name}-rh",
                              title=f"SYNTHETIC {recipe.name}: heterotrophic respiration",
                              description="Zoned random-forest RH on the SYNTHETIC demo world "
                              "(globalflux.testing.synthetic); not the real world.",
                              store=rh_path, keywords=("soil respiration", "synthetic"),
                              synthetic=True)

    with timer.step("map skill against the true RH"):
        truth_r = crop_to_bbox(world.truth, cfg_syn.bbox)
        pred = rh_store["rh"].values
        true = truth_r["rh_true"].values
        ok = np.broadcast_to(land_r.values, pred.shape)
        map_skill = summary(true[ok], pred[ok])
        aoa_map = rh_store["aoa"].values
        inside = aoa_map >= 0
        out_share = float((aoa_map[inside] == 0).mean()) if inside.any() else float("nan")
        out_total = float(np.nansum(np.where(aoa_map == 0, pred, 0.0)) / np.nansum(pred))
        aoa_summary = {"threshold_di": float(model.package_.applicability.threshold_),
                       "share_outside_aoa": out_share, "share_of_total_outside_aoa": out_total}
        pd.DataFrame([aoa_summary]).to_csv(ctx.metrics / "applicability.csv", index=False)
        log.info("area of applicability: %.1f%% of mapped land pixel-steps outside (%.1f%% of "
                 "the RH total)", 100 * out_share, 100 * out_total)

    with timer.step("figures, metrics and report"):
        _write_outputs(ctx, recipe, world, table, zoned_loso, unified_loso, model, zone_map, ari,
                       rh_store, map_skill, cog_paths, timer, aoa_summary, schemes=schemes)
    timer.table().to_csv(ctx.metrics / "timings.csv", index=False)  # now with the report step


def _open_store(path: Path) -> xr.Dataset:
    from ..io.store import open_dataset

    ds = open_dataset(path, chunks={})
    import rioxarray  # noqa: F401

    if ds.rio.crs is None and "spatial_ref" in ds.coords:
        ds = ds.rio.write_crs(ds["spatial_ref"].attrs.get("crs_wkt", "EPSG:4326"))
    return ds


# ------------------------------------------------------------------------------ models


def _zoned(cfg_zones, cfg_forest, factors, predictors):
    """The zoned forest of the recipe: zones from ``factors``, a forest per zone on ``predictors``."""
    return cfg_forest.zoned(list(factors), cfg_zones.classifier(), predictors=list(predictors))


def _unified(cfg_forest, predictors):
    """One forest on the same predictors, no zones (the paper's unified baseline)."""
    return cfg_forest.unified(predictors=list(predictors))


def _validate(estimator, X, y, groups, table: pd.DataFrame, cfg_forest) -> pd.DataFrame:
    """Held-out predictions by the recipe's outer validation (LOSO or spatial blocks)."""
    from ..validation import cross_predict, loso, spatial_block_folds

    if cfg_forest.validation == "loso":
        return loso(estimator, X, y, groups, n_jobs=cfg_forest.n_jobs)
    folds = spatial_block_folds(table["lat"], table["lon"], cfg_forest.block_deg,
                                n_folds=cfg_forest.n_block_folds, random_state=cfg_forest.seed)
    return cross_predict(estimator, X, y, groups, folds, n_jobs=cfg_forest.n_jobs)


def _validate_schemes(cfg_zones, cfg_forest, cfg_v, factors, predictors, X, y,
                      table: pd.DataFrame):
    """The three validation schemes for the zone-choice forest; its fits also give the plain
    zoned and the unified forest's held-out predictions (``validation_schemes.csv`` rows)."""
    from ..validation import location_groups, validate_schemes

    locs = location_groups(table["lat"].to_numpy(dtype="float64"),
                           table["lon"].to_numpy(dtype="float64"), location_km=cfg_v.location_km)
    model = cfg_forest.zone_choice(list(factors), cfg_zones.classifier(),
                                   predictors=list(predictors)).set_params(
        min_zone_sites=cfg_forest.min_zone_sites)
    tab, preds = validate_schemes({"zone_choice": model}, X, y,
                                  sites=table["site_id"].astype(str).to_numpy(), locations=locs,
                                  schemes=list(cfg_v.schemes), k=cfg_v.k_folds,
                                  random_state=cfg_forest.seed, n_jobs=cfg_forest.n_jobs)
    tab.insert(2, "predictors", "synthetic")
    return tab, preds


def _zone_classifier_of(model):
    for name in ("zone_classifier_", "zones_", "classifier_"):
        clf = getattr(model, name, None)
        if clf is not None:
            return clf
    raise DataError("the zoned forest exposes no fitted zone classifier", where="forest",
                    fix="Fit the ZonedForestRegressor first.")


# ------------------------------------------------------------------------------ outputs


def _write_cogs(da: xr.DataArray, folder: Path, attrs: dict[str, Any], *, resume: bool,
                per: str = "step") -> list[Path]:
    """One COG per 8-day step (or one band stack), tagged SYNTHETIC with the map's provenance."""
    from ..io.cog import write_cogs

    tags = {k: v for k, v in attrs.items() if isinstance(v, str)}  # synthetic="true", comment
    return list(write_cogs(da, folder, prefix="rh", nodata=np.nan, tags=tags, resume=resume,
                           per=per))


def _scores(pred: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """n, R2, RMSE, bias of y_obs vs y_pred overall (group "all") and per ``by`` group."""
    from ..metrics import bias, r2, rmse

    rows = []
    groups = [("all", pred)] + ([(str(k), g) for k, g in pred.groupby(by, sort=True)] if by else [])
    for key, g in groups:
        rows.append({"group": key, "n": len(g), "sites": g["site_id"].nunique(),
                     "r2": r2(g["y_obs"], g["y_pred"]), "rmse": rmse(g["y_obs"], g["y_pred"]),
                     "bias": bias(g["y_obs"], g["y_pred"])})
    return pd.DataFrame(rows)


def _aligned(result: pd.DataFrame, table: pd.DataFrame, name: str) -> np.ndarray:
    """LOSO predictions in the row order of the training table."""
    if len(result) != len(table):
        raise DataError(f"{name} LOSO returned {len(result)} rows for {len(table)}",
                        where="validation.loso", fix="Report this: every row must be predicted once.")
    if result.index.equals(table.index):
        return result["y_pred"].to_numpy(dtype="float64")
    return result.reindex(table.index)["y_pred"].to_numpy(dtype="float64")


def _write_outputs(ctx, recipe, world, table, zoned_loso, unified_loso, model, zone_map, ari,
                   rh_store, map_skill, cog_paths, timer, aoa_summary=None, schemes=None) -> None:
    from .. import report
    from ..metrics import summary
    from ..testing.synthetic import PREDICTORS, RH_UNITS

    predictors = list(PREDICTORS)
    cfg_rep = recipe.report
    dpi = cfg_rep.dpi
    land = world.cube["land_mask"].values
    truth_zone = world.truth["zone_true"].values

    # LOSO predictions, both models, one row per observation
    site_zone = _site_zones(model, table, world)
    pred = table[["site_id", "time", "zone_true"]].copy()
    pred["zone"] = pred["site_id"].map(site_zone).astype("int64")
    pred["y_obs"] = table["rh"].to_numpy(dtype="float64")
    pred["pred_zoned"] = _aligned(zoned_loso, table, "zoned")
    pred["pred_unified"] = _aligned(unified_loso, table, "unified")
    pred.to_csv(ctx.metrics / "loso_predictions.csv", index=False)

    score_rows = []
    for label, col in (("zoned", "pred_zoned"), ("unified", "pred_unified")):
        p = pred.assign(y_pred=pred[col])
        for by, kind in ((None, "all"), ("zone", "zone"), ("zone_true", "true zone")):
            sc = _scores(p, by)
            if by is not None:
                sc = sc[sc["group"] != "all"]
            sc.insert(0, "grouping", kind)
            sc.insert(0, "model", label)
            score_rows.append(sc)
    scores = pd.concat(score_rows, ignore_index=True)
    scores.to_csv(ctx.metrics / "loso_scores.csv", index=False)

    # zone recovery
    from sklearn.metrics import adjusted_rand_score

    site_true = world.sites.set_index("site_id")["zone_true"]
    sz = pd.Series(site_zone)
    ari_sites = float(adjusted_rand_score(site_true.reindex(sz.index.astype(str)).to_numpy(),
                                          sz.to_numpy()))
    recovery = pd.DataFrame([{"ari_land_pixels": ari, "ari_sites": ari_sites,
                              "land_pixels": int(land.sum()), "sites": int(len(sz)),
                              "zones_true": int(world.config.n_zones),
                              "zones_fitted": int(recipe.zones.n_zones)}])
    recovery.to_csv(ctx.metrics / "zone_recovery.csv", index=False)
    cont = pd.crosstab(pd.Series(truth_zone[land], name="true zone"),
                       pd.Series(zone_map[land], name="recovered zone"))
    cont.to_csv(ctx.metrics / "zone_contingency.csv")
    zt = world.zones.copy()
    zt["recovered_zone"] = [int(cont.loc[z].idxmax()) if z in cont.index else -1
                            for z in zt["zone"]]
    zt["recovered_share"] = [float(cont.loc[z].max() / cont.loc[z].sum()) if z in cont.index
                             else float("nan") for z in zt["zone"]]
    zt.to_csv(ctx.metrics / "zones_true.csv", index=False)

    ms = pd.DataFrame([{"model": "zoned", **map_skill}])
    ms.to_csv(ctx.metrics / "map_vs_truth.csv", index=False)
    timings = timer.table()
    timings.to_csv(ctx.metrics / "timings.csv", index=False)

    # figures
    figs: dict[str, Path] = {}
    rh = rh_store["rh"]
    if cfg_rep.figures:
        mean_rh = rh.mean("time", skipna=False).compute()
        pts = world.sites
        figs["rh_map"] = report.map_png(
            mean_rh, ctx.figures / "rh_map.png",
            title=f"SYNTHETIC: mean RH {pd.Timestamp(rh.time.values[0]):%Y-%m-%d} to "
            f"{pd.Timestamp(rh.time.values[-1]):%Y-%m-%d} (zoned RF)",
            cmap="YlOrBr", units=RH_UNITS, synthetic=True, dpi=dpi,
            points=(pts["lon"], pts["lat"]))
        # recovered zones renumbered to their best-matching true zone, so colours compare
        match = report.match_labels(truth_zone[land], zone_map[land])
        matched = np.vectorize(lambda z: match.get(int(z), int(z)), otypes=[float])(zone_map)
        zone_da = xr.DataArray(np.where(land, matched, np.nan).astype(float),
                               coords={"y": world.cube["y"], "x": world.cube["x"]}, dims=("y", "x"))
        true_da = zone_da.copy(data=np.where(land, truth_zone, np.nan).astype(float))
        figs["zones"] = report.map_panels_png(
            {"true zones (answer key)": true_da,
             f"recovered zones, coloured as their best-matching true zone (ARI {ari:.3f})": zone_da},
            ctx.figures / "zones.png", categorical=True, synthetic=True, dpi=dpi, units="zone")
        figs["obs_vs_pred"] = report.scatter_obs_pred(
            None, None, ctx.figures / "obs_vs_pred.png", units=RH_UNITS, synthetic=True, dpi=dpi,
            panels={"zoned RF (LOSO)": (pred["y_obs"], pred["pred_zoned"]),
                    "unified RF (LOSO)": (pred["y_obs"], pred["pred_unified"])})
        tmean = world.truth["rh_true"].mean("time", skipna=False)
        figs["rh_truth"] = report.map_png(
            crop_like(tmean, mean_rh), ctx.figures / "rh_true_map.png",
            title="SYNTHETIC: true mean RH (answer key)", cmap="YlOrBr", units=RH_UNITS,
            synthetic=True, dpi=dpi, vmin=float(np.nanmin(mean_rh)), vmax=float(np.nanmax(mean_rh)))

    responses = _zone_responses(world, rh_store, recipe.synthetic.bbox)
    responses.to_csv(ctx.metrics / "zone_responses.csv", index=False)

    # report
    overall = scores[scores["grouping"] == "all"].set_index("model")
    zr2, ur2 = float(overall.loc["zoned", "r2"]), float(overall.loc["unified", "r2"])
    side = _side_by_side(scores)
    cfg = world.config
    sections = [
        ("What this is", (
            f"{recipe.description or 'The globalflux demo.'}\n\n"
            "Every number below describes the method on a world built with a "
            "known answer; none is a measurement or an estimate of the real world.")),
        ("The synthetic world", (
            f"- grid: {cfg.ny} x {cfg.nx} pixels of {cfg.resolution} deg (about 500 m), EPSG:4326, "
            f"west {cfg.west}, north {cfg.north}; {int(land.sum())} land pixels\n"
            f"- {world.cube.sizes['time']} MODIS 8-day periods from {cfg.year} "
            f"({cfg.n_years} year(s))\n"
            f"- {cfg.n_zones} true zones; {len(world.sites)} sites, {len(world.long)} "
            f"observations ({len(table)} with predictors), observation noise SD {cfg.noise_sd}\n"
            f"- seed {cfg.seed}\n\nTrue zones and their RH responses (answer key):\n\n"
            + report.markdown_table(world.zones[["zone", "name", "igbp", "r_ref", "q10", "moist_a",
                                                 "moist_b", "gpp_gain", "tem_mean", "pre_mean",
                                                 "pixels", "n_sites"]], floatfmt=".2f"))),
        ("Zones: recovery of the truth", (
            f"ZoneClassifier (standardise, PCA keeping >= {recipe.zones.variance:.0%} of the "
            f"variance, PSO k-means with k = {recipe.zones.n_zones}) fitted on the sites' zone "
            f"factors, then applied to every land pixel.\n\n"
            f"- adjusted Rand index vs the true zones on {int(land.sum())} land pixels: "
            f"**{ari:.3f}**\n- adjusted Rand index on the {len(sz)} sites: {ari_sites:.3f}\n\n"
            "Land pixels by true (rows) and recovered (columns) zone:\n\n"
            + report.markdown_table(cont, index=True) + "\n\n![zones](figures/zones.png)")),
        ("Leave-one-site-out: zoned vs unified random forest", (
            f"Both models get the same {len(predictors)} candidate predictors "
            f"({', '.join(predictors)}); the zoned model also gets the zone factors "
            f"({', '.join(model.zone_factors_)}), used only to assign zones. "
            f"{recipe.forest.n_estimators} trees per forest; correlation filter |r| > "
            f"{recipe.forest.corr_threshold}; backward elimination "
            f"{'on' if recipe.forest.eliminate else 'off (forest.eliminate: false)'}. "
            "Each site is predicted by models "
            "fitted without it: zones, correlation filter and forests are all fitted inside the "
            "fold.\n\n"
            f"Overall LOSO R2: zoned **{zr2:.3f}**, unified **{ur2:.3f}** "
            f"({'zoned better' if zr2 > ur2 else 'unified better or equal'}).\n\n"
            + report.markdown_table(side) + "\n\n![observed vs predicted](figures/obs_vs_pred.png)"
            + _selection_text(model, report))),
        ("Validation schemes", (
            "SYNTHETIC. The same models under three schemes: record-level k-fold (optimistic: "
            "records of one site sit on both sides of a split; it is what most papers report), "
            "leave-one-site-out, and leave-one-location-out (sites within "
            f"{recipe.validation.location_km:g} km form one location; the headline). "
            "`zone_choice`: per zone its own forest or the unified forest, chosen by inner CV on "
            "the training folds; `zoned` and `unified` come from the same fits.\n\n"
            + (report.markdown_table(schemes) if schemes is not None else "(not run)"))),
        ("Per-zone responses: truth vs map", (
            "Apparent temperature sensitivity in each true zone: the slope of log RH against the "
            "latent soil temperature over every land pixel and step, expressed as Q10 = "
            "exp(10 * slope), for the true RH and for the mapped RH, next to the zone's built-in "
            "Q10 (which acts together with its moisture and GPP terms).\n\n"
            + report.markdown_table(responses, floatfmt=".2f"))),
        ("Map", (
            f"The zoned forest applied to every land pixel and 8-day step with Dask: "
            f"`maps/rh.zarr` ({rh.sizes.get('y')} x {rh.sizes.get('x')} pixels, "
            f"{rh.sizes.get('time')} steps) and {len(cog_paths)} COGs in `maps/cog/`.\n\n"
            "Map against the true RH over every land pixel and step (answer key): "
            + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in map_skill.items() if k in ("n", "r2", "rmse", "bias"))
            + f" ({RH_UNITS} for RMSE and bias).\n\n" + _aoa_text(aoa_summary)
            + "![RH map](figures/rh_map.png)\n\n"
            "![true RH](figures/rh_true_map.png)")),
        ("Timings", "Wall seconds per step in this run (the report step itself is in "
         "`metrics/timings.csv`).\n\n" + report.markdown_table(timings, floatfmt=".1f")),
    ]
    report.write_report(ctx.out / "report.md", f"SYNTHETIC demo: {recipe.name}", sections,
                        synthetic=True,
                        provenance={"recipe": "recipe.yaml", "workflow": recipe.workflow,
                                    "figures": ", ".join(f"figures/{p.name}" for p in figs.values())})


def _aoa_text(aoa: dict | None) -> str:
    """The area-of-applicability sentence of the report's map section."""
    if not aoa:
        return ""
    return ("Area of applicability (Meyer and Pebesma 2021; `di` and `aoa` in `maps/rh.zarr`): "
            f"**{100 * aoa['share_outside_aoa']:.1f}%** of the mapped land pixel-steps lie outside "
            f"it (dissimilarity index above the cross-validated training threshold "
            f"{aoa['threshold_di']:.3f}), holding {100 * aoa['share_of_total_outside_aoa']:.1f}% "
            "of the mapped RH total. The model package is in `model/` "
            "(`globalflux map model maps/predictors.zarr --out M.zarr` remaps it).\n\n")


def _selection_text(model, report) -> str:
    """The zoned forest's chosen predictors per zone and its notes, as markdown."""
    parts = []
    table = getattr(model, "table_selected_", None)
    if isinstance(table, pd.DataFrame) and not table.empty:
        parts.append("\n\nPredictors kept per zone in the final zoned forest (importance rank, "
                     "1 = most important; empty = dropped):\n\n"
                     + report.markdown_table(table.astype("string").fillna(""), index=True))
    for note in getattr(model, "notes_", []) or []:
        parts.append(f"\n\n- note: {note}")
    return "".join(parts)


def _zone_responses(world, rh_store: xr.Dataset, bbox) -> pd.DataFrame:
    """Apparent Q10 per true zone from the true and the mapped RH (log-linear fit on Ts)."""
    truth = crop_to_bbox(world.truth, bbox)
    zone = truth["zone_true"].values
    ts = truth["tsoil"].values
    true = truth["rh_true"].values
    pred = rh_store["rh"].values
    rows = []
    for z, built in zip(world.zones["zone"], world.zones["q10"]):
        sel = np.broadcast_to(zone == z, ts.shape)
        ok = sel & np.isfinite(pred) & (pred > 0) & np.isfinite(true)
        if ok.sum() < 10:
            continue
        st = np.polyfit(ts[ok], np.log(true[ok]), 1)[0]
        sp = np.polyfit(ts[ok], np.log(pred[ok]), 1)[0]
        rows.append({"true zone": int(z), "name": world.zones.loc[world.zones["zone"] == z, "name"].iloc[0],
                     "built-in Q10": float(built), "apparent Q10 (truth)": float(np.exp(10 * st)),
                     "apparent Q10 (map)": float(np.exp(10 * sp)),
                     "mean RH truth": float(true[ok].mean()), "mean RH map": float(pred[ok].mean())})
    return pd.DataFrame(rows)


def crop_like(da: xr.DataArray, like: xr.DataArray) -> xr.DataArray:
    """``da`` on the x/y extent of ``like`` (a bbox crop of the same grid)."""
    return da.sel(x=like["x"], y=like["y"])


def _side_by_side(scores: pd.DataFrame) -> pd.DataFrame:
    """Zoned and unified LOSO scores side by side, overall and per zone."""
    rows = []
    for (grouping, group), g in scores.groupby(["grouping", "group"], sort=False):
        z = g[g["model"] == "zoned"].iloc[0]
        u = g[g["model"] == "unified"].iloc[0]
        rows.append({"grouping": grouping, "group": group, "n": int(z["n"]), "sites": int(z["sites"]),
                     "R2 zoned": z["r2"], "R2 unified": u["r2"], "RMSE zoned": z["rmse"],
                     "RMSE unified": u["rmse"], "bias zoned": z["bias"], "bias unified": u["bias"]})
    return pd.DataFrame(rows)


def _site_zones(model, table: pd.DataFrame, world) -> dict[str, int]:
    """The zone the fitted zoned forest gives each site (from the site's factor row)."""
    per_site = table.groupby("site_id", sort=True)[list(model.zone_factors_)].first()
    clf = _zone_classifier_of(model)
    labels = clf.predict(per_site)
    return {str(s): int(z) for s, z in zip(per_site.index, labels)}
