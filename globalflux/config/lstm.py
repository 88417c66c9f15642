"""Settings of the global LSTM for daily soil CO2 efflux (Smykalov et al.)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import RecipeError
from ._schema import option


@dataclass(frozen=True)
class LSTMConfig:
    """One LSTM for all sites (Smykalov et al.), its inputs, training schedule and protocol.

    An *epoch* is ``batches_per_epoch`` mini-batches of ``batch_size`` random ``seq_len``-day
    subsequences drawn across all sites (hydroDL style). With ``batches_per_epoch: null`` the
    number follows hydroDL's rule: enough batches that each observed training day is drawn at
    least once with probability 0.99, ``ceil(log(0.01) / log(1 - batch_size*seq_len/n_days))``.
    """

    hidden_size: int = option(128, doc="LSTM hidden units.", min=1)
    dropout: float = option(0.2, doc="Dropout on the LSTM output, before the linear head.",
                            min=0.0, max=0.9)
    seq_len: int = option(30, doc="Length of the random training subsequences (days); a site "
                          "needs at least this many days.", min=2, units="d")
    epochs: int = option(200, doc="Training epochs (see batches_per_epoch for what one epoch is).",
                         min=1)
    batch_size: int = option(64, doc="Subsequences per mini-batch.", min=1)
    batches_per_epoch: int | None = option(
        None, doc="Mini-batches per epoch; null: hydroDL's rule from the number of observed "
        "training days (each day drawn once with probability 0.99).", min=1)
    learning_rate: float = option(1e-3, doc="Adam learning rate.", min=0.0)
    device: Literal["auto", "cpu", "cuda"] = option(
        "cpu", doc="Torch device; auto uses CUDA when available.")
    num_threads: int | None = option(
        1, doc="Torch CPU threads while training and predicting; null: torch's default. 1 is "
        "fastest for this small network on a shared machine (OpenMP threads spin against other "
        "jobs: 16 ms vs 300 ms per batch measured on 2 busy cores).", min=1)
    seed: int = option(0, doc="Random seed (weights, subsequence draws, dropout).", min=0, max=2**32 - 1)
    target: Literal["Rs"] = option("Rs", doc="Modelled flux: Rs, soil CO2 efflux (g C m-2 d-1).")
    drivers: tuple[str, ...] = option(
        ("Ts", "SWC", "doy_sin", "doy_cos"),
        doc="Daily inputs: site variables (Ts soil temperature degC, SWC soil moisture m3/m3, Tair "
        "degC) and doy_sin/doy_cos (day of year on the unit circle).")
    statics: tuple[str, ...] = option(
        ("lat", "lon", "elevation", "igbp", "mat", "map", "soc"),
        doc="Static site attributes concatenated to every time step: lat, lon (deg), elevation "
        "(m), igbp (one-hot over the IGBP classes of the training sites), mat (degC), map (mm), "
        "soc (t/ha); mat/map/soc are sampled from the static grids.")
    static_grids_path: str = option(
        "../shared/data/grids",
        doc="Folder of static grids for mat/map/soc (soilresppartitioning 0.5 deg layers).")
    sites: tuple[str, ...] = option(
        (), doc="Site ids to model; empty: every site with enough data. A listed site that is too "
        "short or lacks a driver is an error (an unlisted one is dropped with a log line).")
    min_days: int = option(60, doc="Fewest observed target days a site needs to be used.", min=2,
                           units="d")
    train_fraction: float = option(
        0.8, doc="Each site is split in time at this fraction of its own observed days; the "
        "first part trains, the rest tests.", min=0.05, max=0.95)
    gap_fill_days: int = option(
        5, doc="Driver gaps up to this many days are filled by linear interpolation; longer gaps "
        "are imputed with the training mean (scaled space).", min=0, units="d")
    checkpoint: str | None = option(
        None, doc="Start from this checkpoint folder (weights.pt + config.json) instead of fresh "
        "weights; its configuration must match.")
    checkpoint_every: int = option(10, doc="Save a resumable checkpoint every this many epochs.",
                                   min=1)
    holdout_sites: tuple[str, ...] = option(
        (), doc="Site ids (COSORE dataset names) never shown to training: neither their targets "
        "nor their drivers enter the fit or the scalers; they are scored over their whole record "
        "(split holdout in metrics/lstm_sites.csv). An unknown id is an error.")
    validation: Literal["temporal", "location_kfold"] = option(
        "temporal", doc="temporal: the paper's per-site 80/20 split only. location_kfold: also "
        "hold whole locations (sites within location_radius_km) out in `folds` folds, train one "
        "model per fold on the other folds' whole records and score each held-out site over its "
        "whole record (split fold), reported beside the temporal split.")
    folds: int = option(5, doc="Number of location folds for validation: location_kfold.", min=2)
    location_radius_km: float = option(
        5.0, doc="Sites closer than this are one location (kept in one fold, never split "
        "between holdout and training by the folds).", min=0.0, units="km")
    missing_drivers: Literal["mask", "drop"] = option(
        "mask", doc="mask: a site lacking a site driver (Ts, SWC, Tair) on all its days still "
        "trains and predicts; every site driver gets a 0/1 availability input and missing values "
        "are filled with the training mean after scaling. drop: such sites are dropped (listed "
        "in lstm.sites: an error).")
    ensemble: int = option(
        1, doc="Members of a seed ensemble (seeds seed, seed+1, ...): the prediction is the "
        "ensemble mean, the spread (standard deviation across members) is the lstm_spread "
        "uncertainty column. Costs one training per member.", min=1)
    min_days_per_class_figure: int = option(
        20, doc="Fewest test days for a site to be drawn as a good/fair/poor example.", min=1)

    def validate(self, path: str = "", source: str | None = None) -> None:
        where = f"{source}: {path}" if source else (path or "lstm")
        if self.min_days < self.seq_len:
            raise RecipeError(
                f"min_days ({self.min_days}) is shorter than seq_len ({self.seq_len})",
                where=f"{where}.min_days",
                fix="Set min_days to at least seq_len.")
        if self.ensemble < 1:
            raise RecipeError(f"ensemble size {self.ensemble}", where=f"{where}.ensemble",
                              fix="Use at least 1 member (1: a single model).")
        dup = sorted({s for s in self.holdout_sites if list(self.holdout_sites).count(s) > 1})
        if dup:
            raise RecipeError(f"site {dup[0]!r} listed twice", where=f"{where}.holdout_sites",
                              fix="List each holdout site once.")
        both = [s for s in self.holdout_sites if s in self.sites]
        if both and len(both) == len(self.sites):
            raise RecipeError("every site in lstm.sites is a holdout site: nothing left to train on",
                              where=f"{where}.holdout_sites",
                              fix="Keep at least one site out of holdout_sites.")
        if not self.drivers:
            raise RecipeError("no drivers", where=f"{where}.drivers",
                              fix="List at least one daily input, e.g. [Ts, SWC].")
