"""Global totals of a flux map: pixel areas, coverage, uncertainty, published comparison.

Plain functions on xarray/pandas objects (no paths). The total of a map in g C m-2 yr-1 is
``sum(value x pixel area x land fraction)`` over land pixels, in Pg C yr-1 (1 Pg = 1e15 g).

Uncertainty of the total (:func:`total_uncertainty` combines them):

* **Bootstrap over locations** (:func:`bootstrap_totals`): the map model is refitted ``n``
  times on locations drawn with replacement (a drawn location brings all its records; a
  location drawn twice enters as two groups), each refit predicts the map and gives one total.
  The mean and the 5-95 % range of these totals carry the sampling error of the training
  locations, model selection included.
* **Held-out residual error** (:func:`residual_error_total`): the leave-one-location-out
  residuals give a per-pixel error spread, the residual standard deviation within bins of the
  predicted value (quantile bins of the held-out predictions). Errors are taken as fully
  correlated within square blocks of ``block_deg`` and independent between blocks, so the
  variance of the total is ``sum over blocks of (sum over the block's pixels of sd x area)^2``
  (a block-diagonal covariance; Wadoux & Heuvelink 2023 discuss why pixel errors cannot be
  summed as independent).
* The per-tree spread of the forest is *not* an uncertainty of the total; workflows report it
  only as "forest spread".

References
----------
Wadoux, A. M. J.-C. & Heuvelink, G. B. M. (2023), Uncertainty of spatial averages and totals of
natural resource maps, Methods in Ecology and Evolution 14, 1320-1332.
Efron, B. & Tibshirani, R. (1993), An Introduction to the Bootstrap (case resampling).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .errors import DataError

__all__ = [
    "EARTH_RADIUS_M",
    "KOPPEN_GROUPS",
    "PUBLISHED_RH",
    "PublishedEstimate",
    "pixel_area_m2",
    "land_weight",
    "map_coverage",
    "predict_map",
    "total_pg",
    "bootstrap_totals",
    "residual_sd_model",
    "residual_error_total",
    "total_uncertainty",
    "published_table",
    "compare_with_published",
]

EARTH_RADIUS_M = 6371007.181  # the MODIS sphere
KOPPEN_GROUPS = {1: "A tropical", 2: "B arid", 3: "C temperate", 4: "D cold", 5: "E polar"}


# ------------------------------------------------------------------------------- areas
def pixel_area_m2(cube: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """Area of each pixel on a sphere (m2): R^2 dlon (sin(lat_n) - sin(lat_s)), per row ``y``."""
    y = cube["y"].values
    x = cube["x"].values
    dy = abs(float(y[1] - y[0])) if len(y) > 1 else 1.0
    dx = abs(float(x[1] - x[0])) if len(x) > 1 else 1.0
    lat_n = np.deg2rad(np.clip(y + dy / 2, -90, 90))
    lat_s = np.deg2rad(np.clip(y - dy / 2, -90, 90))
    band = EARTH_RADIUS_M**2 * np.deg2rad(dx) * (np.sin(lat_n) - np.sin(lat_s))
    return xr.DataArray(band, dims=("y",), coords={"y": cube["y"]}, name="pixel_area",
                        attrs={"units": "m2"})


def land_weight(cube: xr.Dataset) -> xr.DataArray:
    """Land area of each pixel (m2): pixel area x ``land_fraction`` on ``land_mask``, NaN off land."""
    w = pixel_area_m2(cube) * cube["land_fraction"].astype("float64")
    w = w.where(cube["land_mask"].astype(bool)).transpose("y", "x")
    return w.rename("land_area").assign_attrs(units="m2")


def map_coverage(cube: xr.Dataset, features: Sequence[str], *,
                 valid: xr.DataArray | None = None) -> pd.DataFrame:
    """Land area (km2) and the part with a prediction, per Köppen main group.

    ``valid``: boolean (y, x) of predicted pixels (default: every feature present). Rows
    ``koppen, group, land_km2, predicted_km2, predicted_share`` and a last row ``all land``.
    """
    w = land_weight(cube)
    if valid is None:
        ok = xr.ones_like(cube["land_mask"], dtype=bool)
        for f in features:
            ok = ok & np.isfinite(cube[f].astype("float32"))
    else:
        ok = valid
    kg = cube["koppen"].astype("int16") if "koppen" in cube else xr.zeros_like(w, dtype="int16")
    frame = pd.DataFrame({"koppen": np.asarray(kg.transpose("y", "x").values).ravel(),
                          "w": np.asarray(w.values).ravel(),
                          "ok": np.asarray(ok.transpose("y", "x").values).ravel()})
    frame = frame[np.isfinite(frame["w"])]
    frame["wp"] = frame["w"].where(frame["ok"], 0.0)
    out = frame.groupby("koppen").agg(land_km2=("w", "sum"), predicted_km2=("wp", "sum")) / 1e6
    out = out.reset_index()
    out.insert(1, "group", [KOPPEN_GROUPS.get(int(k), "none (0)") for k in out["koppen"]])
    total = pd.DataFrame([{"koppen": -1, "group": "all land", "land_km2": out["land_km2"].sum(),
                           "predicted_km2": out["predicted_km2"].sum()}])
    out = pd.concat([out, total], ignore_index=True)
    out["predicted_share"] = out["predicted_km2"] / out["land_km2"]
    return out


# ------------------------------------------------------------------------------- totals
def predict_map(model: Any, cube: xr.Dataset, features: Sequence[str], *,
                where: xr.DataArray | None = None) -> np.ndarray:
    """Eager prediction (y, x) float64 of ``model`` on land pixels with every feature present.

    For the coarse grids of totals and bootstraps (a 0.5 deg globe is 0.26 M pixels); maps
    go through :mod:`globalflux.mapping`. ``where`` restricts the pixels further.
    """
    feats = list(features)
    land = np.asarray(cube["land_mask"].transpose("y", "x").values, dtype=bool)
    cols = [np.asarray(cube[f].transpose("y", "x").values, dtype="float64").ravel() for f in feats]
    X = np.column_stack(cols) if cols else np.empty((land.size, 0))
    ok = land.ravel() & np.isfinite(X).all(axis=1)
    if where is not None:
        ok &= np.asarray(where.transpose("y", "x").values, dtype=bool).ravel()
    out = np.full(land.size, np.nan)
    if ok.any():
        out[ok] = np.asarray(model.predict(pd.DataFrame(X[ok], columns=feats)), dtype="float64")
    return out.reshape(land.shape)


def total_pg(values: np.ndarray, weight: xr.DataArray | np.ndarray) -> tuple[float, float]:
    """(total in Pg C yr-1, area in km2) of a (y, x) map in g C m-2 yr-1 over finite pixels."""
    w = np.asarray(weight, dtype="float64")
    v = np.asarray(values, dtype="float64")
    ok = np.isfinite(v) & np.isfinite(w)
    return float((v[ok] * w[ok]).sum() / 1e15), float(w[ok].sum() / 1e6)


def bootstrap_totals(
    fit_predict: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]],
    locations: Sequence[str],
    weight: xr.DataArray | np.ndarray,
    *,
    n: int = 50,
    random_state: int = 0,
    on_replicate: Callable[[int], None] | None = None,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Totals of ``n`` maps, each from a model refitted on locations drawn with replacement.

    Parameters
    ----------
    fit_predict
        ``fit_predict(rows, groups) -> {name: (y, x) map}``: fits the map model on the training
        rows ``rows`` (indices, repeated for locations drawn more than once) with group ids
        ``groups`` (a location drawn twice gets two ids), predicts, and returns one or more
        maps (e.g. ``"complete"``, ``"filled"``) in g C m-2 yr-1.
    locations
        Location id of each training row.
    weight
        Land area per pixel (m2), :func:`land_weight`.
    n, random_state
        Replicates and seed (all draws are made first, so the result does not depend on
        ``n_jobs``).
    n_jobs
        Replicates fitted in parallel with joblib processes (1: in this process).

    Returns
    -------
    DataFrame, one row per replicate: ``replicate, n_locations`` and ``<name>_pg`` per map.
    """
    loc = np.asarray(locations).astype(str)
    uniq, inv = np.unique(loc, return_inverse=True)
    members = [np.flatnonzero(inv == i) for i in range(len(uniq))]
    if len(uniq) < 2:
        raise DataError(f"{len(uniq)} location(s)", where="validation.bootstrap",
                        fix="The bootstrap over locations needs at least 2 locations.")
    rng = np.random.RandomState(random_state)
    draws = [rng.randint(0, len(uniq), size=len(uniq)) for _ in range(int(n))]
    w = np.asarray(weight, dtype="float64")

    def one(b: int) -> dict[str, Any]:
        draw = draws[b]
        idx = np.concatenate([members[d] for d in draw])
        grp = np.concatenate([np.full(len(members[d]), f"{uniq[d]}#{j}") for j, d in enumerate(draw)])
        maps = fit_predict(idx, grp)
        row: dict[str, Any] = {"replicate": b, "n_locations": int(len(np.unique(draw)))}
        for name, m in maps.items():
            row[f"{name}_pg"] = total_pg(m, w)[0]
        return row

    if n_jobs == 1:
        rows = []
        for b in range(int(n)):
            rows.append(one(b))
            if on_replicate is not None:
                on_replicate(b)
    else:
        from joblib import Parallel, delayed

        rows = list(Parallel(n_jobs=n_jobs)(delayed(one)(b) for b in range(int(n))))
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class ResidualModel:
    """Residual standard deviation as a step function of the predicted value.

    Attributes
    ----------
    edges
        Upper edges of the prediction bins (the last is +inf).
    sd
        Residual SD (g C m-2 yr-1) in each bin (root mean square of obs - pred).
    n
        Held-out records in each bin.
    """

    edges: np.ndarray
    sd: np.ndarray
    n: np.ndarray

    def __call__(self, pred: np.ndarray) -> np.ndarray:
        p = np.asarray(pred, dtype="float64")
        i = np.searchsorted(self.edges, p, side="left")
        out = self.sd[np.clip(i, 0, len(self.sd) - 1)]
        return np.where(np.isfinite(p), out, np.nan)


