"""Workflow ``efflux_daily_map``: a daily soil CO2 efflux grid from one LSTM, judged far from sites.

Stages (each a library call; this module wires them and writes through the run context):

1. :func:`globalflux.testing.daily.make_daily_world` builds the SYNTHETIC daily world; its
   driver cube is written to ``OUT/maps/drivers.zarr`` (CF attributes, CRS, provenance) and
   reopened lazily: training inputs and map inputs are read from this one store.
2. Site drivers are extracted from that cube at the site coordinates
   (:func:`globalflux.extract.sample_points`), so the LSTM learns from the variables it maps.
3. ``efflux_map.holdout_fraction`` of the sites are held out entirely; the others are split in
   time at ``lstm.train_fraction`` of their own observed days (Smykalov et al.: 80/20). The
   LSTM (``lstm`` section: 30-day subsequences, asinh + min-max scaling fitted on training data
   only) trains on the training parts; sites are scored on the test parts (``split=temporal``)
   and the held-out sites over their whole record (``split=holdout``).
4. The fitted model (one LSTM, or a seed ensemble with ``lstm.ensemble > 1``) is written as a
   model package (``kind: lstm``) to ``OUT/model/`` by :func:`globalflux.io.model_package.write_lstm_package`
   (:mod:`globalflux.io.model_package`: manifest with inputs, units, training ranges, scores,
   training-data checksum and recipe; weights as torch state dicts, never pickled) and read
   back verified; training checkpoints go to ``OUT/models/``.
5. The daily map: :func:`globalflux.mapping.map_lstm` (what ``globalflux map OUT/model CUBE``
   runs) of the verified package over every land pixel, LSTM
   state carried across time chunks, written block by block, chain by chain, by
   :func:`globalflux.mapping.map_chains_to_store` into ``OUT/maps/efflux.zarr``; COGs per day or per
   month (``efflux_map.cog_every``) in ``OUT/maps/cog/`` and a STAC collection in
   ``OUT/maps/stac/``.
6. ``OUT/metrics/map_vs_truth.csv`` scores the map against the known efflux on pixels at least
   ``efflux_map.far_km`` from every training site (row ``pixels_far_from_sites``), beside all
   land pixels and pixels near sites; ``OUT/metrics/lstm_sites.csv``, figures and
   ``OUT/report.md``. Everything says SYNTHETIC.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import DataError
from ..io.model_package import write_lstm_package

__all__ = ["SECTIONS", "run", "site_driver_dataset", "split_sites",
           "read_site_table", "EFFLUX_TARGET"]

SECTIONS = ("daily_world", "lstm", "efflux_map", "mapping")

log = logging.getLogger("globalflux")

#: the mapped variable: name, CF standard name (long_name and units are added per run)
EFFLUX_TARGET = {"name": "efflux", "standard_name": "soil_respiration_carbon_flux"}


# ------------------------------------------------------------------------------ stage helpers


def site_driver_dataset(cube: xr.Dataset, sites: pd.DataFrame, long: pd.DataFrame,
                        drivers: list[str], statics: list[str], target: str) -> xr.Dataset:
    """The LSTM's site inputs: cube values at the sites as a ``(site, time)`` Dataset.

    Spatial variables are sampled at the pixel holding each site
    (:func:`globalflux.extract.sample_points`); variables over ``time`` only (the season clock)
    are taken from the cube as they are. The target comes from the canonical long table,
    reindexed to the cube's days (NaN where not observed).
    """
    from ..extract import sample_points
    from ..sites import to_dataset

    spatial = [v for v in drivers + statics if {"y", "x"} <= set(cube[v].dims)]
    samples = sample_points(cube[spatial], sites[["site_id", "lat", "lon"]], method="nearest")
    samples["site_id"] = samples["site_id"].astype(str)
    days = pd.DatetimeIndex(cube["time"].values)
    ids = sorted(samples["site_id"].unique())
    obs = to_dataset(long[long["variable"] == target], sites)
    ds = obs[[target]].reindex(site=np.array(ids, dtype=object), time=days)
    frame = samples.set_index(["site_id", "time"])
    for v in drivers:
        if v in spatial:
            arr = frame[v].unstack("time").reindex(index=ids, columns=days).to_numpy("float64")
            ds[v] = (("site", "time"), arr, dict(cube[v].attrs))
        else:
            ds[v] = (("time",), np.asarray(cube[v].values, dtype="float64"), dict(cube[v].attrs))
    for v in statics:
        first = samples.drop_duplicates("site_id").set_index("site_id")[v].reindex(ids)
        ds[v] = (("site",), first.to_numpy("float64"), dict(cube[v].attrs))
    return ds


def split_sites(site_ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training sites, held-out sites): ``round(fraction * n)`` drawn with ``seed``; at least
    one site always trains."""
    ids = sorted(site_ids)
    n_hold = min(int(round(fraction * len(ids))), len(ids) - 1)
    rng = np.random.default_rng(seed)
    hold = (set(rng.choice(np.array(ids, dtype=object), size=n_hold, replace=False)) if n_hold
            else set())
    return [s for s in ids if s not in hold], sorted(hold)


