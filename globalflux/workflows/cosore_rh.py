"""Workflow ``cosore_rh``: COSORE heterotrophic respiration (Rh ports) at 8-day periods.

Stages:

1. COSORE datasets with Rh ports (trenched, girdled or root-exclusion plots; ``PORTS.txt``),
   read and quality-controlled (:func:`globalflux.sites.cosore_tables`, 8-day MODIS periods).
2. In-situ drivers of each 8-day period: soil temperature ``Ts`` (°C), soil moisture ``SWC``
   (m3 m-3), air temperature ``Tair`` (°C) where measured, ``sin_doy``/``cos_doy`` of the
   period start, and the site-year annual mean of each driver; plus the static cube at each
   site (zone factors and land cover / Köppen).
3. Zoned forest, unified baseline, zone-choice and zone-as-feature forests under the three
   validation schemes (record-level k-fold, leave-one-site-out, leave-one-location-out; every
   step refitted per fold, fits grouped by location).

There are few locations (about nine with data here), so zones hold a handful of sites each and
the report says so: the comparison is reported as measured, without claims beyond it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError

log = logging.getLogger("globalflux.workflows.cosore_rh")

SECTIONS = ("sites", "cube", "zones", "forest", "validation")

DRIVERS = ("Ts", "SWC", "Tair")
STATIC_PREDICTORS = ("land_cover", "koppen", "ndvi_max", "ndvi_min", "elevation", "mat", "map", "soc")
RH_UNITS = "g C m-2 d-1"


def rh_datasets(cosore_path: str | Path) -> list[str]:
    """COSORE dataset folders whose PORTS.txt lists at least one Rh port."""
    from ..io.cosore import read_ports

    root = Path(cosore_path)
    root = root / "datasets" if (root / "datasets").is_dir() else root
    if not root.is_dir():
        from ..errors import InputFileError

        raise InputFileError("COSORE folder not found", where=str(root),
                             fix="Point sites.cosore_path at the folder holding datasets/.")
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        ports = folder / "PORTS.txt"
        if not ports.is_file():
            continue
        try:
            if (read_ports(ports)["msmt_var"] == "Rh").any():
                out.append(folder.name)
        except DataError:
            continue
        except Exception as exc:  # a broken PORTS.txt is reported by read_cosore; skip it here
            log.info("%s: PORTS.txt not readable (%s); skipped", folder.name, exc)
    return out


def location_ids(table: pd.DataFrame) -> np.ndarray:
    """One id per distinct location (coordinates rounded to 1e-4 degree)."""
    la = table["lat"].astype("float64").round(4)
    lo = table["lon"].astype("float64").round(4)
    return np.array([f"{a:+08.4f}_{b:+09.4f}" for a, b in zip(la, lo, strict=True)], dtype=object)


def training_table(long: pd.DataFrame) -> pd.DataFrame:
    """Wide 8-day table: one row per site and period with Rh, drivers, seasonality, annual means.

    Parameters
    ----------
    long
        Canonical long table (``site_id, lat, lon, igbp, time, variable, value``) holding Rh
        and the drivers.

    Returns
    -------
    DataFrame with ``site_id, lat, lon, igbp, time, Rh`` (g C m-2 d-1), ``Ts, SWC, Tair``,
    ``sin_doy, cos_doy`` and ``<driver>_annual_mean`` (site-year mean of the 8-day values);
    rows without Rh are dropped.
    """
    need = {"site_id", "time", "variable", "value"}
    if not need <= set(long.columns):
        raise DataError(f"long table lacks {sorted(need - set(long.columns))}", where="cosore_rh",
                        fix="Pass SiteTables.long from globalflux.sites.cosore_tables.")
    wide = long.pivot_table(index=["site_id", "time"], columns="variable", values="value",
                            aggfunc="mean", observed=True)
    wide.columns = [str(c) for c in wide.columns]
    wide = wide.reset_index()
    meta = long.drop_duplicates("site_id")[["site_id", "lat", "lon", "igbp"]]
    wide = wide.merge(meta, on="site_id", how="left")
    for v in ("Rh",) + DRIVERS:
        if v not in wide:
            wide[v] = np.nan
    wide = wide[wide["Rh"].notna()].copy()
    t = pd.DatetimeIndex(wide["time"])
    doy = t.day_of_year.to_numpy(dtype="float64")
    wide["sin_doy"] = np.sin(2 * np.pi * doy / 365.25)
    wide["cos_doy"] = np.cos(2 * np.pi * doy / 365.25)
    wide["year"] = t.year
    for v in DRIVERS:
        wide[f"{v}_annual_mean"] = wide.groupby(["site_id", "year"])[v].transform("mean")
    cols = ["site_id", "lat", "lon", "igbp", "time", "Rh", *DRIVERS, "sin_doy", "cos_doy",
            *(f"{v}_annual_mean" for v in DRIVERS)]
    return wide[cols].sort_values(["site_id", "time"]).reset_index(drop=True)


def _write_model_package(ctx, recipe, final, X, y, groups, cube, held_out) -> None:
    """``RUN/model/``: the final zoned forest with its area of applicability (issue 10)."""
    from ..applicability import AreaOfApplicability
    from ..io.model_package import input_statistics, table_sha256, write_package
    from ..metrics import summary

    units = {c: cube[c].attrs.get("units") for c in X.columns if c in cube}
    scores = summary(held_out["y_obs"], held_out["y_pred"])
    write_package(
        ctx.out / "model", final, inputs=input_statistics(X, units),
        target={"name": "rh", "units": RH_UNITS,
                "standard_name": "heterotrophic_respiration_carbon_flux",
                "long_name": "heterotrophic respiration (zoned random forest)"},
        time_step="8-day",
        applicability=AreaOfApplicability().fit(X, final.importance_weights(), groups),
        training={"sha256": table_sha256(X.assign(Rh=y, location=groups)), "n_rows": int(len(X)),
                  "n_locations": int(len(np.unique(groups)))},
        validation={"scheme": "leave-one-location-out",
                    **{k: v for k, v in scores.items() if k in ("n", "r2", "rmse", "bias")}},
        recipe=recipe)


def run(recipe, ctx) -> None:
    """Run the recipe (see the module docstring)."""
    from .. import report
    from ..extract import sample_points
    from ..io.cosore import read_cosore
    from ..report import markdown_table
    from ..sites import cosore_tables
    from ..validation import SCHEME_LABELS, location_groups, score, validate_schemes
    from .srdb_rh_annual import _importance_png, _static_cube, _table_i, _zone_factors

    cfg_s, cfg_c, cfg_z, cfg_f = recipe.sites, recipe.cube, recipe.zones, recipe.forest
    cfg_v = recipe.validation
    if cfg_s.source != "cosore":
        raise DataError(f"sites.source is {cfg_s.source!r}", where="sites.source",
                        fix="The cosore_rh workflow reads COSORE: use 'cosore'.")
    if cfg_c.source != "static":
        raise DataError(f"cube.source is {cfg_c.source!r}", where="cube.source",
                        fix="The cosore_rh workflow samples the real static cube: use 'static'.")
    factors = _zone_factors(cfg_z, STATIC_PREDICTORS)

    with ctx.step("COSORE Rh datasets, QC and 8-day tables"):
        names = rh_datasets(cfg_s.cosore_path)
        raw = read_cosore(cfg_s.cosore_path, datasets=names, cache_dir=cfg_s.cache_dir)
        raw.status.to_csv(ctx.metrics / "datasets.csv", index=False)
        tables = cosore_tables(raw, aggregation="8day", variables=("Rh",), min_year=cfg_s.min_year,
                               percentile_filter=cfg_s.percentile_filter, drivers=DRIVERS,
                               rules=cfg_s.qc_rules())
        table = training_table(tables.long)
        log.info("%d Rh datasets listed, %d loaded; %d 8-day Rh rows at %d sites", len(names),
                 int((raw.status["status"] == "loaded").sum()), len(table), table["site_id"].nunique())

    with ctx.step(f"static cube at {cfg_c.grid.resolution} deg at the sites"):
        cube = _static_cube(cfg_c.static_root, cfg_c.grid.resolution,
                            land_threshold=cfg_c.land_threshold)
        pts = table.drop_duplicates("site_id")[["site_id", "lat", "lon"]]
        samp = sample_points(cube, pts, method=cfg_c.extraction, window=cfg_c.window,
                             variables=list(STATIC_PREDICTORS))
        samp = samp.drop(columns=["lat", "lon", "pixel_x", "pixel_y"], errors="ignore")
        for c in ("land_cover", "koppen"):
            samp[c] = samp[c].astype("float64").where(~samp[c].isin([255, 0]))
        table = table.merge(samp, on="site_id", how="left")
        miss = table.loc[table[factors].isna().any(axis=1), "site_id"].unique()
        if len(miss):
            log.info("sites without zone factors dropped: %s", ", ".join(miss))
        table = table[~table["site_id"].isin(miss)].reset_index(drop=True)
        n_sites = table["site_id"].nunique()
        if n_sites < max(cfg_z.n_zones + 1, 3):
            raise DataError(f"{n_sites} COSORE Rh sites with drivers and zone factors",
                            where=cfg_s.cosore_path,
                            fix=f"Use fewer zones (zones.n_zones={cfg_z.n_zones}) or more sites.")
        table.to_csv(ctx.metrics / "training_table.csv", index=False)

    predictors = [*DRIVERS, "sin_doy", "cos_doy", *(f"{v}_annual_mean" for v in DRIVERS),
                  *STATIC_PREDICTORS]
    X = table[list(dict.fromkeys(predictors + factors))]
    y = table["Rh"].to_numpy(dtype="float64")
    # locations: datasets within validation.location_km of one another (e.g. two plots of one
    # study) form one location; fits are grouped by location, and leave-one-location-out holds
    # them out together, so no fold trains on the place it predicts
    g = location_groups(table["lat"].to_numpy(dtype="float64"),
                        table["lon"].to_numpy(dtype="float64"), location_km=cfg_v.location_km)
    n_loc = len(np.unique(g))
    schemes = list(cfg_v.schemes)
    headline = "lolo" if "lolo" in schemes else schemes[-1]

    def step(scheme, model):
        return ctx.step(f"{scheme}: {model} forest ({n_sites} datasets at {n_loc} locations)")

    models = {"zone_choice": cfg_f.zone_choice(factors, cfg_z.classifier(), predictors=predictors),
              "zone_feature": cfg_f.zone_feature(factors, cfg_z.classifier(), predictors=predictors)}
    vtab, vpred = validate_schemes(models, X, y, sites=table["site_id"].to_numpy(), locations=g,
                                   schemes=schemes, k=cfg_v.k_folds, random_state=cfg_f.seed,
                                   n_jobs=cfg_f.n_jobs, with_std=True, on_fold=step)
    vtab.insert(2, "predictors", "in-situ+static")
    vtab.to_csv(ctx.metrics / "validation_schemes.csv", index=False)
    preds = {}
    for kind in ("zoned", "unified"):
        preds[kind] = vpred[(headline, kind)]
        preds[kind]["dataset"] = preds[kind]["site_id"].to_numpy()
        preds[kind].to_csv(ctx.metrics / f"pred_{kind}.csv")
    rows = []
    for kind, p in preds.items():
        by_zone = score(p, by="zone" if "zone" in p else None)
        by_zone.insert(0, "by", ["all"] + ["zone"] * (len(by_zone) - 1))
        by_site = score(p, by="dataset").iloc[1:]
        by_site.insert(0, "by", "site")
        part = pd.concat([by_zone, by_site], ignore_index=True)
        part.insert(0, "model", kind)
        rows.append(part)
    skill = pd.concat(rows, ignore_index=True)
    skill.to_csv(ctx.metrics / "skill.csv", index=False)

    with ctx.step("final forests on all sites, figures and report"):
        final = cfg_f.zoned(factors, cfg_z.classifier(), predictors=predictors).set_params(
            min_zone_sites=cfg_f.min_zone_locations).fit(X, y, groups=g)
        final_u = cfg_f.unified(predictors=predictors).fit(X, y, groups=g)
        table_i = _table_i(final, final_u)
        table_i.to_csv(ctx.metrics / "selected_variables.csv")
        _write_model_package(ctx, recipe, final, X, y, g, cube, preds["zoned"])
        site_info = (table.assign(location=g).groupby("site_id")[["location", "lat", "lon", "igbp"]
                                                                   + factors].first()
                     .join(table.groupby("site_id").size().rename("n_periods")).reset_index())
        site_info["zone"] = final.site_zones_.reindex(site_info["location"]).to_numpy()
        site_info.to_csv(ctx.metrics / "sites.csv", index=False)
        dpi = recipe.report.dpi
        if recipe.report.figures:
            zp = preds["zoned"]
            report.scatter_obs_pred(None, None, ctx.figures / "obs_pred.png", units=RH_UNITS, dpi=dpi,
                                    panels={"zoned": (zp["y_obs"], zp["y_pred"]),
                                            "unified": (preds["unified"]["y_obs"],
                                                        preds["unified"]["y_pred"])})
            report.scatter_obs_pred(None, None, ctx.figures / "obs_pred_zones.png", units=RH_UNITS,
                                    dpi=dpi, panels={f"zone {z}": (q["y_obs"], q["y_pred"])
                                                     for z, q in zp.groupby("zone")})
            _importance_png(final, final_u, ctx.figures / "importance.png", dpi)
            _series_png(table, preds, ctx.figures / "rh_series.png", dpi)
        overall = skill[skill["by"] == "all"][["model", "n", "n_sites", "r2", "rmse", "bias"]]
        ti = table_i.reset_index().astype(object).where(table_i.reset_index().notna(), "")
        sections = [
            ("Data", f"COSORE (Bond-Lamberty et al. 2020, CC BY 4.0) datasets with Rh ports: "
             f"{len(names)} listed, {int((raw.status['status'] == 'loaded').sum())} with data "
             f"(`metrics/datasets.csv`). After QC and 8-day aggregation: {len(table)} 8-day Rh "
             f"values ({RH_UNITS}) from {n_sites} datasets at {n_loc} distinct locations.\n\n"
             + markdown_table(site_info[["site_id", "location", "igbp", "n_periods", "zone"]])),
            ("Set-up", f"Predictors: {', '.join(predictors)}. Zone factors (static cube at "
             f"{cfg_c.grid.resolution} deg): {', '.join(factors)}; k = {cfg_z.n_zones}. "
             f"Zones with fewer than {cfg_f.min_zone_locations} training locations use the "
             f"all-locations forest. Every step (scaler, PCA, zones, feature selection, "
             f"forest) refitted per fold on the training locations. {cfg_f.n_estimators} trees."),
            (f"Validation: three schemes (headline: {headline})",
             "; ".join(f"`{k}`: {v}" for k, v in SCHEME_LABELS.items() if k in schemes)
             + f". Locations: datasets within {cfg_v.location_km:g} km of one another. "
             "`zone_choice`: per zone its own forest or the unified forest, chosen by inner CV on "
             "the training folds (the `zoned` and `unified` rows come from the same fits); "
             "`zone_feature`: one forest with zone membership as predictors. Record-level k-fold "
             "puts 8-day values of one site on both sides of a split: it is optimistic.\n\n"
             + markdown_table(vtab)),
            (f"Zoned vs unified ({headline})",
             f"Few locations: each held-out location is predicted from the other {n_loc - 1} "
             "(datasets sharing coordinates are held out together; `n_sites` below counts "
             "locations), and a zone holds only a handful of them; treat these numbers as "
             "indicative.\n\n" + markdown_table(overall) + "\n\nPer zone and per site:\n\n"
             + markdown_table(skill[skill["by"] != "all"])
             + ("\n\nNotes (final model): " + "; ".join(final.notes_) if final.notes_ else "")),
            ("Chosen variables", "Importance rank of chosen predictors (final models, all sites).\n\n"
             + markdown_table(ti)),
            ("Figures", "\n".join(f"![{p.name}](figures/{p.name})"
                                  for p in sorted(ctx.figures.glob("*.png")))),
        ]
        report.write_report(ctx.out / "report.md", f"{recipe.name}: COSORE Rh, zoned random forests",
                            sections, provenance={"recipe": "recipe.yaml"})


def _series_png(table: pd.DataFrame, preds: dict[str, pd.DataFrame], path: Path, dpi: int) -> None:
    from ..report import _plt

    plt = _plt()
    sites = list(pd.unique(table["site_id"]))
    fig, axes = plt.subplots(len(sites), 1, figsize=(8, 1.6 * len(sites)), squeeze=False)
    for ax, s in zip(axes[:, 0], sites, strict=True):
        rows = table.index[table["site_id"] == s]
        t = pd.DatetimeIndex(table.loc[rows, "time"])
        ax.plot(t, table.loc[rows, "Rh"], "k.", ms=3, label="observed")
        for kind, p in preds.items():
            ax.plot(t, p.loc[rows, "y_pred"], ".", ms=3, label=f"{kind} (LOSO)")
        ax.set_title(s, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