def residual_sd_model(y_obs, y_pred, *, n_bins: int = 5) -> ResidualModel:
    """Bin held-out predictions into ``n_bins`` quantile bins; RMS residual per bin."""
    o = np.asarray(y_obs, dtype="float64")
    p = np.asarray(y_pred, dtype="float64")
    ok = np.isfinite(o) & np.isfinite(p)
    o, p = o[ok], p[ok]
    if len(o) < 2 * n_bins:
        n_bins = max(1, len(o) // 2)
    if len(o) < 2:
        raise DataError(f"{len(o)} held-out prediction(s)", where="residual_sd_model",
                        fix="Validate the map model first (leave-one-location-out).")
    qs = np.quantile(p, np.linspace(0, 1, n_bins + 1)[1:-1]) if n_bins > 1 else np.array([])
    edges = np.append(qs, np.inf)
    i = np.searchsorted(edges, p, side="left")
    sd = np.array([np.sqrt(np.mean((o[i == k] - p[i == k]) ** 2)) if (i == k).any() else np.nan
                   for k in range(len(edges))])
    if np.isnan(sd).any():
        sd = np.where(np.isnan(sd), np.sqrt(np.mean((o - p) ** 2)), sd)
    return ResidualModel(edges=edges, sd=sd, n=np.bincount(i, minlength=len(edges)))


def residual_error_total(pred_map: np.ndarray, weight: xr.DataArray, model: ResidualModel, *,
                         block_deg: float = 5.0) -> float:
    """Standard deviation (Pg C yr-1) of the total from the held-out residual error.

    Each pixel's error SD is ``model(prediction)``; errors are fully correlated within square
    lat/lon blocks of ``block_deg`` and independent between blocks:
    ``var(total) = sum_blocks (sum_pixels sd_p * area_p)^2``.
    """
    if not (np.isfinite(block_deg) and block_deg > 0):
        raise DataError(f"block_deg={block_deg!r}", where="validation.residual_block_deg",
                        fix="Give a positive block edge in degrees, e.g. 5.")
    w = np.asarray(weight.transpose("y", "x").values, dtype="float64")
    p = np.asarray(pred_map, dtype="float64")
    ok = np.isfinite(p) & np.isfinite(w)
    sd_area = np.where(ok, model(np.where(ok, p, 0.0)) * np.where(ok, w, 0.0), 0.0)
    ys = np.asarray(weight["y"].values, dtype="float64")
    xs = np.asarray(weight["x"].values, dtype="float64")
    by = np.floor((ys + 90.0) / block_deg).astype("int64")
    bx = np.floor(((xs + 180.0) % 360.0) / block_deg).astype("int64")
    block = (by[:, None] * 100_000 + bx[None, :]).ravel()
    sums = pd.Series(sd_area.ravel()).groupby(block).sum().to_numpy()
    return float(np.sqrt(np.sum(sums**2)) / 1e15)


def total_uncertainty(total: float, boot: np.ndarray, resid_sd: float) -> dict[str, float]:
    """The total with its bootstrap mean/5-95 % and the combined 5-95 % interval.

    The combined interval adds the residual error (normal, SD ``resid_sd``) to the bootstrap
    spread: SD = sqrt(boot SD^2 + resid_sd^2), 5-95 % = bootstrap mean -/+ 1.645 SD.
    """
    b = np.asarray(boot, dtype="float64")
    b = b[np.isfinite(b)]
    out = {"total_pg": float(total), "n_boot": int(len(b)),
           "boot_mean_pg": float(b.mean()) if len(b) else np.nan,
           "boot_sd_pg": float(b.std(ddof=1)) if len(b) > 1 else np.nan,
           "boot_q05_pg": float(np.quantile(b, 0.05)) if len(b) else np.nan,
           "boot_q95_pg": float(np.quantile(b, 0.95)) if len(b) else np.nan,
           "resid_sd_pg": float(resid_sd)}
    sd = np.sqrt(np.nan_to_num(out["boot_sd_pg"]) ** 2 + resid_sd**2)
    centre = out["boot_mean_pg"] if len(b) else float(total)
    out.update(combined_sd_pg=float(sd), q05_pg=float(centre - 1.645 * sd),
               q95_pg=float(centre + 1.645 * sd))
    return out


# ------------------------------------------------------------------------------- literature
@dataclass(frozen=True)
class PublishedEstimate:
    """One published global RH estimate (Pg C yr-1).

    Attributes
    ----------
    study
        Short citation.
    reference
        Journal, volume, pages and DOI.
    method
        How the estimate was made.
    period
        Years the estimate refers to.
    value, low, high
        Central value and its reported range (``value -/+ uncertainty``; low = high = value
        when none is reported). NaN where the number could not be verified.
    verified
        How the number was checked (e.g. "abstract"), or why it is not verified.
    """

    study: str
    reference: str
    method: str
    period: str
    value: float
    low: float
    high: float
    verified: str


#: Published global heterotrophic-respiration totals. Each number was checked against the
#: paper's abstract where ``verified`` says so; others are marked unverified.
PUBLISHED_RH: tuple[PublishedEstimate, ...] = (
    PublishedEstimate(
        "Tang et al. (2020)", "Earth Syst. Sci. Data 12, 1037-1051, doi:10.5194/essd-12-1037-2020",
        "random forest upscaling of SRDB with climate and soil drivers, 0.5 deg", "1980-2016",
        57.2, 56.6, 57.8, "abstract: 57.2 +/- 0.6 Pg C yr-1"),
    PublishedEstimate(
        "Yao et al. (2021)", "Global Biogeochemical Cycles 35, e2020GB006918, "
        "doi:10.1029/2020GB006918",
        "random forest on 761 field observations with abiotic and biotic predictors",
        "1982-2018", 48.8, 47.9, 49.7, "abstract: 48.8 +/- 0.9 Pg C yr-1 (journal details as "
        "recalled, not re-checked here)"),
    PublishedEstimate(
        "Konings et al. (2019)", "Biogeosciences 16, 2269-2284, doi:10.5194/bg-16-2269-2019",
        "top-down: atmospheric inversion NEP, SIF-based GPP, CARDAMOM carbon use efficiency",
        "2010s (satellite era)", 43.6, 24.3, 62.9, "abstract: 43.6 +/- 19.3 Pg C yr-1"),
    PublishedEstimate(
        "Hashimoto et al. (2015)", "Biogeosciences 12, 4121-4132, doi:10.5194/bg-12-4121-2015",
        "climate-driven soil respiration model calibrated on SRDB, RH share", "not verified",
        51.0, 51.0, 51.0, "not verified here (abstract not available offline); value as "
        "quoted in earlier versions of this report"),
)


def published_table(estimates: Sequence[PublishedEstimate] = PUBLISHED_RH) -> pd.DataFrame:
    """The published estimates as a table (one row each)."""
    return pd.DataFrame([e.__dict__ for e in estimates],
                        columns=["study", "reference", "method", "period", "value", "low", "high",
                                 "verified"])


def compare_with_published(total: float, q05: float, q95: float,
                           table: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Place a total (and its 5-95 % interval) against every published estimate.

    Returns a sentence computed from the whole list and a table with one row per estimate:
    ``relation`` is ``above`` / ``below`` when the total's 5-95 % interval lies wholly above /
    below the estimate's reported range, else ``overlaps``; rows without a value are
    ``not compared``.
    """
    t = table.copy()
    rel = []
    for r in t.itertuples():
        if not np.isfinite(r.value):
            rel.append("not compared")
        elif q05 > r.high:
            rel.append("above")
        elif q95 < r.low:
            rel.append("below")
        else:
            rel.append("overlaps")
    t["relation"] = rel
    vals = t.loc[np.isfinite(t["value"]), "value"]
    n = len(vals)
    if n == 0:
        return "No published estimate to compare with.", t
    counts = {k: int((t["relation"] == k).sum()) for k in ("above", "below", "overlaps")}
    lo, hi = float(vals.min()), float(vals.max())
    pos = ("above all" if total > hi else "below all" if total < lo
           else "within the span of the")
    names = {k: ", ".join(t.loc[t["relation"] == k, "study"]) for k in counts}
    parts = [f"The total ({total:.1f} Pg C yr-1, 5-95% {q05:.1f}-{q95:.1f}) is {pos} "
             f"{n} published central values ({lo:g}-{hi:g} Pg C yr-1)."]
    for k, word in (("above", "lies wholly above the reported range of"),
                    ("below", "lies wholly below the reported range of"),
                    ("overlaps", "overlaps the reported range of")):
        if counts[k]:
            parts.append(f"Its interval {word} {counts[k]} of {n} ({names[k]}).")
    return " ".join(parts), t
