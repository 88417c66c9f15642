"""Workflow ``cosore_efflux_daily``: one global LSTM for daily soil CO2 efflux on COSORE sites.

Stages (Smykalov et al. protocol): read COSORE Rs ports with in-situ soil temperature and
moisture (daily, local days) -> static attributes (lat, lon, elevation, IGBP one-hot, MAT/MAP/SOC
sampled from the 0.5 deg static grids) -> per-site temporal split at 80% of its own observed
days -> LSTM trained on the training parts only (scalers too) -> sequence-to-sequence prediction
of every site's whole series -> Q10, Lloyd-Taylor and day-of-year climatology baselines fitted
on the same training parts -> per-site NSE/KGE/r, classes, diagnostics, figures, report.

IGBP is encoded one-hot (``igbp_<CLASS>`` 0/1 columns over the classes of the modelled sites):
with ~15 classes and ~40 sites an embedding would have little data to learn from, and one-hot
layers are what a gridded cube provides directly (one 0/1 layer per class).

Writes ``OUT/metrics/lstm_sites.csv`` (one row per site), ``OUT/metrics/sites_selection.csv``,
``OUT/metrics/diagnostics_*.csv``, ``OUT/models/lstm`` (checkpoint), ``OUT/figures/*.png``,
``OUT/predictions.csv`` (daily observed and predicted series) and ``OUT/report.md``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..cube import fill_short_gaps_dataset
from ..errors import DataError, RecipeError
from ..extract import sample_nearest_valid

SECTIONS = ("sites", "lstm")

log = logging.getLogger("globalflux.workflows.cosore_efflux_daily")

_SITE_DRIVERS = ("Ts", "SWC", "Tair")
_TIME_DRIVERS = ("doy_sin", "doy_cos")
_MODELS = {"lstm": "LSTM", "q10": "Q10", "lt": "Lloyd-Taylor", "clim": "DOY climatology",
           "gq10": "global Q10 (attributes)"}


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------
def _check_recipe(recipe) -> None:
    s, cfg = recipe.sites, recipe.lstm
    if s.source != "cosore":
        raise RecipeError(f"got {s.source!r}", where="sites.source",
                          fix="Workflow cosore_efflux_daily reads COSORE: set sites.source: cosore.")
    if s.variable != cfg.target:
        raise RecipeError(f"got {s.variable!r} but lstm.target is {cfg.target!r}",
                          where="sites.variable", fix=f"Set sites.variable: {cfg.target}.")
    if s.aggregation != "daily":
        raise RecipeError(f"got {s.aggregation!r}", where="sites.aggregation",
                          fix="The LSTM runs on daily series: set sites.aggregation: daily.")
    unknown = [d for d in cfg.drivers if d not in _SITE_DRIVERS + _TIME_DRIVERS]
    if unknown:
        raise RecipeError(f"unknown driver(s) {unknown}", where="lstm.drivers",
                          fix=f"Choose among {list(_SITE_DRIVERS + _TIME_DRIVERS)}.")
    allowed = ("lat", "lon", "elevation", "igbp", "mat", "map", "soc")
    unknown = [d for d in cfg.statics if d not in allowed]
    if unknown:
        raise RecipeError(f"unknown static attribute(s) {unknown}", where="lstm.statics",
                          fix=f"Choose among {list(allowed)}.")
    if "Ts" not in cfg.drivers:
        raise RecipeError("the Q10 and Lloyd-Taylor baselines need soil temperature",
                          where="lstm.drivers", fix="Keep Ts among the drivers.")


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def _read_sites(recipe):
    from ..io.cosore import read_cosore
    from ..sites import cosore_tables, to_dataset

    s, cfg = recipe.sites, recipe.lstm
    datasets = None
    listed = list(cfg.sites) + [h for h in cfg.holdout_sites if h not in cfg.sites]
    if cfg.sites or cfg.holdout_sites:
        root = Path(s.cosore_path)
        dsroot = root / "datasets" if (root / "datasets").is_dir() else root
        if dsroot.is_dir():
            known = {p.name for p in dsroot.iterdir() if p.is_dir()}
            for key, ids in (("lstm.sites", cfg.sites), ("lstm.holdout_sites", cfg.holdout_sites)):
                unknown = [x for x in ids if x not in known]
                if unknown:
                    raise DataError(f"no COSORE dataset {unknown[0]!r}", where=key,
                                    fix=f"Use dataset folder names under {dsroot}, e.g. "
                                    f"{sorted(known)[0] if known else 'd20190409_ANJILELI'}.")
    if cfg.sites:
        datasets = listed
    raw = read_cosore(s.cosore_path, cache_dir=s.cache_dir, datasets=datasets)
    for sid in listed:  # listed datasets without any flux record (e.g. NEE-only, no data.RDS)
        if sid not in raw.records:
            raise _no_target(sid, cfg.target)
    tabs = cosore_tables(raw, aggregation="daily", variables=(cfg.target,), min_year=s.min_year)
    site_drivers = [d for d in cfg.drivers if d in _SITE_DRIVERS]
    if not len(tabs.long):
        raise DataError(f"all {cfg.target} values are NaN: no site has an observed day after QC",
                        where=str(s.cosore_path), fix="Check the QC summary and sites.min_year.")
    ds = to_dataset(tabs.long, tabs.sites)
    for v in (cfg.target, *site_drivers):
        if v not in ds:
            ds[v] = (("site", "time"), np.full((ds.sizes["site"], ds.sizes["time"]), np.nan))
    # listed sites that have no target at all (e.g. NEE-only datasets)
    for sid in listed:
        if sid not in set(ds["site"].values) or not np.isfinite(ds[cfg.target].sel(site=sid)).any():
            raise _no_target(sid, cfg.target)
    return raw, tabs, ds


def _no_target(sid: str, target: str) -> DataError:
    return DataError(f"all {target} values are NaN at this site (no observed day after QC)",
                     where=f"site {sid}",
                     fix=f"Remove it from lstm.sites; check its PORTS.txt ({target} ports?), its "
                     "data file and the QC summary.")


def _statics(ds: xr.Dataset, cfg) -> tuple[xr.Dataset, list[str], dict[str, str]]:
    """Add the static attributes as (site,) variables; expand igbp into one-hot columns."""
    names: list[str] = []
    notes: dict[str, str] = {}
    lat = np.asarray(ds["lat"].values, dtype=float)
    lon = np.asarray(ds["lon"].values, dtype=float)
    for st in cfg.statics:
        if st in ("lat", "lon", "elevation"):
            ds[f"static_{st}"] = ("site", np.asarray(ds[st].values, dtype=float))
            names.append(f"static_{st}")
        elif st == "igbp":
            names.append("igbp")  # expanded by _igbp_onehot once the training sites are known
    grids = [st for st in cfg.statics if st in ("mat", "map", "soc")]
    if grids:
        from ..io.static_grids import STATIC_FILES, read_soilresp

        layers = read_soilresp(Path(cfg.static_grids_path) / STATIC_FILES["soilresp"],
                               variables=tuple(g.upper() for g in grids))
        for g in grids:
            vals = sample_nearest_valid(layers[g].load(), lat, lon)
            ds[f"static_{g}"] = ("site", vals, {"units": layers[g].attrs.get("units", "")})
            names.append(f"static_{g}")
        notes["grids"] = ("MAT/MAP/SOC: nearest 0.5 deg cell of SoilRespirationPartitioning "
                          "(MAT/MAP from WorldClim 1.4, read in place, not redistributed); coastal "
                          "NaN cells fall back to the mean of finite cells within 2 cells")
    return ds, names, notes


def _igbp_onehot(ds: xr.Dataset, names: list[str], train_sites, notes: dict) -> list[str]:
    """Replace the ``igbp`` placeholder in ``names`` by ``igbp_<CLASS>`` 0/1 columns over the
    classes of the training sites (a holdout site of another class gets all zeros)."""
    if "igbp" not in names:
        return names
    igbp = np.array([str(v) for v in ds["igbp"].values], dtype=object)
    train_classes = {str(v) for v in ds["igbp"].sel(site=list(train_sites)).values}
    classes = sorted(c for c in train_classes if c)
    cols = []
    for c in classes:
        ds[f"igbp_{c}"] = ("site", (igbp == c).astype(float))
        cols.append(f"igbp_{c}")
    notes["igbp"] = "one-hot over the training sites' classes " + ", ".join(classes)
    i = names.index("igbp")
    return names[:i] + cols + names[i + 1:]


def _select(ds: xr.Dataset, cfg, static_names: list[str]) -> tuple[list[str], pd.DataFrame]:
    """Sites with enough data (and every driver unless masked); listed sites (lstm.sites and
    lstm.holdout_sites) must qualify (else DataError)."""
    site_drivers = [d for d in cfg.drivers if d in _SITE_DRIVERS]
    static_names = [n for n in static_names if n != "igbp"]
    mask = cfg.missing_drivers == "mask"
    y = ds[cfg.target]
    rows = []
    for sid in ds["site"].values:
        sid = str(sid)
        obs = np.isfinite(y.sel(site=sid).values)
        n_obs = int(obs.sum())
        reason = ""
        missing = [d for d in site_drivers
                   if not np.isfinite(ds[d].sel(site=sid).values[obs]).any()]
        bad_static = [n for n in static_names if not np.isfinite(float(ds[n].sel(site=sid)))]
        if n_obs < cfg.seq_len:
            reason = f"{n_obs} days of {cfg.target}, fewer than the sequence length {cfg.seq_len}"
        elif missing and not mask:
            reason = f"driver {missing[0]!r} missing (all NaN on days with {cfg.target})"
        elif bad_static:
            reason = f"static attribute {bad_static[0]!r} missing"
        elif n_obs < cfg.min_days:
            reason = f"{n_obs} days of {cfg.target}, fewer than lstm.min_days {cfg.min_days}"
        if sid in cfg.holdout_sites and reason:
            raise DataError(f"holdout site cannot be scored: {reason}",
                            where=f"lstm.holdout_sites: site {sid}",
                            fix="Choose another holdout site (see metrics/sites_selection.csv of a "
                            "run without it for the usable sites).")
        if cfg.sites and sid in cfg.sites and reason:
            if reason.startswith("driver"):
                raise DataError(f"{reason}", where=f"site {sid}",
                                fix=f"Remove the site from lstm.sites or {missing[0]!r} from "
                                "lstm.drivers.")
            if "sequence length" in reason:
                raise DataError(f"has {reason}", where=f"site {sid}",
                                fix="Remove the site from lstm.sites or lower lstm.seq_len.")
            raise DataError(reason, where=f"site {sid}", fix="Remove the site from lstm.sites.")
        used = (not reason) and (not cfg.sites or sid in cfg.sites or sid in cfg.holdout_sites)
        rows.append({"site_id": sid, "n_days": n_obs, "used": used, "reason": reason,
                     "missing_drivers": ";".join(missing) if mask and not reason else "",
                     "holdout": sid in cfg.holdout_sites})
    table = pd.DataFrame(rows)
    keep = table.loc[table["used"], "site_id"].tolist()
    if keep and all(k in cfg.holdout_sites for k in keep):
        raise DataError("every usable site is a holdout site: nothing left to train on",
                        where="lstm.holdout_sites", fix="Hold out fewer sites.")
    if not keep:
        raise DataError("no site has enough data for the LSTM", where="lstm.min_days",
                        fix=f"Lower lstm.min_days (now {cfg.min_days}) or check the drivers "
                        f"{site_drivers}.")
    return keep, table


# --------------------------------------------------------------------------------------------
# location folds
# --------------------------------------------------------------------------------------------
def location_groups(lat, lon, radius_km: float) -> np.ndarray:
    """Group index per site: sites closer than ``radius_km`` (great circle, chained) share a
    location."""
    lat = np.radians(np.asarray(lat, dtype=float))
    lon = np.radians(np.asarray(lon, dtype=float))
    n = lat.size
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        d = 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(
            np.sin((lat - lat[i]) / 2) ** 2
            + np.cos(lat[i]) * np.cos(lat) * np.sin((lon - lon[i]) / 2) ** 2, 0, 1)))
        for j in np.flatnonzero(d < radius_km):
            parent[find(int(j))] = find(i)
    roots = [find(i) for i in range(n)]
    _, grp = np.unique(roots, return_inverse=True)
    return grp


def location_folds(lat, lon, k: int, radius_km: float, seed: int) -> np.ndarray:
    """Fold (0..k-1) per site: locations shuffled with ``seed`` and dealt round-robin, so a
    location's sites always share a fold. Fewer locations than ``k`` is a DataError."""
    grp = location_groups(lat, lon, radius_km)
    n_loc = int(grp.max()) + 1 if grp.size else 0
    if n_loc < k:
        raise DataError(f"{n_loc} locations for {k} folds", where="lstm.folds",
                        fix=f"Use at most {n_loc} folds or lower lstm.location_radius_km.")
    order = np.random.default_rng(seed).permutation(n_loc)
    fold_of_loc = np.empty(n_loc, dtype=int)
    fold_of_loc[order] = np.arange(n_loc) % k
    return fold_of_loc[grp]


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def _ensemble(cfg, static_names, masked, seed_offset: int = 0):
    from ..models.lstm import LSTMEnsemble, LSTMRegressor

    base = LSTMRegressor(
        drivers=tuple(cfg.drivers), statics=tuple(static_names), target=cfg.target,
        hidden_size=cfg.hidden_size, dropout=cfg.dropout, seq_len=cfg.seq_len,
        epochs=cfg.epochs, batch_size=cfg.batch_size, batches_per_epoch=cfg.batches_per_epoch,
        learning_rate=cfg.learning_rate, device=cfg.device, num_threads=cfg.num_threads,
        random_state=cfg.seed + seed_offset, verbose=max(1, cfg.epochs // 20),
        masked_drivers=tuple(masked))
    return LSTMEnsemble(base, n_members=cfg.ensemble)


def _checkpoints(models: Path, stem: str, n: int) -> list[Path]:
    """Member 0 at ``models/<stem>``, member i at ``models/<stem>_member<i>``."""
    return [models / stem if i == 0 else models / f"{stem}_member{i}" for i in range(n)]


def _hide(ds: xr.Dataset, keep: np.ndarray, variables) -> xr.Dataset:
    """A copy whose ``variables`` are NaN wherever ``keep`` (site, time) is False."""
    out = ds.copy()
    m = xr.DataArray(keep, dims=("site", "time"), coords={"site": ds["site"], "time": ds["time"]})
    for v in variables:
        out[v] = ds[v].where(m)
    return out


def _attributes(ds: xr.Dataset, static_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Numeric static attributes for the global Q10 (the IGBP one-hot columns left out)."""
    cols = [n for n in static_names if not n.startswith("igbp_")]
    return np.stack([ds[c].values.astype(float) for c in cols], axis=-1), cols


def run(recipe, ctx) -> None:
    from ..diagnostics import (
        PAPER_MEDIANS,
        correlate_features,
        score_by_class,
        site_autocorrelation,
        site_scores,
        skill_class,
        spike_mask,
        temporal_split,
        value_classes,
    )
    from ..errors import ModelError
    from ..io.model_package import write_lstm_package
    from ..models.baselines import GlobalQ10Model, fit_predict_site
    from ..models.lstm import add_doy_features

    cfg = recipe.lstm
    _check_recipe(recipe)
    min_test = recipe.report.min_test_days if recipe.report is not None else 60
    t_start = time.perf_counter()
    with ctx.step("read COSORE daily Rs with in-situ drivers"):
        raw, tabs, ds = _read_sites(recipe)
    with ctx.step("static attributes"):
        ds, static_names, notes = _statics(ds, cfg)
    with ctx.step("select sites"):
        keep, selection = _select(ds, cfg, static_names)
        tabs.summary.to_csv(ctx.metrics / "cosore_summary.csv", index=False)
        selection.to_csv(ctx.metrics / "sites_selection.csv", index=False)
        log.info("%d of %d sites used; dropped: %s", len(keep), len(selection),
                 "; ".join(f"{r.site_id} ({r.reason})" for r in selection.itertuples()
                           if not r.used) or "none")
        ds = ds.sel(site=keep)
        # drop the days no kept site observes at all: a shorter common calendar
        any_data = np.isfinite(ds[cfg.target]).any("site").values
        idx = np.flatnonzero(any_data)
        ds = ds.isel(time=slice(int(idx[0]), int(idx[-1]) + 1))
        # a site with a single Rh/Rs dataset is a regular daily calendar: reindex to full days
        full = pd.date_range(pd.Timestamp(ds["time"].values[0]), pd.Timestamp(ds["time"].values[-1]),
                             freq="D")
        ds = ds.reindex(time=full)
        ds = add_doy_features(ds)
        site_drivers = [d for d in cfg.drivers if d in _SITE_DRIVERS]
        ds = fill_short_gaps_dataset(ds, site_drivers, cfg.gap_fill_days)
        sites = [str(x) for x in ds["site"].values]
        hold = np.array([x in cfg.holdout_sites for x in sites])
        train_sites = [x for x, h in zip(sites, hold, strict=True) if not h]
        static_names = _igbp_onehot(ds, static_names, train_sites, notes)
        masked = site_drivers if cfg.missing_drivers == "mask" else []

    y = ds[cfg.target].values
    S = len(sites)
    train = np.zeros(y.shape, dtype=bool)
    for i in np.flatnonzero(~hold):
        train[i] = temporal_split(y[i], cfg.train_fraction)
    # only the training part of each training series is shown to fit(): targets and in-situ
    # drivers of the test parts, and everything of the holdout sites, are hidden, so the
    # scalers see training data only
    ds_train = _hide(ds, train, [cfg.target, *site_drivers]).sel(site=train_sites)

    n_mem = int(cfg.ensemble)
    model = _ensemble(cfg, static_names, masked)
    with ctx.step(f"train the LSTM ({cfg.epochs} epochs x {n_mem} member(s))"):
        model.fit(ds_train, checkpoints=_checkpoints(ctx.models, "lstm", n_mem),
                  checkpoint_every=cfg.checkpoint_every, resume=ctx.resume,
                  init_from=cfg.checkpoint)
        m0 = model.members_[0]
        log.info("LSTM: %d batches of %d x %d days per epoch, %d epochs, %d member(s), %.1f s",
                 m0.n_batches_per_epoch_, cfg.batch_size, cfg.seq_len, m0.epoch_, n_mem,
                 model.fit_seconds_)
    with ctx.step("predict every site's whole series"):
        mean, spread, members = model.predict(ds, return_std=True, return_members=True)
        pred = mean.values
        spread = spread.values
        member_preds = [m.values for m in members]

    # location k-fold: one model per fold, trained on the other folds' whole records
    fold = np.full(S, -1)
    fold_pred = np.full(y.shape, np.nan)
    fold_spread = np.full(y.shape, np.nan)
    if cfg.validation == "location_kfold":
        tr_idx = np.flatnonzero(~hold)
        fold[tr_idx] = location_folds(ds["lat"].values[tr_idx], ds["lon"].values[tr_idx],
                                      cfg.folds, cfg.location_radius_km, cfg.seed)
        for k in range(cfg.folds):
            fit_sites = [sites[i] for i in tr_idx if fold[i] != k]
            fm = _ensemble(cfg, static_names, masked)
            with ctx.step(f"location fold {k + 1}/{cfg.folds}: train without "
                          f"{int((fold == k).sum())} site(s)"):
                fm.fit(ds.sel(site=fit_sites),
                       checkpoints=_checkpoints(ctx.models, f"lstm_fold{k + 1}", n_mem),
                       checkpoint_every=cfg.checkpoint_every, resume=ctx.resume)
                sel = np.flatnonzero(fold == k)
                fmean, fstd = fm.predict(ds.isel(site=sel), return_std=True)
                fold_pred[sel] = fmean.values
                fold_spread[sel] = fstd.values

    with ctx.step("baselines, metrics, diagnostics"):
        doy = ds["time"].dt.dayofyear.values.astype(float)
        ts = ds["Ts"].values
        preds = {"lstm": pred}
        for k in ("q10", "lt", "clim"):
            preds[k] = np.full(y.shape, np.nan)
        base_params = {}
        for i in np.flatnonzero(~hold):
            b = fit_predict_site(ts[i], doy, y[i], train[i])
            for k in ("q10", "lt", "clim"):
                preds[k][i] = b[k]
            base_params[sites[i]] = b["params"]
        # the global Q10: parameters from static attributes, fitted on the training parts of
        # the training sites only; it predicts every site, holdout sites included
        attrs, attr_names = _attributes(ds, static_names)
        notes["global_q10"] = ("global Q10: log R10 and log Q10 ridge-regressed (alpha 1) on the "
                               "standardised " + ", ".join(attr_names) + " of the training sites")
        try:
            gq = GlobalQ10Model().fit(attrs[~hold], ts[~hold], np.where(train, y, np.nan)[~hold])
            preds["gq10"] = gq.predict(attrs, ts)
        except ModelError as exc:
            log.warning("global Q10 not fitted: %s", exc)
            preds["gq10"] = np.full(y.shape, np.nan)
        gq_fold = np.full(y.shape, np.nan)
        if cfg.validation == "location_kfold":
            for k in range(cfg.folds):
                fit_i = np.flatnonzero(~hold & (fold != k))
                sel = np.flatnonzero(fold == k)
                try:
                    g = GlobalQ10Model().fit(attrs[fit_i], ts[fit_i], y[fit_i])
                    gq_fold[sel] = g.predict(attrs[sel], ts[sel])
                except ModelError:
                    pass

        none = np.zeros(y.shape[1], dtype=bool)
        sel_tab = selection.set_index("site_id")
        rows = []

        def _row(i, split, tr, lstm, gq, spr, members_i=None, baselines=True):
            sid = sites[i]
            obs = y[i]
            row = {"site_id": sid, "split": split, "igbp": str(ds["igbp"].values[i]),
                   "lat": float(ds["lat"].values[i]), "lon": float(ds["lon"].values[i]),
                   "n_train": int(np.isfinite(obs[tr]).sum()),
                   "n_test": int(np.isfinite(obs[~tr]).sum()),
                   "split_date": (str(pd.Timestamp(ds["time"].values[np.flatnonzero(tr)[-1]]).date())
                                  if tr.any() else ""),
                   "missing_drivers": str(sel_tab.loc[sid, "missing_drivers"] or ""),
                   "fold": int(fold[i]) + 1 if fold[i] >= 0 else np.nan}
            row.update(site_scores(obs, lstm, tr))
            test_days = np.isfinite(obs) & ~tr
            row["lstm_spread_test"] = (float(np.nanmean(spr[test_days]))
                                       if np.isfinite(spr[test_days]).any() else np.nan)
            if members_i is not None:
                sc = [site_scores(obs, mp[i], tr) for mp in members_i]
                row["seed0_nse_test"] = sc[0]["nse_test"]
                row["seed0_kge_test"] = sc[0]["kge_test"]
                row["members_nse_test_min"] = float(np.nanmin([c["nse_test"] for c in sc])) \
                    if np.isfinite([c["nse_test"] for c in sc]).any() else np.nan
                row["members_nse_test_max"] = float(np.nanmax([c["nse_test"] for c in sc])) \
                    if np.isfinite([c["nse_test"] for c in sc]).any() else np.nan
            nan = np.full(obs.shape, np.nan)
            for k in ("q10", "lt", "clim"):
                row.update(site_scores(obs, preds[k][i] if baselines else nan, tr, prefix=f"{k}_"))
            row.update(site_scores(obs, gq, tr, prefix="gq10_"))
            bp = base_params.get(sid) if baselines else None
            row["q10_Q10"] = bp["q10"][1] if bp else np.nan
            row["lt_E0"] = bp["lt"][1] if bp else np.nan
            return row

        for i in range(S):
            if hold[i]:
                rows.append(_row(i, "holdout", none, pred[i], preds["gq10"][i], spread[i],
                                 member_preds, baselines=False))
            else:
                rows.append(_row(i, "temporal", train[i], pred[i], preds["gq10"][i], spread[i],
                                 member_preds))
        for i in np.flatnonzero(fold >= 0):
            rows.append(_row(i, "fold", none, fold_pred[i], gq_fold[i], fold_spread[i],
                             baselines=False))
        table = pd.DataFrame(rows)
        table["class"] = skill_class(table["nse_test"], table["kge_test"])
        for k in ("q10", "lt", "clim", "gq10"):
            table[f"{k}_class"] = skill_class(table[f"{k}_nse_test"], table[f"{k}_kge_test"])
        acf = site_autocorrelation({sites[i]: y[i] for i in range(S)})
        table = table.merge(acf.reset_index(), on="site_id", how="left")
        table.to_csv(ctx.metrics / "lstm_sites.csv", index=False)
        # the trained model as a package (RUN/model/): in-situ drivers, so it maps nothing by
        # itself, but it is reloaded and scored elsewhere without retraining
        summ = (table.groupby("split")
                .agg(sites=("site_id", "nunique"), nse=("nse_test", "median"),
                     kge=("kge_test", "median"), r=("r_test", "median")).reset_index())
        names = list(m0.drivers) + list(m0.statics)
        write_lstm_package(
            model, ctx.out / "model", train=ds_train,
            units={v: str(ds[v].attrs.get("units", "")) for v in names if v in ds},
            target={"name": cfg.target, "units": str(ds[cfg.target].attrs.get("units", "")),
                    "standard_name": "soil_respiration_carbon_flux",
                    "long_name": f"daily soil CO2 efflux ({cfg.target}, COSORE chambers)"},
            summary=summ, train_ids=train_sites, hold_ids=[x for x in sites if x not in train_sites],
            train_fraction=cfg.train_fraction, recipe=recipe, synthetic=False)
        temporal = table[table["split"] == "temporal"].reset_index(drop=True)

        scores = temporal.set_index("site_id")[["nse_test", "kge_test", "r_test"]]
        acf_cor = correlate_features(acf.loc[acf.index.isin(scores.index)], scores)
        acf_cor.to_csv(ctx.metrics / "diagnostics_acf_vs_metrics.csv", index=False)

        # extremes and spikes on the test parts of the training sites, pooled over sites (each
        # site's own quantiles), on the days every model predicts
        common = np.isfinite(y) & ~hold[:, None]
        for k in preds:
            common &= np.isfinite(preds[k])
        tests = [~train[i] & common[i] for i in range(S)]
        obs_te = [y[i][te] for i, te in enumerate(tests)]
        o_cat = np.concatenate(obs_te)
        lab_cat = np.concatenate([value_classes(o) for o in obs_te])
        extra = {"spikes": np.concatenate([spike_mask(y[i])[te] for i, te in enumerate(tests)]),
                 "all": np.isfinite(o_cat)}
        cls_rows = []
        for k in preds:
            s_cat = np.concatenate([preds[k][i][te] for i, te in enumerate(tests)])
            sc = score_by_class(o_cat, s_cat, lab_cat, extra_masks=extra)
            sc.insert(0, "model", _MODELS[k])
            cls_rows.append(sc)
        by_class = pd.concat(cls_rows, ignore_index=True)
        by_class.to_csv(ctx.metrics / "diagnostics_value_classes.csv", index=False)

        pred_long = []
        for i, sid in enumerate(sites):
            sel = np.isfinite(y[i]) | np.isfinite(pred[i])
            part = np.where(train[i][sel], "train", "holdout" if hold[i] else "test")
            frame = {"site_id": sid, "time": ds["time"].values[sel], "part": part,
                     "observed": y[i][sel], "lstm": pred[i][sel], "lstm_spread": spread[i][sel],
                     "q10": preds["q10"][i][sel], "lt": preds["lt"][i][sel],
                     "clim": preds["clim"][i][sel], "gq10": preds["gq10"][i][sel],
                     "Ts": ts[i][sel]}
            if cfg.validation == "location_kfold":
                frame["lstm_fold"] = fold_pred[i][sel]
            pred_long.append(pd.DataFrame(frame))
        pd.concat(pred_long, ignore_index=True).to_csv(ctx.out / "predictions.csv", index=False,
                                                        float_format="%.5g")

    with ctx.step("figures and report"):
        from . import _cosore_efflux_report as rep

        tm = ~hold
        figs = rep.figures(ctx.figures, ds.isel(site=np.flatnonzero(tm)), y[tm],
                           {k: v[tm] for k, v in preds.items()}, train[tm], temporal, cfg)
        rep.write(ctx, recipe, table, by_class, acf_cor, selection, model, figs, notes,
                  PAPER_MEDIANS, raw, time.perf_counter() - t_start, min_test=min_test)
