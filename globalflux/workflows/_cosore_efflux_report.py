"""Figures and report.md of the ``cosore_efflux_daily`` workflow (private helper)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..report import _plt, markdown_table, write_report

_NAMES = {"lstm": "LSTM", "q10": "Q10", "lt": "Lloyd-Taylor", "clim": "DOY climatology",
          "gq10": "global Q10 (attributes)"}
_PREFIX = {"lstm": "", "q10": "q10_", "lt": "lt_", "clim": "clim_", "gq10": "gq10_"}
_BASE = ("q10", "lt", "clim", "gq10")


def _examples(table: pd.DataFrame, min_test: int) -> dict[str, str]:
    """One site per class: the site with the median test NSE of its class (enough test days)."""
    out = {}
    for cls in ("good", "fair", "poor"):
        sub = table[(table["class"] == cls) & (table["n_test"] >= min_test)].sort_values("nse_test")
        if len(sub):
            out[cls] = str(sub.iloc[len(sub) // 2]["site_id"])
    return out


def figures(folder: Path, ds, y, preds, train, table, cfg) -> dict[str, str]:
    plt = _plt()
    figs: dict[str, str] = {}
    sites = [str(s) for s in ds["site"].values]
    time = pd.DatetimeIndex(ds["time"].values)
    ex = _examples(table, cfg.min_days_per_class_figure)
    if ex:
        fig, axes = plt.subplots(len(ex), 1, figsize=(10, 2.8 * len(ex)), squeeze=False)
        for ax, (cls, sid) in zip(axes[:, 0], ex.items(), strict=True):
            i = sites.index(sid)
            obs = np.isfinite(y[i])
            idx = np.flatnonzero(obs)
            a, b = idx[0], idx[-1] + 1
            t = time[a:b]
            ax.plot(t, y[i, a:b], ".", ms=2.5, color="k", label="observed")
            ax.plot(t, preds["lstm"][i, a:b], lw=1.0, color="tab:red", label="LSTM")
            ax.plot(t, preds["q10"][i, a:b], lw=0.8, color="tab:blue", alpha=0.7, label="Q10")
            ax.plot(t, preds["clim"][i, a:b], lw=0.8, color="tab:green", alpha=0.7,
                    label="DOY climatology")
            split = time[np.flatnonzero(train[i])[-1]]
            ax.axvline(split, color="grey", ls="--", lw=0.8)
            row = table.set_index("site_id").loc[sid]
            ax.set_title(f"{cls}: {sid} ({row['igbp']}), test NSE {row['nse_test']:.2f}, "
                         f"KGE {row['kge_test']:.2f} (dashed: train | test)", fontsize=9)
            ax.set_ylabel("Rs (g C m-2 d-1)")
        axes[0, 0].legend(fontsize=7, ncol=4, loc="upper left")
        fig.tight_layout()
        fig.savefig(folder / "timeseries_examples.png", dpi=110)
        plt.close(fig)
        figs["timeseries"] = "figures/timeseries_examples.png"

    # temperature response: observed and predicted Rs against Ts on the test parts
    ts = ds["Ts"].values
    test = ~train & np.isfinite(y)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, (k, colour) in zip(axes, (("lstm", "tab:red"), ("q10", "tab:blue"),
                                      ("lt", "tab:purple")), strict=True):
        ax.scatter(ts[test], y[test], s=3, color="k", alpha=0.25, label="observed")
        ax.scatter(ts[test], preds[k][test], s=3, color=colour, alpha=0.35, label=_NAMES[k])
        ax.set_xlabel("soil temperature Ts (degC)")
        ax.set_title(f"test days, all sites: {_NAMES[k]}", fontsize=9)
        ax.legend(fontsize=7, markerscale=3)
    axes[0].set_ylabel("Rs (g C m-2 d-1)")
    axes[0].set_yscale("symlog", linthresh=1.0)
    fig.tight_layout()
    fig.savefig(folder / "temperature_response.png", dpi=110)
    plt.close(fig)
    figs["temperature"] = "figures/temperature_response.png"

    # metric distributions
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("nse_test", "kge_test"), strict=True):
        data = [np.clip(table[_PREFIX[k] + metric].dropna().to_numpy(), -3, 1) for k in _NAMES]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(_NAMES) + 1), list(_NAMES.values()), fontsize=8)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_title(f"{metric.replace('_', ' ')} per site (values below -3 drawn at -3; "
                     "triangle: mean of the drawn values)", fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "metric_distributions.png", dpi=110)
    plt.close(fig)
    figs["distributions"] = "figures/metric_distributions.png"

    return figs


def _loss_figure(folder: Path, losses) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, loss in enumerate(losses):
        ax.plot(np.arange(1, len(loss) + 1), loss, lw=1.0, label=f"seed {i}")
    if len(losses) > 1:
        ax.legend(fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (scaled MSE)")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(folder / "training_loss.png", dpi=110)
    plt.close(fig)
    return "figures/training_loss.png"


def _summary(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for k, name in _NAMES.items():
        p = _PREFIX[k]
        row = {"model": name}
        for m in ("nse", "kge", "r"):
            for part in ("train", "test"):
                col = table[f"{p}{m}_{part}"]
                if part == "test":
                    row[f"median {m} test"] = float(col.median())
                    row[f"mean {m} test"] = float(col.mean())
                else:
                    row[f"median {m} train"] = float(col.median())
        cls = table["class" if k == "lstm" else f"{k}_class"]
        for c in ("good", "fair", "poor"):
            row[c] = int((cls == c).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def ranked_differences(table: pd.DataFrame, min_test_days: int) -> pd.Series:
    """LSTM minus Lloyd-Taylor test NSE per site, only at sites with >= ``min_test_days`` test days.

    NSE over a few test days divides by a tiny variance; such sites would top any ranking.
    """
    ok = table["n_test"] >= min_test_days
    return (table.loc[ok, "nse_test"] - table.loc[ok, "lt_nse_test"]).dropna()


def _wins(table: pd.DataFrame, min_test: int) -> pd.DataFrame:
    """LSTM against each baseline per site, over sites with at least ``min_test`` test days."""
    table = table[table["n_test"] >= min_test]
    rows = []
    for k in _BASE:
        for m in ("nse", "kge"):
            a = table[f"{m}_test"]
            b = table[f"{k}_{m}_test"]
            ok = a.notna() & b.notna()
            rows.append({"baseline": _NAMES[k], "metric": f"{m} test", "sites": int(ok.sum()),
                         "LSTM better": int((a[ok] > b[ok]).sum()),
                         "baseline better": int((a[ok] < b[ok]).sum()),
                         "median difference (LSTM - baseline)": float((a[ok] - b[ok]).median())})
    return pd.DataFrame(rows)


def _med(col) -> float:
    col = pd.Series(col).dropna()
    return float(col.median()) if len(col) else float("nan")


def _split_sections(cfg, full: pd.DataFrame, table: pd.DataFrame, selection: pd.DataFrame,
                    model) -> list[tuple[str, str]]:
    """Holdout, location k-fold, ensemble and masked-driver sections."""
    out = []
    hold = full[full["split"] == "holdout"]
    fold = full[full["split"] == "fold"]
    if len(hold):
        cols = ["site_id", "igbp", "lat", "lon", "n_test", "nse_test", "kge_test", "r_test",
                "gq10_nse_test", "gq10_kge_test", "lstm_spread_test", "class"]
        body = (f"{len(hold)} site(s) in lstm.holdout_sites were never shown to training (neither "
                "their targets nor their drivers entered the fit or the scalers) and are scored "
                "over their whole record (n_test = all observed days). The fair baseline here is "
                "the global Q10 (parameters from static attributes, fitted on the training sites "
                "only); the per-site Q10, Lloyd-Taylor and climatology need the site's own data "
                "and are not defined for these sites.\n\n" + markdown_table(hold[cols])
                + f"\n\nMedian over holdout sites: LSTM NSE {_med(hold['nse_test']):.3f}, KGE "
                f"{_med(hold['kge_test']):.3f}; global Q10 NSE {_med(hold['gq10_nse_test']):.3f}, "
                f"KGE {_med(hold['gq10_kge_test']):.3f}. For comparison, the temporal test parts "
                f"of the {len(table)} training sites: LSTM NSE {_med(table['nse_test']):.3f}, KGE "
                f"{_med(table['kge_test']):.3f}; global Q10 NSE {_med(table['gq10_nse_test']):.3f}, "
                f"KGE {_med(table['gq10_kge_test']):.3f}.")
        out.append(("Sites never seen in training (split holdout)", body))
    if len(fold):
        rows = []
        for name, t in (("temporal 80/20 (test parts)", table), (f"location {cfg.folds}-fold "
                        "(whole records of held-out locations)", fold)):
            rows.append({"validation": name, "sites": len(t),
                         "LSTM median NSE": _med(t["nse_test"]),
                         "LSTM median KGE": _med(t["kge_test"]),
                         "global Q10 median NSE": _med(t["gq10_nse_test"]),
                         "global Q10 median KGE": _med(t["gq10_kge_test"]),
                         "LSTM good/fair/poor": "/".join(str(int((t["class"] == c).sum()))
                                                         for c in ("good", "fair", "poor"))})
        out.append(("Location k-fold beside the temporal split", (
            f"Whole locations (sites within {cfg.location_radius_km} km of each other) held out "
            f"in {cfg.folds} folds; one model per fold trained on the other folds' whole records "
            "(holdout sites never included); every site scored over its whole record by the "
            "model that never saw its location.\n\n" + markdown_table(pd.DataFrame(rows)))))
    n_mem = len(model.members_)
    if n_mem > 1:
        rows = []
        for name, t in (("temporal test", table), ("holdout (whole record)", hold)):
            if not len(t):
                continue
            rows.append({"sites": f"{name}, {len(t)} sites",
                         f"ensemble mean ({n_mem}) median NSE": _med(t["nse_test"]),
                         "single seed (seed 0) median NSE": _med(t["seed0_nse_test"]),
                         f"ensemble mean ({n_mem}) median KGE": _med(t["kge_test"]),
                         "single seed (seed 0) median KGE": _med(t["seed0_kge_test"]),
                         "mean spread (g C m-2 d-1)": float(t["lstm_spread_test"].mean())})
        out.append(("Seed ensemble beside the single-seed run", (
            f"{n_mem} members (seeds {cfg.seed}..{cfg.seed + n_mem - 1}), each trained like the "
            "single model; the prediction is the ensemble mean and the spread (standard deviation "
            "across members, column lstm_spread in predictions.csv, its mean over a site's scored "
            "days lstm_spread_test in metrics/lstm_sites.csv) the uncertainty. Seed 0 alone is "
            "the single-seed model.\n\n" + markdown_table(pd.DataFrame(rows)))))
    masked = table[table["missing_drivers"].fillna("").astype(str).str.len() > 0]
    if cfg.missing_drivers == "mask":
        hm = hold[hold["missing_drivers"].fillna("").astype(str).str.len() > 0]
        body = (f"Sites lacking a site driver on all their observed days are kept (lstm."
                f"missing_drivers: mask): every site driver ({', '.join(model.members_[0].masked_drivers) or 'none'}) "
                "has a 0/1 availability input and its missing values are filled with the "
                f"training mean after scaling. This adds **{len(masked) + len(hm)} site(s)** that "
                "would otherwise be dropped")
        if len(masked):
            body += (f"; their median temporal test NSE is {_med(masked['nse_test']):.3f} and KGE "
                     f"{_med(masked['kge_test']):.3f} (the other {len(table) - len(masked)} "
                     f"training sites: NSE {_med(table.loc[~table.index.isin(masked.index), 'nse_test']):.3f}, "
                     f"KGE {_med(table.loc[~table.index.isin(masked.index), 'kge_test']):.3f}). "
                     "The temperature baselines have no prediction where Ts is missing.\n\n"
                     + markdown_table(masked[["site_id", "igbp", "missing_drivers", "n_test",
                                              "nse_test", "kge_test", "clim_nse_test",
                                              "gq10_nse_test", "class"]]))
        else:
            body += "."
        out.append(("Sites added by masking missing drivers", body))
    return out


def write(ctx, recipe, full, by_class, acf_cor, selection, model, figs, notes, paper, raw,
          seconds, *, min_test: int = 60) -> Path:
    cfg = recipe.lstm
    table = full[full["split"] == "temporal"].reset_index(drop=True)
    m0 = model.members_[0]
    figs = dict(figs)
    figs["loss"] = _loss_figure(ctx.figures, [m.loss_history_ for m in model.members_])
    summ = _summary(table)
    wins = _wins(table, min_test)
    lstm_nse = float(table["nse_test"].median())
    lstm_kge = float(table["kge_test"].median())
    comp = pd.DataFrame([
        {"": "median test NSE", "this run (LSTM)": lstm_nse, "Smykalov et al. (LSTM)": paper["nse_test"],
         **{_NAMES[k]: float(table[f"{k}_nse_test"].median()) for k in _BASE}},
        {"": "median test KGE", "this run (LSTM)": lstm_kge, "Smykalov et al. (LSTM)": paper["kge_test"],
         **{_NAMES[k]: float(table[f"{k}_kge_test"].median()) for k in _BASE}},
    ])
    cols = [f"{_PREFIX[k]}{m}_test" for k in _NAMES for m in ("nse", "kge")]
    both = table[cols].notna().all(axis=1)
    comp = pd.concat([comp, pd.DataFrame([
        {"": f"median test {m.upper()}, the {int(both.sum())} sites all models score",
         "this run (LSTM)": float(table.loc[both, f"{m}_test"].median()),
         "Smykalov et al. (LSTM)": paper[f"{m}_test"],
         **{_NAMES[k]: float(table.loc[both, f"{k}_{m}_test"].median()) for k in _BASE}}
        for m in ("nse", "kge")])], ignore_index=True)
    best = {k: float(table[f"{_PREFIX[k]}nse_test"].median()) for k in _NAMES}
    order = sorted(best, key=best.get, reverse=True)
    n_used = int(selection["used"].sum())
    dropped = selection[~selection["used"]]

    win_lines = [f"Over the {int((table['n_test'] >= min_test).sum())} of {len(table)} sites with "
                 f"at least {min_test} test days (report.min_test_days):"]
    for k in _BASE:
        w = wins[(wins["baseline"] == _NAMES[k]) & (wins["metric"] == "nse test")].iloc[0]
        win_lines.append(f"- vs {_NAMES[k]}: LSTM has the higher test NSE at {w['LSTM better']} of "
                         f"{w['sites']} sites, the lower at {w['baseline better']} (median "
                         f"difference {w['median difference (LSTM - baseline)']:+.3f}).")
    # rank site-level differences only where the test set is long enough to score (NSE on a
    # few test days has a tiny denominator and ranks noise)
    min_days = min_test
    d = ranked_differences(table, min_days)
    if len(d):
        top = d.sort_values()
        fmt = lambda idx: ", ".join(  # noqa: E731 - local formatting helper
            f"{table.loc[i, 'site_id']} ({table.loc[i, 'igbp']}, {d[i]:+.2f})" for i in idx)
        win_lines.append(f"- Largest LSTM wins over Lloyd-Taylor (test NSE difference, over the "
                         f"{len(d)} sites with >= {min_days} test days; report.min_test_days): "
                         f"{fmt(top.index[::-1][:3])}; largest losses: {fmt(top.index[:3])}.")
    else:
        win_lines.append(f"- No site has >= {min_days} test days (report.min_test_days): site "
                         "differences are not ranked.")
    lstm_cls = by_class[by_class["model"] == "LSTM"].set_index("class")
    cls_lines = []
    for c in ("top5", "bottom5", "spikes"):
        if c in lstm_cls.index:
            r = lstm_cls.loc[c]
            cls_lines.append(f"{c}: n={int(r['n'])}, bias {r['bias']:+.3f} g C m-2 d-1, RMSE "
                             f"{r['rmse']:.3f}")
    acf_best = acf_cor.loc[acf_cor["rho"].abs().idxmax()] if acf_cor["rho"].notna().any() else None

    sections = [
        ("What this is", (
            f"One LSTM (hidden {cfg.hidden_size}, dropout {cfg.dropout}, linear head; statics "
            f"concatenated to every step) trained on {len(table)} COSORE sites at once on random "
            f"{cfg.seq_len}-day subsequences (masked MSE, {m0.epoch_} epochs of "
            f"{m0.n_batches_per_epoch_} batches x {cfg.batch_size}"
            + (f"; an ensemble of {len(model.members_)} seeds, prediction = mean" if len(model.members_) > 1 else "")
            + "), judged per site on the "
            f"last {100 - round(100 * cfg.train_fraction)}% of each site's own observed days "
            f"(protocol of Smykalov et al.). Drivers: {', '.join(cfg.drivers)}; statics: "
            f"{', '.join(m0.statics)}. Real data (COSORE v0.8.0); nothing here is synthetic. "
            "No setting was tuned on the test periods: the recipe's values were fixed before the "
            "run and the test parts enter only the scores below.")),
        ("Headline: test-period medians next to the paper and the baselines",
         markdown_table(comp) + "\n\nThe first two rows are over every site a model scores "
         "(a temperature model scores no test NSE where the test part has no soil temperature); "
         "the last two over the sites all models score. The paper's values are for its own "
         "site set and COSORE version, so they are context, not a like-for-like comparison."
         "\n\nModels ranked by median test NSE: "
         + " > ".join(f"{_NAMES[k]} ({best[k]:.3f})" for k in order) + "."),
        ("All models: medians, means and classes",
         markdown_table(summ) + "\n\nClasses (Smykalov et al.): good = test NSE > 0.5 and "
         "KGE > 0.3; poor = NSE < 0.3 or KGE < 0.0; fair otherwise."),
        ("Where the LSTM wins and loses", "\n".join(win_lines) + "\n\n" + markdown_table(wins)),
        ("Extremes and spikes (test days, pooled over sites)",
         "Each site's observed test values split at its own 5th/95th percentiles; spikes are "
         "|z| > 3 in a centred 30-day window. Scored on the test days where every model has a "
         "prediction (the temperature models have none where Ts is missing).\n\n" + markdown_table(by_class)
         + "\n\nLSTM: " + "; ".join(cls_lines) + "."),
        ("Autocorrelation and skill",
         "Spearman correlation across sites between the autocorrelation of observed Rs at lags "
         "1, 182, 365 days and the LSTM's test metrics.\n\n" + markdown_table(acf_cor)
         + ("" if acf_best is None else
            f"\n\nStrongest: {acf_best['feature']} vs {acf_best['score']} (rho "
            f"{acf_best['rho']:.2f}, n={int(acf_best['n'])}).")),
        *_split_sections(cfg, full, table, selection, model),
        ("Per-site results (temporal split)", markdown_table(
            table[["site_id", "igbp", "n_train", "n_test", "nse_test", "kge_test", "r_test",
                   "q10_nse_test", "lt_nse_test", "clim_nse_test", "gq10_nse_test", "class"]])),
        ("Figures", "\n".join(f"![{k}]({v})" for k, v in figs.items())),
        ("Data and sites", (
            f"{n_used} sites used ({n_used - len(table)} of them holdout) of {len(selection)} with {cfg.target} after QC "
            f"(min_days {cfg.min_days}, seq_len {cfg.seq_len}). Dropped: "
            + ("; ".join(f"{r.site_id} ({r.reason})" for r in dropped.itertuples()) or "none")
            + ". Datasets COSORE could not load: "
            + (", ".join(raw.status.loc[raw.status["status"] != "ok", "dataset"].astype(str))
               or "none") + ". "
            + " ".join(f"{k}: {v}." for k, v in notes.items())
            + f" Driver gaps up to {cfg.gap_fill_days} days linearly interpolated; longer gaps "
            "imputed with the training mean (scaled). Run time "
            f"{seconds / 60:.1f} min.")),
    ]
    return write_report(
        ctx.out / "report.md", f"{recipe.name}: global LSTM for daily soil CO2 efflux (COSORE)",
        sections,
        provenance={"data": "COSORE (Bond-Lamberty et al. 2020, doi:10.1111/gcb.15353), CC BY 4.0",
                    "method": "Smykalov et al. (global LSTM); hydroDL subsequence training",
                    "recipe": "recipe.yaml in this folder", "checkpoint": "models/lstm"})
