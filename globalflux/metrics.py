"""Skill metrics as pure functions on 1-D arrays, with formulas and references.

Pairs where either the observation or the simulation is NaN are dropped first. Every metric
returns ``nan`` when fewer than two valid pairs remain (or the observations have no variance,
where the formula divides by it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["valid_pairs", "rmse", "bias", "r2", "nse", "kge", "kge_components", "pearson_r", "summary"]


def valid_pairs(obs, sim) -> tuple[np.ndarray, np.ndarray]:
    """Flatten to float64 and drop pairs with a NaN on either side."""
    o = np.asarray(obs, dtype="float64").ravel()
    s = np.asarray(sim, dtype="float64").ravel()
    if o.shape != s.shape:
        raise ValueError(f"obs and sim differ in length ({o.size} vs {s.size})")
    ok = np.isfinite(o) & np.isfinite(s)
    return o[ok], s[ok]


def rmse(obs, sim) -> float:
    r"""Root mean square error, :math:`\sqrt{\overline{(s-o)^2}}` (units of the data)."""
    o, s = valid_pairs(obs, sim)
    if o.size < 1:
        return float("nan")
    return float(np.sqrt(np.mean((s - o) ** 2)))


def bias(obs, sim) -> float:
    r"""Mean error :math:`\overline{s - o}` (positive: simulation too high)."""
    o, s = valid_pairs(obs, sim)
    if o.size < 1:
        return float("nan")
    return float(np.mean(s - o))


def nse(obs, sim) -> float:
    r"""Nash-Sutcliffe efficiency (Nash and Sutcliffe 1970, J. Hydrol. 10:282-290).

    .. math:: NSE = 1 - \frac{\sum (s_t - o_t)^2}{\sum (o_t - \bar o)^2}

    1 is perfect; 0 is no better than the mean of the observations; unbounded below.
    """
    o, s = valid_pairs(obs, sim)
    if o.size < 2:
        return float("nan")
    den = np.sum((o - o.mean()) ** 2)
    if den == 0:
        return float("nan")
    return float(1.0 - np.sum((s - o) ** 2) / den)


def r2(obs, sim) -> float:
    r"""Coefficient of determination as used for LOSO skill (Zhu et al. 2024):
    :math:`R^2 = 1 - SS_{res}/SS_{tot}`, identical to :func:`nse` (``sklearn.metrics.r2_score``)."""
    return nse(obs, sim)


def pearson_r(obs, sim) -> float:
    r"""Pearson correlation :math:`r = \mathrm{cov}(o,s) / (\sigma_o \sigma_s)`."""
    o, s = valid_pairs(obs, sim)
    if o.size < 2 or o.std() == 0 or s.std() == 0:
        return float("nan")
    return float(np.corrcoef(o, s)[0, 1])


def kge_components(obs, sim) -> tuple[float, float, float, float]:
    r"""Kling-Gupta efficiency and its parts (Gupta et al. 2009, J. Hydrol. 377:80-91).

    .. math:: KGE = 1 - \sqrt{(r-1)^2 + (\alpha-1)^2 + (\beta-1)^2},\quad
              \alpha = \sigma_s/\sigma_o,\ \beta = \mu_s/\mu_o

    Returns ``(kge, r, alpha, beta)``. Population standard deviations (ddof=0), as hydroeval.
    """
    o, s = valid_pairs(obs, sim)
    nan = float("nan")
    if o.size < 2 or o.std() == 0 or o.mean() == 0:
        return nan, nan, nan, nan
    r = pearson_r(o, s) if s.std() > 0 else 0.0
    alpha = s.std() / o.std()
    beta = s.mean() / o.mean()
    k = 1.0 - np.sqrt((r - 1.0) ** 2 + (alpha - 1.0) ** 2 + (beta - 1.0) ** 2)
    return float(k), float(r), float(alpha), float(beta)


def kge(obs, sim) -> float:
    """Kling-Gupta efficiency (Gupta et al. 2009); see :func:`kge_components`."""
    return kge_components(obs, sim)[0]


def summary(obs, sim) -> dict[str, float]:
    """n, R2, RMSE, bias, NSE, KGE and Pearson r of one set of pairs."""
    o, s = valid_pairs(obs, sim)
    return {
        "n": int(o.size),
        "r2": r2(o, s),
        "rmse": rmse(o, s),
        "bias": bias(o, s),
        "nse": nse(o, s),
        "kge": kge(o, s),
        "r": pearson_r(o, s),
    }
