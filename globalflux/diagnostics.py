"""Diagnostics of daily site series: autocorrelation features, spikes and extremes (Smykalov et al.).

* :func:`autocorrelation`: lag-``k`` autocorrelation of a gappy daily series (pairs of days
  ``k`` apart that are both observed; Pearson r). Lag 1 measures smoothness, lag 182
  seasonality (a strong seasonal cycle gives a negative value), lag 365 yearly cyclicality.
* :func:`site_autocorrelation` per site, and :func:`correlate_features` with test metrics
  (Spearman rank correlation across sites).
* :func:`spike_mask`: days whose value lies more than ``z`` (3) standard deviations from the
  mean of a centred ``window``-day (30) window.
* :func:`value_classes`: each site's observed values split into bottom 5% / middle 90% / top 5%
  by that site's own quantiles; :func:`score_by_class` scores predictions within each class.

The evaluation protocol of Smykalov et al. is here too: :func:`temporal_split` (each site split
in time at 80% of its own observed days), :func:`site_scores` (NSE, KGE, r on train and test)
and :func:`skill_class` (good: test NSE > 0.5 and KGE > 0.3; poor: NSE < 0.3 or KGE < 0.0;
fair otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from . import metrics
from .validation import temporal_split  # the split lives with the other schemes

__all__ = [
    "autocorrelation",
    "site_autocorrelation",
    "correlate_features",
    "spike_mask",
    "value_classes",
    "score_by_class",
    "CLASSES",
    "temporal_split",
    "site_scores",
    "skill_class",
    "PAPER_MEDIANS",
]

#: test-period medians over sites reported by Smykalov et al. for their global LSTM
PAPER_MEDIANS = {"nse_test": 0.02, "kge_test": 0.30}

CLASSES = ("bottom5", "middle90", "top5")


def autocorrelation(x, lag: int, min_pairs: int = 10) -> float:
    """Pearson correlation of ``x[t]`` and ``x[t + lag]`` over pairs where both are finite.

    ``x`` is a daily series on a regular calendar (NaN where not observed). Returns NaN with
    fewer than ``min_pairs`` pairs or no variance.
    """
    a = np.asarray(x, dtype="float64").ravel()
    if lag < 1 or lag >= a.size:
        return float("nan")
    u, v = a[:-lag], a[lag:]
    ok = np.isfinite(u) & np.isfinite(v)
    if ok.sum() < min_pairs:
        return float("nan")
    return metrics.pearson_r(u[ok], v[ok])


def site_autocorrelation(series: Mapping[str, np.ndarray] | pd.DataFrame,
                         lags: Sequence[int] = (1, 182, 365), min_pairs: int = 10) -> pd.DataFrame:
    """Autocorrelation at ``lags`` for each site.

    Parameters
    ----------
    series
        Mapping site id -> daily series (regular calendar, NaN gaps), or a DataFrame with one
        column per site.

    Returns
    -------
    DataFrame indexed by ``site_id`` with columns ``acf_<lag>``.
    """
    rows = {str(k): {f"acf_{lag}": autocorrelation(v, lag, min_pairs) for lag in lags}
            for k, v in series.items()}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "site_id"
    return df


def correlate_features(features: pd.DataFrame, scores: pd.DataFrame,
                       method: str = "spearman", min_sites: int = 5) -> pd.DataFrame:
    """Correlation across sites of each feature column with each score column.

    Returns a DataFrame (features x scores) of correlations, plus ``n`` (sites used) as a
    MultiIndex-free long table: columns ``feature, score, n, rho``.
    """
    joined = features.join(scores, how="inner")
    rows = []
    for f in features.columns:
        for s in scores.columns:
            pair = joined[[f, s]].astype("float64").dropna()
            n = len(pair)
            rho = (pair[f].corr(pair[s], method=method) if n >= min_sites else np.nan)
            rows.append({"feature": f, "score": s, "n": n, "rho": float(rho)})
    return pd.DataFrame(rows)


def spike_mask(x, window: int = 30, z: float = 3.0, min_periods: int = 10) -> np.ndarray:
    """True where ``|x - mean| > z * std`` of the centred ``window``-day window around the day.

    The window includes the day itself; NaN days are never spikes; windows with fewer than
    ``min_periods`` values or zero spread flag nothing.
    """
    s = pd.Series(np.asarray(x, dtype="float64").ravel())
    roll = s.rolling(window, center=True, min_periods=min_periods)
    mu, sd = roll.mean(), roll.std()
    dev = (s - mu).abs()
    out = (dev > z * sd) & (sd > 0) & s.notna()
    return out.to_numpy(dtype=bool)


def value_classes(obs, q: tuple[float, float] = (0.05, 0.95)) -> np.ndarray:
    """Label observed values ``bottom5`` (<= q-low quantile), ``top5`` (>= q-high) or
    ``middle90``; NaN observations get an empty label."""
    o = np.asarray(obs, dtype="float64").ravel()
    out = np.full(o.shape, "", dtype=object)
    ok = np.isfinite(o)
    if not ok.any():
        return out
    lo, hi = np.quantile(o[ok], q)
    out[ok] = "middle90"
    out[ok & (o <= lo)] = "bottom5"
    out[ok & (o >= hi)] = "top5"
    return out


def score_by_class(obs, sim, labels, extra_masks: Mapping[str, np.ndarray] | None = None
                   ) -> pd.DataFrame:
    """n, RMSE, bias, NSE, KGE and r of ``sim`` against ``obs`` within each class label.

    ``extra_masks`` adds named boolean selections (for example ``{"spikes": mask}``).
    """
    o = np.asarray(obs, dtype="float64").ravel()
    s = np.asarray(sim, dtype="float64").ravel()
    lab = np.asarray(labels, dtype=object).ravel()
    groups = {c: lab == c for c in CLASSES}
    for k, m in (extra_masks or {}).items():
        groups[k] = np.asarray(m, dtype=bool).ravel()
    rows = []
    for name, sel in groups.items():
        summ = metrics.summary(o[sel], s[sel])
        rows.append({"class": name, "n": summ["n"], "rmse": summ["rmse"], "bias": summ["bias"],
                     "nse": summ["nse"], "kge": summ["kge"], "r": summ["r"]})
    return pd.DataFrame(rows)


def site_scores(obs, sim, train, prefix: str = "") -> dict[str, float]:
    """NSE, KGE (Gupta et al. 2009) and Pearson r of one site on its train and test parts.

    Returns ``{prefix+"nse_train", prefix+"nse_test", prefix+"kge_train", ..., "r_test"}``.
    """
    o = np.asarray(obs, dtype="float64").ravel()
    s = np.asarray(sim, dtype="float64").ravel()
    tr = np.asarray(train, dtype=bool).ravel()
    out = {}
    for part, sel in (("train", tr), ("test", ~tr)):
        out[f"{prefix}nse_{part}"] = metrics.nse(o[sel], s[sel])
        out[f"{prefix}kge_{part}"] = metrics.kge(o[sel], s[sel])
        out[f"{prefix}r_{part}"] = metrics.pearson_r(o[sel], s[sel])
    return out


def skill_class(nse, kge) -> np.ndarray:
    """Smykalov et al.'s classes: ``good`` (NSE > 0.5 and KGE > 0.3), ``poor`` (NSE < 0.3 or
    KGE < 0.0), ``fair`` otherwise; ``n/a`` where either is NaN."""
    n = np.asarray(nse, dtype="float64")
    k = np.asarray(kge, dtype="float64")
    out = np.full(n.shape, "fair", dtype=object)
    out[(n < 0.3) | (k < 0.0)] = "poor"
    out[(n > 0.5) & (k > 0.3)] = "good"
    out[~(np.isfinite(n) & np.isfinite(k))] = "n/a"
    return out