def _check_inputs(cube: xr.Dataset, drivers: list[str], statics: list[str], where: str) -> None:
    """Every model input in the cube, with the right dims (DataError naming the key)."""
    for key, names in (("lstm.drivers", drivers), ("lstm.statics", statics)):
        missing = [v for v in names if v not in cube.data_vars]
        if missing:
            raise DataError(
                f"{key} {missing} not in the driver cube{where}", where=key,
                fix=f"Choose among the cube's variables {sorted(cube.data_vars)}.")
    bad = [v for v in drivers if "time" not in cube[v].dims]
    if bad:
        raise DataError(f"lstm.drivers {bad} have no time dimension{where}", where="lstm.drivers",
                        fix="Move static layers to lstm.statics.")
    bad = [v for v in statics if set(cube[v].dims) != {"y", "x"}]
    if bad:
        raise DataError(f"lstm.statics {bad} are not (y, x) layers{where}", where="lstm.statics",
                        fix="Move daily variables to lstm.drivers.")


def read_site_table(path: str, target: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long table of ``target``, one row per site) from a canonical long site table."""
    from ..io.tables import read_table

    long = read_table(path)
    need = ["site_id", "lat", "lon", "time", "variable", "value"]
    missing = [c for c in need if c not in long.columns]
    if missing:
        raise DataError(f"the site table lacks columns {missing}",
                        where=f"efflux_map.sites_file {path}",
                        fix="Give the canonical long table (globalflux sites cosore ... --out F).")
    long = long[long["variable"].astype(str) == target].copy()
    if long.empty:
        raise DataError(f"no {target} rows in the site table",
                        where=f"efflux_map.sites_file {path}",
                        fix=f"Write it with --variable {target} (and --aggregation daily).")
    long["site_id"] = long["site_id"].astype(str)
    cols = [c for c in ("lat", "lon", "igbp") if c in long.columns]
    sites = long.groupby("site_id", sort=True)[cols].first().reset_index()
    return long, sites


def _listed_sites(ds: xr.Dataset, listed: list[str]) -> xr.Dataset:
    """Only the sites of ``lstm.sites`` (each must be present)."""
    have = [str(s) for s in ds["site"].values]
    unknown = [s for s in listed if s not in have]
    if unknown:
        raise DataError(f"site(s) {unknown} are not among the sites with data", where="lstm.sites",
                        fix=f"Choose among {have[:10]}{' ...' if len(have) > 10 else ''}, or "
                        "leave lstm.sites empty for every site.")
    return ds.sel(site=listed)


def _sites_inside(cube: xr.Dataset, sites: pd.DataFrame, where: str) -> pd.DataFrame:
    """The sites inside the cube's extent (a regional cube, a global site table); the others
    are logged. None inside is a DataError."""
    from ..grid import grid_of

    grid = grid_of(cube, where="efflux_map.driver_cube")
    x = sites["lon"].to_numpy("float64")
    y = sites["lat"].to_numpy("float64")
    if not grid.is_geographic:
        from pyproj import Transformer

        x, y = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(x, y)
    inside = np.asarray(grid.contains(x, y), dtype=bool)
    if not inside.any():
        raise DataError(f"none of the {len(sites)} sites lies inside the driver cube "
                        f"{grid.bbox.as_tuple()}", where=where,
                        fix="Build the cube over the sites (cube.grid.bbox) or give sites "
                        "inside it.")
    if not inside.all():
        out = sites.loc[~inside, "site_id"].astype(str).tolist()
        log.info("%d of %d sites lie outside the driver cube and are not used: %s", len(out),
                 len(sites), ", ".join(out))
    return sites.loc[inside].reset_index(drop=True)


def _enough_data(ds: xr.Dataset, cfg_l, where: str) -> xr.Dataset:
    """Sites with at least ``lstm.min_days`` (and ``seq_len``) observed days in the cube."""
    need = max(int(cfg_l.min_days), int(cfg_l.seq_len))
    n = np.isfinite(ds[cfg_l.target]).sum("time").values
    keep = [str(s) for s, k in zip(ds["site"].values, n) if k >= need]
    dropped = [f"{s} ({int(k)} days)" for s, k in zip(ds["site"].values, n) if k < need]
    if dropped:
        log.info("%d site(s) have fewer than %d observed days inside the cube's time axis and "
                 "are not used: %s", len(dropped), need, ", ".join(dropped))
    if not keep:
        raise DataError(f"no site has {need} observed {cfg_l.target} days inside the driver "
                        "cube's time axis", where=where,
                        fix="Build the cube over the years the sites measured, or lower "
                        "lstm.min_days.")
    return ds.sel(site=keep)


def _open_store(path: Path) -> xr.Dataset:
    import rioxarray  # noqa: F401  (registers .rio)

    from ..io.store import open_dataset

    ds = open_dataset(path, chunks={})
    if ds.rio.crs is None and "spatial_ref" in ds.coords:
        ds = ds.rio.write_crs(ds["spatial_ref"].attrs.get("crs_wkt", "EPSG:4326"))
    return ds


# ---------------------------------------------------------------------------------------- run


def run(recipe, ctx) -> None:  # noqa: PLR0915 - a linear list of stages
    from ..diagnostics import site_scores, temporal_split
    from ..io.model_package import load_model
    from ..mapping import (
        lstm_valid_pixels,
        map_chains_to_store,
        map_lstm,
        map_to_store,
        require_daily,
    )
    from ..metrics import kge, nse, pearson_r
    from ..models.lstm import LSTMEnsemble, LSTMRegressor
    from ..provenance import provenance_attrs
    from ..testing.daily import (
        DAILY_DRIVERS,
        DAILY_STATICS,
        EFFLUX_UNITS,
        distance_to_sites_km,
        make_daily_world,
        score_map,
    )

    cfg_w, cfg_l, cfg_m = recipe.daily_world, recipe.lstm, recipe.efflux_map
    cfg_map = recipe.mapping
    drivers, statics = list(cfg_l.drivers), list(cfg_l.statics)
    timings: list[tuple[str, float]] = []
    t_run = time.perf_counter()

    def step(what: str):
        timings.append((what, time.perf_counter()))
        return ctx.step(what)

    # ---- preflight: every input named before anything heavy runs ------------------------------
    real = bool(cfg_m.driver_cube)
    if not real:
        known = list(DAILY_DRIVERS) + list(DAILY_STATICS)
        for key, names in (("lstm.drivers", drivers), ("lstm.statics", statics)):
            missing = [v for v in names if v not in known]
            if missing:
                raise DataError(f"{key} {missing} not in the driver cube", where=key,
                                fix=f"The synthetic daily cube has {known}.")
    other = None
    if cfg_m.map_cube:
        other = _open_store(Path(cfg_m.map_cube))
        _check_inputs(other, drivers, statics, f" {cfg_m.map_cube}")
        require_daily(other, where=f"efflux_map.map_cube {cfg_m.map_cube}")

    attrs = provenance_attrs(recipe=recipe, synthetic=not real)
    world = None
    if real:
        with step("open the daily driver cube and the site table"):
            cube = _open_store(Path(cfg_m.driver_cube))
            _check_inputs(cube, drivers, statics, f" {cfg_m.driver_cube}")
            require_daily(cube, where=f"efflux_map.driver_cube {cfg_m.driver_cube}")
            long, sites = read_site_table(cfg_m.sites_file, cfg_l.target)
            sites = _sites_inside(cube, sites, where=f"efflux_map.sites_file {cfg_m.sites_file}")
            long = long[long["site_id"].isin(set(sites["site_id"]))]
            land = lstm_valid_pixels(cube, drivers, statics)
    else:
        with step("build the SYNTHETIC daily world"):
            world = make_daily_world(cfg_w)
            land = world.cube["land_mask"]
            long, sites = world.long, world.sites
            log.info("daily world: %dx%d pixels (%d land), %d days, %d sites, %d observations",
                     cfg_w.ny, cfg_w.nx, int(land.sum()), world.cube.sizes["time"],
                     len(world.sites), len(world.long))
        with step("write the driver cube (Zarr)"):
            chunks = {"time": cfg_m.time_chunk, "y": cfg_m.chunk_y, "x": cfg_m.chunk_x}
            src = world.cube.chunk({d: c for d, c in chunks.items() if d in world.cube.dims})
            cube_path = map_to_store(None, {n: src[n] for n in src.data_vars},
                                     ctx.maps / "drivers.zarr",
                                     attrs=dict(attrs, title="SYNTHETIC daily driver cube"),
                                     resume=ctx.resume, progress=False)
            cube = _open_store(cube_path)
            _check_inputs(cube, drivers, statics, "")

    with step("extract the sites' drivers from the cube"):
        ds = site_driver_dataset(cube, sites, long, drivers, statics, cfg_l.target)
        ds = _enough_data(ds, cfg_l, where=(f"efflux_map.sites_file {cfg_m.sites_file}" if real
                                            else "daily_world"))
        if cfg_l.sites:
            ds = _listed_sites(ds, list(cfg_l.sites))
        ids = [str(s) for s in ds["site"].values]
        train_ids, hold_ids = split_sites(ids, cfg_m.holdout_fraction, cfg_l.seed)
        y = ds[cfg_l.target].values
        train = np.stack([temporal_split(y[i], cfg_l.train_fraction) for i in range(len(ids))])
        tr = ds.sel(site=train_ids)
        part = xr.DataArray(train[[ids.index(s) for s in train_ids]], dims=("site", "time"),
                            coords={"site": tr["site"], "time": tr["time"]})
        # the training parts only: targets and the sites' own drivers of the test parts are
        # hidden, so the scalers see training data only; held-out sites are not shown at all
        tr = tr.assign({v: tr[v].where(part) for v in [cfg_l.target] + drivers
                        if "site" in tr[v].dims})
        log.info("%d training sites (temporal %.0f/%.0f split), %d held-out sites: %s",
                 len(train_ids), 100 * cfg_l.train_fraction, 100 * (1 - cfg_l.train_fraction),
                 len(hold_ids), ", ".join(hold_ids) or "none")

    model: Any = LSTMRegressor(
        drivers=tuple(drivers), statics=tuple(statics), target=cfg_l.target,
        hidden_size=cfg_l.hidden_size, dropout=cfg_l.dropout, seq_len=cfg_l.seq_len,
        epochs=cfg_l.epochs, batch_size=cfg_l.batch_size, batches_per_epoch=cfg_l.batches_per_epoch,
        learning_rate=cfg_l.learning_rate, device=cfg_l.device, num_threads=cfg_l.num_threads,
        random_state=cfg_l.seed, verbose=max(1, cfg_l.epochs // 10))
    n_mem = int(cfg_l.ensemble)
    # training checkpoints (resumable with --resume) in OUT/models/; the model package is
    # written to OUT/model/ once training is done
    ckpts = [ctx.models / ("lstm" if i == 0 else f"lstm_member{i}") for i in range(n_mem)]
    with step(f"train the LSTM ({cfg_l.epochs} epochs"
              + (f", {n_mem} seed-ensemble members)" if n_mem > 1 else ")")):
        if n_mem > 1:
            model = LSTMEnsemble(model, n_members=n_mem).fit(
                tr, checkpoints=ckpts, checkpoint_every=cfg_l.checkpoint_every,
                resume=ctx.resume, init_from=cfg_l.checkpoint)
        else:
            model.fit(tr, checkpoint=ckpts[0], checkpoint_every=cfg_l.checkpoint_every,
                      resume=ctx.resume, init_from=cfg_l.checkpoint)
        base = model.members_[0] if n_mem > 1 else model
        log.info("LSTM: %d batches of %d x %d days per epoch, %d epochs, %d member(s), %.1f s",
                 base.n_batches_per_epoch_, cfg_l.batch_size, cfg_l.seq_len, base.epoch_, n_mem,
                 model.fit_seconds_)

    with step("score the sites (temporal test parts, held-out sites)"):
        pred = model.predict(ds).values
        rows = []
        for i, sid in enumerate(ids):
            held = sid in hold_ids
            row: dict[str, Any] = {"site_id": sid, "split": "holdout" if held else "temporal",
                                   "n_obs": int(np.isfinite(y[i]).sum())}
            if world is not None:
                row["zone_true"] = int(world.sites.set_index("site_id").loc[sid, "zone_true"])
            if held:
                row.update({"nse": nse(y[i], pred[i]), "kge": kge(y[i], pred[i]),
                            "r": pearson_r(y[i], pred[i])})
            else:
                sc = site_scores(y[i], pred[i], train[i])
                row.update({"nse": sc["nse_test"], "kge": sc["kge_test"], "r": sc["r_test"],
                            "nse_train": sc["nse_train"], "kge_train": sc["kge_train"]})
            rows.append(row)
        sites_tab = pd.DataFrame(rows)
        sites_tab.to_csv(ctx.metrics / "lstm_sites.csv", index=False)
        summ = (sites_tab.groupby("split")[["nse", "kge", "r"]].median()
                .join(sites_tab.groupby("split").size().rename("sites")).reset_index())
        summ.to_csv(ctx.metrics / "lstm_summary.csv", index=False)
        log.info("median site skill: %s", "; ".join(
            f"{r.split}: NSE {r.nse:.3f}, KGE {r.kge:.3f} ({r.sites} sites)"
            for r in summ.itertuples()))

    with step("write the model package (model/)"):
        target = dict(EFFLUX_TARGET, units=EFFLUX_UNITS,
                      long_name="soil CO2 efflux (LSTM)" + ("" if real else ", SYNTHETIC"))
        units = {v: str(cube[v].attrs.get("units", "")) for v in drivers + statics}
        write_lstm_package(model, ctx.out / "model", train=tr, units=units, target=target,
                           summary=summ, train_ids=train_ids, hold_ids=hold_ids,
                           train_fraction=cfg_l.train_fraction, recipe=recipe,
                           synthetic=not real)
        packaged = load_model(ctx.out / "model")  # map with what was written (verified)
        model_sha = packaged.package_.checksum
        log.info("model package %s (sha256 %s)", ctx.out / "model", model_sha[:12])

    map_attrs = provenance_attrs(recipe=recipe, synthetic=not real,
                                 inputs={"model/model.json": f"sha256:{model_sha}"})
    map_attrs["title"] = ("daily soil CO2 efflux (LSTM)" if real
                          else "SYNTHETIC daily soil CO2 efflux (LSTM)")
    map_attrs["model_sha256"] = model_sha
    map_attrs["model_kind"] = "lstm"
    # identity of the weights themselves (member 0)
    map_attrs["model_state_sha1"] = base.weights().token
    target_cube = cube if other is None else other
    with step("map daily efflux with Dask into Zarr (state carried across time chunks)"):
        mcube = target_cube
        mland = land.astype(bool) if other is None else lstm_valid_pixels(other, drivers, statics)
        # the one LSTM map path, as `globalflux map model/ CUBE` takes it
        mapped = map_lstm(packaged, mcube, mask=mland, time_chunk=cfg_m.time_chunk,
                          device=cfg_l.device, torch_threads=cfg_l.num_threads)
        pieces = {**mapped.data_vars, "land_mask": mland.assign_attrs(
            long_name="pixels mapped (land with inputs)", units="1")}
        client = ctx.client()
        with client.as_current():
            eff_path = map_chains_to_store(client, pieces, ctx.maps / "efflux.zarr",
                                           chain_dim="time", attrs=map_attrs, mask=mland,
                                           resume=ctx.resume,
                                           max_graph_tasks=cfg_map.max_graph_tasks,
                                           progress=cfg_map.progress)
        store = _open_store(eff_path)

    cog_paths: list[Path] = []
    if cfg_map.cog:
        with step(f"COGs (one per {cfg_m.cog_every})"):
            from ..io.cog import write_cogs

            tags = {k: v for k, v in map_attrs.items() if isinstance(v, str) and k != "recipe"}
            da = store["efflux"]
            prefix = "efflux"
            if cfg_m.cog_every == "month":
                da = da.resample(time="1MS").mean(skipna=False).assign_attrs(
                    units=EFFLUX_UNITS, long_name="monthly mean of the daily soil CO2 efflux "
                    "(LSTM)" + ("" if real else ", SYNTHETIC"))
                prefix = "efflux_monthly"
            da = da.rio.write_crs(store.rio.crs)
            cog_paths = list(write_cogs(da, ctx.cogs, prefix=prefix, nodata=np.nan, tags=tags,
                                        overviews=cfg_map.cog_overviews, resume=ctx.resume))
        if cfg_map.catalog and cog_paths:
            with step("STAC collection"):
                from ..io.catalog import write_catalog

                label = "" if real else "SYNTHETIC "
                write_catalog(cog_paths, ctx.maps / "stac", collection_id=f"{recipe.name}-efflux",
                              title=f"{label}{recipe.name}: daily soil CO2 efflux",
                              description=("Daily soil CO2 efflux from one LSTM trained on sites "
                                           "with drivers extracted from the mapped cube." if real
                                           else "Daily soil CO2 efflux from one LSTM on the "
                                           "SYNTHETIC daily world (globalflux.testing.daily); "
                                           "not the real world."),
                              store=eff_path, keywords=("soil respiration", "LSTM")
                              + (() if real else ("synthetic",)), synthetic=not real)

    map_skill = None
    consistency = float("nan")
    if world is not None and other is None:
        with step("map against the truth, far from every training site"):
            trow = world.sites.set_index("site_id").loc[train_ids]
            dist = distance_to_sites_km(store, trow["iy"].to_numpy(), trow["ix"].to_numpy())
            mapped = store["efflux"].load()
            map_skill = score_map(mapped, world.truth["efflux_true"], land, dist, cfg_m.far_km)
            map_skill.to_csv(ctx.metrics / "map_vs_truth.csv", index=False)
            log.info("map vs truth: %s", "; ".join(
                f"{r.region}: r2 {r.r2:.3f} ({r.pixels} px)" for r in map_skill.itertuples()))
    if other is None:
        # one mapping path: the map at a site's pixel is that site's own prediction
        from ..extract import pixel_index

        srow = sites.assign(site_id=sites["site_id"].astype(str)).set_index("site_id").loc[ids]
        r_, c_ = pixel_index(store, srow["lon"].to_numpy(), srow["lat"].to_numpy(), ids)
        # only the sites' pixels are read (pointwise selection), not the whole map
        at_sites = store["efflux"].isel(y=xr.DataArray(r_, dims="site"),
                                        x=xr.DataArray(c_, dims="site")).transpose("site", "time").values
        per_site = np.nanmax(np.abs(at_sites - pred), axis=1)
        consistency = float(np.nanmax(per_site))
        sites_tab["map_minus_site_max_abs"] = per_site
        sites_tab.to_csv(ctx.metrics / "lstm_sites.csv", index=False)
        log.info("max |map - site prediction| at the %d sites: %.2e", len(ids), consistency)

    timings.append(("end", time.perf_counter()))
    tt = pd.DataFrame([(a[0], b[1] - a[1]) for a, b in zip(timings[:-1], timings[1:])],
                      columns=["step", "seconds"])
    with ctx.step("figures and report"):
        figs = _figures(ctx, recipe, world, store, map_skill,
                        dist if map_skill is not None else None)
        _report(ctx, recipe, world, store, summ, map_skill, consistency, base, model_sha,
                cog_paths, tt, figs, train_ids, hold_ids)
    tt.loc[len(tt)] = ("total (run)", time.perf_counter() - t_run)
    tt.to_csv(ctx.metrics / "timings.csv", index=False)


# ------------------------------------------------------------------------------ outputs


def _figures(ctx, recipe, world, store, map_skill, dist) -> dict[str, Path]:
    from .. import report
    from ..testing.daily import EFFLUX_UNITS

    if not recipe.report.figures:
        return {}
    dpi = recipe.report.dpi
    figs: dict[str, Path] = {}
    mean_map = store["efflux"].mean("time", skipna=False).compute()
    if map_skill is None:
        label = "SYNTHETIC: " if world is not None else ""
        figs["map"] = report.map_png(mean_map, ctx.figures / "efflux_mean.png",
                                     title=f"{label}mean daily efflux (LSTM)", cmap="YlOrBr",
                                     units=EFFLUX_UNITS, synthetic=world is not None, dpi=dpi)
        return figs
    true_mean = world.truth["efflux_true"].mean("time", skipna=False)
    figs["maps"] = report.map_panels_png(
        {"true mean efflux (answer key)": true_mean, "LSTM map, mean efflux": mean_map},
        ctx.figures / "efflux_truth_vs_map.png", cmap="YlOrBr", units=EFFLUX_UNITS,
        synthetic=True, dpi=dpi)
    # the daily series at the land pixel farthest from every training site
    from matplotlib.figure import Figure

    d = np.where(world.cube["land_mask"].values, dist.values, -1.0)
    iy, ix = np.unravel_index(int(np.argmax(d)), d.shape)
    t = pd.DatetimeIndex(store["time"].values)
    fig = Figure(figsize=(9, 3.2))
    ax = fig.subplots()
    ax.plot(t, world.truth["efflux_true"].values[:, iy, ix], lw=1.2, label="truth")
    ax.plot(t, store["efflux"].isel(y=iy, x=ix).values, lw=1.0, label="LSTM map")
    ax.set_ylabel(f"efflux ({EFFLUX_UNITS})")
    ax.set_title(f"SYNTHETIC: pixel {d[iy, ix]:.1f} km from the nearest training site")
    ax.legend(loc="upper left", frameon=False)
    figs["series"] = report.save_figure(fig, ctx.figures / "efflux_far_pixel.png", dpi=dpi,
                                        synthetic=True)
    return figs


def _report(ctx, recipe, world, store, summ, map_skill, consistency, model, model_sha,
            cog_paths, timings, figs, train_ids, hold_ids) -> None:
    from .. import report

    cfg_w, cfg_l, cfg_m = recipe.daily_world, recipe.lstm, recipe.efflux_map
    n_days = store.sizes["time"]
    ny, nx = store.sizes["y"], store.sizes["x"]
    label = "SYNTHETIC: " if world is not None else ""
    sections = []
    if world is not None:
        sections += [
            ("What this is", (
                f"{recipe.description or 'A daily soil CO2 efflux map from one LSTM.'}\n\n"
                "Every number below describes the method on a world built with a known answer; "
                "none is a measurement or an estimate of the real world.")),
            ("The synthetic daily world", (
                f"- grid: {cfg_w.ny} x {cfg_w.nx} pixels of {cfg_w.resolution} deg (about 500 m), "
                f"EPSG:4326; {int(world.cube['land_mask'].sum())} land pixels\n"
                f"- {n_days} days from {cfg_w.year}; drivers {', '.join(cfg_l.drivers)}; statics "
                f"{', '.join(cfg_l.statics) or 'none'}\n"
                f"- {cfg_w.n_zones} true zones, efflux with memory (Birch rain pulses after dry "
                f"spells, lagged vegetation); {len(world.sites)} sites, {len(world.long)} daily "
                f"observations, noise SD {cfg_w.noise_sd}; seed {cfg_w.seed}\n\n"
                + report.markdown_table(world.zones[["zone", "name", "r_ref", "q10", "birch",
                                                     "veg_gain", "pixels", "n_sites",
                                                     "efflux_mean"]], floatfmt=".2f"))),
        ]
    else:
        sections.append(("What this is", (
            f"{recipe.description or 'A daily soil CO2 efflux map from one LSTM.'}\n\n"
            f"Driver cube `{cfg_m.driver_cube}` ({n_days} days, {ny} x {nx} pixels; drivers "
            f"{', '.join(cfg_l.drivers)}; statics {', '.join(cfg_l.statics) or 'none'}); sites "
            f"`{cfg_m.sites_file}`. There is no answer key for real inputs: skill is measured at "
            "sites only.")))
    sections += [
        ("The LSTM and its skill at sites", (
            f"Hidden {cfg_l.hidden_size}, {cfg_l.seq_len}-day subsequences, batch "
            f"{cfg_l.batch_size}, {model.epoch_} epochs of {model.n_batches_per_epoch_} batches "
            f"({model.fit_seconds_:.0f} s); asinh + min-max scaling fitted on the training parts "
            f"only. {len(train_ids)} sites train on the first {cfg_l.train_fraction:.0%} of "
            f"their observed days and are scored on the rest (split temporal); {len(hold_ids)} "
            "sites are never shown to training and are scored over their whole record (split "
            "holdout). Site drivers are extracted from the same cube that is mapped.\n\n"
            "Median per-site skill:\n\n" + report.markdown_table(summ)
            + f"\n\nModel package: `model/` (kind lstm, `model.json` sha256 "
            f"`{model_sha[:16]}...`; map it over another daily cube with `globalflux map "
            "model CUBE --out M.zarr`).")),
    ]
    sections.append(("The daily map", (
        f"`maps/efflux.zarr`: {n_days} days x {ny} x {nx} pixels, LSTM state carried across "
        f"time chunks of {cfg_m.time_chunk} days; {len(cog_paths)} COGs (one per "
        f"{cfg_m.cog_every}) in `maps/cog/`, STAC in `maps/stac/`. The map at each site's pixel "
        f"equals that site's own prediction to {consistency:.1e} (one mapping path).")))
    if map_skill is not None:
        far = map_skill.set_index("region").loc["pixels_far_from_sites"]
        sections.append(("The daily map against the truth", (
            f"Scored over every day of every land pixel; far = at least {cfg_m.far_km:g} km from "
            f"every training site. Far from sites: **R2 {far['r2']:.3f}** on {int(far['pixels'])} "
            "pixels.\n\n" + report.markdown_table(map_skill) + "\n\n"
            "![truth vs map](figures/efflux_truth_vs_map.png)\n\n"
            "![far pixel](figures/efflux_far_pixel.png)")))
    sections.append(("Timings", "Wall seconds per step.\n\n"
                     + report.markdown_table(timings, floatfmt=".1f")))
    report.write_report(ctx.out / "report.md", f"{label}{recipe.name}", sections,
                        synthetic=world is not None,
                        provenance={"recipe": "recipe.yaml", "workflow": recipe.workflow,
                                    "model": f"model/ (sha256 {model_sha})",
                                    "figures": ", ".join(f"figures/{p.name}"
                                                         for p in figs.values())})
