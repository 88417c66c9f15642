"""A seeded SYNTHETIC daily world: a 500 m daily driver cube, a known daily efflux, and sites.

:func:`make_daily_world` builds a region of land and sea on a 500 m EPSG:4326 grid whose daily
soil CO2 efflux is known by construction and has *memory*, so a sequence model (the LSTM) has
something to learn that a per-day regression cannot:

* **Zones.** ``n_zones`` climate prototypes (:data:`DAILY_ZONES`) occupy warped Voronoi regions
  of the land (the same layout as :mod:`globalflux.testing.synthetic`), blended across a few
  pixels at the borders. Each has its own climate (mean temperature, seasonal amplitude, rain
  frequency and intensity, peak LAI) and its own efflux response.
* **Drivers a grid can supply** (the cube, ``(time, y, x)``, daily):

  - ``lst``: land-surface temperature (°C): seasonal cycle + AR(1) weather on a large-scale
    pattern + surface heating where soil is dry and vegetation sparse + noise; rain days cool.
  - ``precip``: precipitation (mm d-1): regional storms (a day's storm covers the region with
    a smooth spatial pattern), zone-dependent frequency and intensity.
  - ``sm``: volumetric soil moisture (m3 m-3): a bucket filled by rain and emptied by
    temperature-driven evapotranspiration (memory of the rain history).
  - ``lai``: leaf area index (m2 m-2): relaxes towards a temperature- and moisture-limited
    target with a 20-day time constant.
  - ``sin_doy`` (time,): the season clock, :func:`globalflux.cube.sin_doy` (the project's one
    day-of-year encoding).
  - ``soc`` (y, x): soil organic carbon stock (t ha-1), static. ``land_mask`` (y, x).

* **The true efflux** (``truth["efflux_true"]``, g C m-2 d-1), per zone z:

  .. math:: R_s = R_z \\, Q_{10,z}^{(T_s - 10)/10} \\, f_z(\\theta) \\,
            (1 + g_z \\bar L / 3) \\, (SOC/\\overline{SOC}_z)^{0.3} \\, (1 + P)

  with soil temperature :math:`T_s` the LST smoothed over ~4 days (latent), the moisture
  response :math:`f_z(\\theta) = \\theta_r^{a_z}(1-\\theta_r)^{b_z}` normalised to 1 at its
  optimum (:math:`\\theta_r = \\theta/0.45`), :math:`\\bar L` the LAI smoothed over a further
  ~15 days (lagged vegetation), and a **Birch pulse** :math:`P` (Birch 1958): rain on a soil
  that has been dry adds :math:`\\beta_z D_{t-1} \\min(p_t, 20)/10` to :math:`P`, which decays
  with a ~3-day time constant; :math:`D` is the share of recent dry days (smoothed over ~10
  days). The truth lives in ``world.truth`` only: the cube holds no answer.
* **Sites.** Points on land (at least ``min_sites_per_zone`` per zone), each with one contiguous
  record of at least ``min_record_days`` days with gaps (automated chambers observe ~90% of the
  days, others ~50%), log-normal observation noise. Site tables are in the canonical form of
  :mod:`globalflux.sites` (``variable`` is ``"Rs"``).

Every object carries ``attrs["synthetic"] = "true"`` and the SYNTHETIC note.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..config.daily import DailyWorldConfig
from ..cube import sin_doy
from ..errors import DataError
from ..grid import BBox, GridSpec
from .synthetic import (
    _blend,
    _land_mask,
    _place_sites,
    _smooth_noise,
    _write_crs,
    _zone_layout,
    synthetic_attrs,
)

__all__ = [
    "DailyWorld",
    "make_daily_world",
    "DAILY_DRIVERS",
    "DAILY_STATICS",
    "DAILY_ZONES",
    "EFFLUX_UNITS",
    "distance_to_sites_km",
    "score_map",
]

#: Daily drivers of the cube (``sin_doy`` is 1-D over time and broadcasts).
DAILY_DRIVERS: tuple[str, ...] = ("lst", "sm", "precip", "lai", "sin_doy")
#: Static (y, x) inputs of the cube.
DAILY_STATICS: tuple[str, ...] = ("soc",)
EFFLUX_UNITS = "g C m-2 d-1"
_POROSITY = 0.45

#: Zone prototypes. Climate: mean temperature t_mean (°C), seasonal amplitude amp (°C), daily
#: rain probability p_rain (summer, winter), mean rain-day amount rain_mm (mm), peak LAI lai_max,
#: soc (t/ha), IGBP class. Response: base rate r_ref (g C m-2 d-1 at 10 °C), q10, moisture
#: exponents moist_a/moist_b, vegetation gain veg_gain, Birch pulse strength birch.
DAILY_ZONES = pd.DataFrame(
    [
        ("mediterranean", 15.0, 8.0, 0.08, 0.30, 9.0, 2.0, 45, "SAV", 1.4, 1.8, 1.6, 0.5, 0.3, 2.5),
        ("temperate forest", 9.0, 9.0, 0.40, 0.35, 6.0, 5.0, 120, "DBF", 2.0, 2.6, 0.6, 0.6, 0.6,
         0.4),
        ("cropland", 11.0, 9.5, 0.30, 0.25, 7.0, 4.0, 70, "CRO", 1.3, 2.2, 0.9, 0.5, 0.9, 0.8),
        ("dry steppe", 7.0, 12.0, 0.15, 0.06, 8.0, 1.5, 40, "GRA", 0.9, 2.0, 2.0, 0.3, 0.4, 3.5),
        ("boreal wet", 2.0, 11.0, 0.45, 0.35, 5.0, 3.0, 200, "ENF", 1.1, 3.4, 0.3, 0.9, 0.3, 0.2),
        ("warm humid", 19.0, 5.0, 0.50, 0.30, 10.0, 6.0, 90, "EBF", 2.4, 1.7, 0.4, 0.5, 0.5, 0.3),
    ],
    columns=["name", "t_mean", "amp", "p_rain_summer", "p_rain_winter", "rain_mm", "lai_max",
             "soc", "igbp", "r_ref", "q10", "moist_a", "moist_b", "veg_gain", "birch"],
)

_META = {
    "lst": ("surface_temperature", "land surface temperature (daily mean)", "degC"),
    "sm": ("volume_fraction_of_condensed_water_in_soil", "volumetric soil moisture (top layer)",
           "m3 m-3"),
    "precip": ("lwe_precipitation_rate", "precipitation", "mm d-1"),
    "lai": ("leaf_area_index", "leaf area index", "m2 m-2"),
    "soc": ("soil_organic_carbon_stock", "soil organic carbon stock", "t ha-1"),
}


@dataclass(frozen=True)
class DailyWorld:
    """A synthetic daily world and its answer key (numpy-backed).

    Attributes
    ----------
    config
        The settings it was made from.
    grid
        The 500 m EPSG:4326 :class:`~globalflux.grid.GridSpec`.
    cube
        Driver cube: :data:`DAILY_DRIVERS` (``sin_doy`` over ``time`` only),
        :data:`DAILY_STATICS` ``(y, x)`` and ``land_mask``. NaN over sea. CRS written with
        rioxarray. Holds no answer.
    truth
        The answer key: ``efflux_true`` (g C m-2 d-1, time, y, x), ``zone_true`` (int16, -1
        over sea), the latent ``tsoil`` (°C) and the Birch ``pulse`` (1).
    long
        Site observations in the canonical long table ``site_id, lat, lon, igbp, time,
        variable, value, units, n`` (``variable`` ``"Rs"``, daily, ``n`` = 1).
    sites
        One row per site: ``site_id, lat, lon, igbp, elevation, zone_true, automated, iy, ix,
        n_obs, first, last, dataset``.
    zones
        One row per true zone: prototype name and response parameters, pixels, sites.
    """

    config: DailyWorldConfig
    grid: GridSpec
    cube: xr.Dataset
    truth: xr.Dataset
    long: pd.DataFrame
    sites: pd.DataFrame
    zones: pd.DataFrame


def _ema(x: np.ndarray, tau: float, first: np.ndarray | None = None) -> np.ndarray:
    """Exponential moving average along axis 0 with time constant ``tau`` (steps)."""
    a = np.exp(-1.0 / tau)
    out = np.empty_like(x)
    out[0] = x[0] if first is None else first
    for t in range(1, x.shape[0]):
        out[t] = a * out[t - 1] + (1.0 - a) * x[t]
    return out


def make_daily_world(config: DailyWorldConfig | None = None, **overrides: Any) -> DailyWorld:
    """Build the seeded synthetic daily world (see the module docstring).

    Parameters
    ----------
    config
        Settings (defaults: :class:`~globalflux.config.DailyWorldConfig`).
    **overrides
        Fields of the config to change, e.g. ``make_daily_world(ny=32, nx=32, n_years=1)``.

    Raises
    ------
    DataError
        If the land cannot hold the sites asked for.
    """
    cfg = config if config is not None else DailyWorldConfig()
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    rng = np.random.default_rng(cfg.seed)
    ny, nx = cfg.ny, cfg.nx
    shape = (ny, nx)
    W, S, E, N = cfg.extent
    grid = GridSpec("EPSG:4326", cfg.resolution, BBox(W, S, E, N))

    land = _land_mask(rng, shape, cfg.sea_fraction)
    if land.sum() < max(cfg.n_sites * 4, cfg.n_zones * 50):
        raise DataError(
            f"only {int(land.sum())} land pixels for {cfg.n_sites} sites and {cfg.n_zones} zones",
            where="daily_world",
            fix="Use a bigger world (ny, nx), a smaller sea_fraction, or fewer sites/zones.")
    proto = DAILY_ZONES.iloc[: cfg.n_zones].reset_index(drop=True)
    zone = _zone_layout(rng, land, cfg.n_zones)
    sig = max(1.5, min(ny, nx) / 40)

    def field(col: str) -> np.ndarray:
        return np.nan_to_num(_blend(zone, proto[col].to_numpy(float), sig), nan=0.0)

    t_mean = field("t_mean") + 0.6 * _smooth_noise(rng, shape, min(ny, nx) / 8)
    amp = field("amp")
    p_sum, p_win = field("p_rain_summer"), field("p_rain_winter")
    rain_mm = field("rain_mm")
    lai_max = np.clip(field("lai_max") * np.exp(0.1 * _smooth_noise(rng, shape, min(ny, nx) / 8)),
                      0.3, None)
    soc = field("soc") * np.exp(0.15 * _smooth_noise(rng, shape, min(ny, nx) / 10))

    # ---- daily calendar and weather --------------------------------------------------------
    days = pd.date_range(f"{cfg.year}-01-01", f"{cfg.year + cfg.n_years - 1}-12-31", freq="D")
    T = len(days)
    doy = days.day_of_year.to_numpy().astype(float)
    season = -np.cos(2 * np.pi * (doy - 15.0) / 365.25)  # -1 mid-January, +1 mid-July
    summer = 0.5 * (1.0 + season)
    pattern = 1.0 + 0.35 * _smooth_noise(rng, shape, max(ny, nx) / 3)
    anom = np.zeros(T)
    e = rng.standard_normal(T)
    for t in range(T):
        anom[t] = (0.8 * anom[t - 1] if t else 0.0) + 1.6 * e[t]
    tair = (t_mean[None] + amp[None] * season[:, None, None]
            + anom[:, None, None] * pattern[None])
    # regional storms: a storm day's occurrence field and amounts vary smoothly in space
    storm_u = rng.random(T)
    storm_size = rng.exponential(1.0, T)
    occ_field = 0.12 * _smooth_noise(rng, shape, max(ny, nx) / 5)
    amt_field = np.exp(0.25 * _smooth_noise(rng, shape, max(ny, nx) / 5))
    p_rain = p_win[None] + (p_sum - p_win)[None] * summer[:, None, None]
    wet_day = (storm_u[:, None, None] + occ_field[None]) < p_rain
    precip = np.where(wet_day, rain_mm[None] * storm_size[:, None, None] * amt_field[None], 0.0)
    precip = precip * np.exp(0.2 * rng.standard_normal(precip.shape))

    # soil moisture bucket and vegetation (both with memory)
    sm = np.empty((T, ny, nx))
    lai = np.empty((T, ny, nx))
    s_prev = np.full(shape, 0.25)
    l_prev = 0.5 * lai_max
    for t in range(T):
        et = 0.0025 * np.clip(tair[t] + 2.0, 0.0, None) * (0.5 + 0.1 * l_prev) * s_prev
        s_now = np.clip(s_prev + precip[t] / 150.0 - et, 0.03, _POROSITY)
        green = (1.0 / (1.0 + np.exp(-(tair[t] - 7.0) / 2.5))) * (s_now / (s_now + 0.08))
        l_now = l_prev + (0.2 + lai_max * green - l_prev) / 20.0
        sm[t], lai[t] = s_now, l_now
        s_prev, l_prev = s_now, l_now
    dry_surface = (1.0 - sm / _POROSITY) * np.exp(-0.3 * lai)
    lst = (tair + 1.5 + 7.0 * dry_surface * summer[:, None, None] - 2.0 * wet_day
           + 0.7 * rng.standard_normal(tair.shape))

    # ---- the true efflux ---------------------------------------------------------------------
    zl = np.where(zone >= 0, zone, 0)

    def par(col: str) -> np.ndarray:
        return proto[col].to_numpy(float)[zl][None]

    tsoil = 0.9 * _ema(tair, 4.0) + 1.0
    theta = np.clip(sm / _POROSITY, 1e-3, 1 - 1e-3)
    a, b = par("moist_a"), par("moist_b")
    opt = a / (a + b)
    f_moist = theta ** a * (1 - theta) ** b / (opt ** a * (1 - opt) ** b)
    lai_lag = _ema(lai, 15.0)
    dry = _ema((precip < 0.5).astype(float), 10.0, first=np.full(shape, 0.5))
    kick = np.zeros_like(precip)
    kick[1:] = par("birch")[0] * dry[:-1] * np.minimum(precip[1:], 20.0) / 10.0
    pulse = np.empty_like(kick)
    decay = np.exp(-1.0 / 3.0)
    pulse[0] = kick[0]
    for t in range(1, T):
        pulse[t] = decay * pulse[t - 1] + kick[t]
    soc_zone = np.array([soc[zone == z].mean() for z in range(cfg.n_zones)])[zl]
    rs = (par("r_ref") * par("q10") ** ((tsoil - 10.0) / 10.0) * f_moist
          * (1.0 + par("veg_gain") * lai_lag / 3.0) * (soc / soc_zone)[None] ** 0.3 * (1.0 + pulse))

    # ---- assemble cube and truth -----------------------------------------------------------
    sea = ~land
    f32 = np.float32
    coords = {
        "time": ("time", days.to_numpy().astype("datetime64[ns]"),
                 {"long_name": "day (UTC)", "standard_name": "time"}),
        "y": ("y", grid.y, {"units": "degrees_north", "standard_name": "latitude",
                            "long_name": "latitude of pixel centre", "axis": "Y"}),
        "x": ("x", grid.x, {"units": "degrees_east", "standard_name": "longitude",
                            "long_name": "longitude of pixel centre", "axis": "X"}),
    }

    def sea_nan(arr: np.ndarray) -> np.ndarray:
        arr = np.asarray(arr, dtype=f32).copy()
        arr[..., sea] = np.nan
        return arr

    def var(arr: np.ndarray, name: str) -> xr.Variable:
        std, long, units = _META[name]
        dims = ("time", "y", "x") if arr.ndim == 3 else ("y", "x")
        return xr.Variable(dims, sea_nan(arr), {"units": units, "long_name": long,
                                                "standard_name": std})

    clock = sin_doy(days)
    data_vars = {
        "lst": var(lst, "lst"),
        "sm": var(sm, "sm"),
        "precip": var(precip, "precip"),
        "lai": var(lai, "lai"),
        "sin_doy": xr.Variable(("time",), clock.values.astype(f32), dict(clock.attrs)),
        "soc": var(soc, "soc"),
        "land_mask": xr.Variable(("y", "x"), land,
                                 {"long_name": "land (true) or sea (false)", "units": "1",
                                  "flag_values": "0 1", "flag_meanings": "sea land"}),
    }
    attrs = {**synthetic_attrs(), "title": "SYNTHETIC globalflux daily driver cube",
             "synthetic_seed": str(cfg.seed)}
    cube = _write_crs(xr.Dataset(data_vars, coords=coords, attrs=attrs))
    truth = _write_crs(xr.Dataset(
        {
            "efflux_true": xr.Variable(("time", "y", "x"), sea_nan(rs),
                                       {"long_name": "true soil CO2 efflux (answer key)",
                                        "units": EFFLUX_UNITS}),
            "zone_true": xr.Variable(("y", "x"), zone,
                                     {"long_name": "true zone (answer key), -1 over sea",
                                      "units": "1"}),
            "tsoil": xr.Variable(("time", "y", "x"), sea_nan(tsoil),
                                 {"long_name": "latent soil temperature", "units": "degC"}),
            "pulse": xr.Variable(("time", "y", "x"), sea_nan(pulse),
                                 {"long_name": "Birch rain pulse (relative increase)",
                                  "units": "1"}),
        },
        coords=dict(coords), attrs=dict(attrs, title="SYNTHETIC daily world: answer key")))

    sites, long = _sample_sites(rng, cfg, grid, zone, land, rs, days, proto)
    ztab = proto.copy()
    ztab.insert(0, "zone", np.arange(cfg.n_zones))
    ztab["pixels"] = [int((zone == z).sum()) for z in range(cfg.n_zones)]
    ztab["n_sites"] = [int((sites["zone_true"] == z).sum()) for z in range(cfg.n_zones)]
    ztab["efflux_mean"] = [float(rs[:, zone == z].mean()) for z in range(cfg.n_zones)]
    ztab.attrs.update(synthetic_attrs())
    return DailyWorld(config=cfg, grid=grid, cube=cube, truth=truth, long=long, sites=sites,
                      zones=ztab)


def _sample_sites(rng, cfg: DailyWorldConfig, grid: GridSpec, zone, land, rs, days, proto):
    """Sites on land with contiguous, gappy daily records and log-normal noise."""
    T = len(days)
    iy, ix, lat, lon = _place_sites(rng, zone, land, grid, n_zones=cfg.n_zones,
                                    n_sites=cfg.n_sites, min_per_zone=cfg.min_sites_per_zone,
                                    where="daily_world")
    n = iy.size
    ids = np.array([f"SYND-{k + 1:03d}" for k in range(n)], dtype=object)
    zs = zone[iy, ix]
    igbp = proto["igbp"].to_numpy()[zs].astype(object)
    automated = rng.random(n) < 0.5
    rows_i, rows_t, vals = [], [], []
    first, last, nobs = [], [], []
    lo = min(cfg.min_record_days, T)
    for k in range(n):
        length = int(rng.integers(lo, T + 1))
        start = int(rng.integers(0, T - length + 1))
        p = 0.9 if automated[k] else 0.5
        obs = rng.random(length) < p
        obs[0] = obs[-1] = True
        idx = start + np.flatnonzero(obs)
        true = rs[idx, iy[k], ix[k]]
        sd = cfg.noise_sd
        val = true * np.exp(sd * rng.standard_normal(idx.size) - 0.5 * sd ** 2)
        rows_i.append(np.full(idx.size, k))
        rows_t.append(idx)
        vals.append(val)
        first.append(days[idx[0]])
        last.append(days[idx[-1]])
        nobs.append(idx.size)
    kk = np.concatenate(rows_i)
    tt = np.concatenate(rows_t)
    long = pd.DataFrame({
        "site_id": pd.Series(ids[kk], dtype="string"),
        "lat": lat[kk],
        "lon": lon[kk],
        "igbp": pd.Series(igbp[kk], dtype="string"),
        "time": pd.DatetimeIndex(days[tt]).astype("datetime64[ns]"),
        "variable": pd.Series(["Rs"] * kk.size, dtype="string"),
        "value": np.concatenate(vals).astype("float64"),
        "units": pd.Series([EFFLUX_UNITS] * kk.size, dtype="string"),
        "n": np.ones(kk.size, dtype="int64"),
    })
    long.attrs.update(synthetic_attrs())
    sites = pd.DataFrame({
        "site_id": pd.Series(ids, dtype="string"),
        "lat": lat,
        "lon": lon,
        "igbp": pd.Series(igbp, dtype="string"),
        "elevation": np.zeros(n),
        "zone_true": zs.astype(int),
        "automated": automated,
        "iy": iy.astype(int),
        "ix": ix.astype(int),
        "n_obs": np.array(nobs, dtype=int),
        "first": pd.DatetimeIndex(first).astype("datetime64[ns]"),
        "last": pd.DatetimeIndex(last).astype("datetime64[ns]"),
        "dataset": pd.Series(["synthetic-daily"] * n, dtype="string"),
    })
    sites.attrs.update(synthetic_attrs())
    return sites, long


# ----------------------------------------------------------------------------- answer-key scoring


def distance_to_sites_km(grid_like: xr.Dataset | xr.DataArray, rows: np.ndarray,
                         cols: np.ndarray) -> xr.DataArray:
    """Distance (km) from every pixel centre to the nearest of the given site pixels.

    Uses the local metric of the region's mid latitude (a 500 m world spans a few dozen km):
    ``dy = 111.32 km * resolution``, ``dx = dy * cos(latitude)``, exact Euclidean distance
    transform over the pixel grid (:func:`scipy.ndimage.distance_transform_edt`).
    """
    from scipy.ndimage import distance_transform_edt

    y = np.asarray(grid_like["y"].values, dtype=float)
    x = np.asarray(grid_like["x"].values, dtype=float)
    res_y = abs(float(y[1] - y[0])) if y.size > 1 else 0.0045
    res_x = abs(float(x[1] - x[0])) if x.size > 1 else res_y
    dy = 111.32 * res_y
    dx = 111.32 * res_x * np.cos(np.deg2rad(float(y.mean())))
    free = np.ones((y.size, x.size), dtype=bool)
    free[np.asarray(rows, int), np.asarray(cols, int)] = False
    dist = distance_transform_edt(free, sampling=(dy, dx))
    return xr.DataArray(dist.astype("float32"), dims=("y", "x"),
                        coords={"y": grid_like["y"], "x": grid_like["x"]},
                        name="distance_to_sites", attrs={"units": "km",
                                                         "long_name": "distance to nearest site"})


def score_map(pred: xr.DataArray, truth: xr.DataArray, land: xr.DataArray,
              distance_km: xr.DataArray, far_km: float) -> pd.DataFrame:
    """Score a (time, y, x) map against the true (time, y, x) field over pixel groups.

    Rows ``all_land_pixels``, ``pixels_far_from_sites`` (distance >= ``far_km``) and
    ``pixels_near_sites``; columns ``region, pixels, min_km, max_km`` and
    :func:`globalflux.metrics.summary` (``n, r2, rmse, bias, nse, kge, r``) over every
    (day, pixel) pair of the group.
    """
    from ..metrics import summary

    p = np.asarray(pred.transpose("time", "y", "x").values, dtype="float64")
    t = np.asarray(truth.transpose("time", "y", "x").values, dtype="float64")
    lm = np.asarray(land.values, dtype=bool)
    d = np.asarray(distance_km.values, dtype="float64")
    rows = []
    for region, sel in (("all_land_pixels", lm), ("pixels_far_from_sites", lm & (d >= far_km)),
                        ("pixels_near_sites", lm & (d < far_km))):
        row: dict[str, Any] = {"region": region, "pixels": int(sel.sum()),
                               "min_km": float(d[sel].min()) if sel.any() else float("nan"),
                               "max_km": float(d[sel].max()) if sel.any() else float("nan")}
        row.update(summary(t[:, sel].ravel(), p[:, sel].ravel()) if sel.any() else {"n": 0})
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(synthetic_attrs())
    return out
