"""A seeded synthetic world with a known answer: zones, predictors, RH and sites.

:func:`make_world` builds a region of land and sea on a 500 m EPSG:4326 grid (0.0045 deg
pixels) in which the claims of the zoned-forest method (Zhu et al. 2024) are true *by
construction*, so tests and the demo can check that the method recovers them:

* **Zones.** ``n_zones`` climate prototypes (:data:`PROTOTYPES`) occupy warped (wavy-bordered) Voronoi regions of
  the land. Each has distinct means of the six zone factors and moderate, spatially smooth
  within-zone variation, blended across a few pixels at the borders. Standardising the factors,
  PCA and k-means recover them (the demo measures the adjusted Rand index on land pixels).
* **A different RH response per zone.** Heterotrophic respiration is

  .. math:: RH = R_z \\, Q_{10,z}^{(T_s - 10)/10} \\, f_z(W) \\, (1 + g_z\\,GPP/10)
            \\, (SOC/\\overline{SOC}_z)^{0.3}

  with a zone-specific base rate :math:`R_z` (g C m-2 d-1), temperature sensitivity
  :math:`Q_{10,z}`, moisture response :math:`f_z(W) = W^{a_z}(1-W)^{b_z}` normalised to 1 at its
  optimum, and GPP dependence :math:`g_z`. Soil temperature :math:`T_s` and soil water
  :math:`W` are latent (not among the predictors); the predictors see them only through LST,
  LSWI, ET and vegetation. A single ("unified") forest on the same predictors therefore has to
  guess the zone, while a forest per zone does not: zoned LOSO beats unified, but not trivially.
* **Sites.** Points on land (at least ``min_sites_per_zone`` per zone), uneven record lengths,
  manual one-day campaigns (noisier) and automated chambers (n = days in the period), a
  warm-season bias in which periods are observed and few frozen-season observations, and
  log-normal observation noise.

Variables and units
-------------------
Static zone factors ``(y, x)`` (:data:`FACTORS`): ``tem`` multi-year mean air temperature (°C,
with a -6.5 °C/km lapse and a latitude gradient), ``pre`` annual precipitation (mm yr-1,
orographic), ``ndvi`` growing-season mean NDVI (1), ``lswi`` growing-season mean LSWI (1),
``dem`` elevation (m, fractal terrain), ``soc`` soil organic carbon (t ha-1). The growing season
is the set of 8-day periods with air temperature above 5 °C.

8-day predictors ``(time, y, x)`` (:data:`PREDICTORS`): ``lst_day``, ``lst_night`` (°C),
``ndvi_8d``, ``evi``, ``lswi_8d`` (1), ``gpp`` (g C m-2 d-1), ``lai`` (m2 m-2), ``fpar`` (1),
``et`` (mm per 8 days), plus ``sin_doy`` (1). ``time`` holds the MODIS 8-day period starts.

Answer key (``world.truth``): ``zone_true`` (int16, -1 over sea), ``rh_true`` (g C m-2 d-1,
time, y, x), and the latent ``tsoil`` (°C) and ``soil_water`` (1).

Every object carries ``attrs["synthetic"] = "true"`` and the SYNTHETIC note.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..config.synthetic import SyntheticConfig
from ..errors import DataError
from ..grid import BBox, GridSpec, modis_8day_periods, period_lengths
from ..provenance import SYNTHETIC_NOTE

__all__ = [
    "World",
    "make_world",
    "FACTORS",
    "PREDICTORS",
    "PROTOTYPES",
    "RH_UNITS",
    "synthetic_attrs",
]

#: Names of the six static zone factors, in the order of Zhu et al. (2024).
FACTORS: tuple[str, ...] = ("tem", "pre", "ndvi", "lswi", "dem", "soc")
#: Names of the 8-day predictors (time-varying; sin_doy is the season clock).
PREDICTORS: tuple[str, ...] = (
    "lst_day", "lst_night", "ndvi_8d", "evi", "lswi_8d", "gpp", "lai", "fpar", "et", "sin_doy",
)
RH_UNITS = "g C m-2 d-1"

#: Climate prototypes of the zones, in the order zones are drawn. Columns: sea-level
#: temperature t0 (°C), annual precipitation pre (mm/yr), peak NDVI, LSWI offset, base
#: elevation dem (m), soc (t/ha), seasonal air-temperature amplitude amp (°C), rain season
#: (+1 summer rain, -1 winter rain), IGBP class, and the RH response: base rate r_ref
#: (g C m-2 d-1 at 10 °C, optimal moisture, no GPP), q10, moisture exponents a/b, GPP gain g.
PROTOTYPES = pd.DataFrame(
    [
        ("warm dry lowland", 16.5, 450, 0.55, -0.10, 150, 35, 10, -1, "GRA", 1.60, 1.3, 1.8, 0.1, 0.05),
        ("cool wet upland", 12.0, 1400, 0.85, 0.30, 1150, 150, 8, 1, "ENF", 0.80, 3.2, 0.3, 0.4, 0.00),
        ("humid cropland", 13.5, 800, 0.80, 0.10, 350, 70, 9, 1, "CRO", 0.55, 2.2, 0.8, 0.3, 0.80),
        ("warm wet forest", 17.0, 1350, 0.90, 0.28, 280, 115, 6, 1, "DBF", 2.20, 1.6, 0.2, 2.2, 0.00),
        ("cold steppe", 8.0, 350, 0.45, -0.12, 750, 45, 14, 1, "GRA", 0.80, 2.6, 1.4, 0.2, 0.20),
        ("subalpine wet", 10.5, 1800, 0.75, 0.38, 1650, 170, 7, 1, "MF", 0.60, 3.4, 0.3, 1.0, 0.00),
        ("warm savanna", 20.0, 700, 0.60, 0.00, 250, 40, 8, -1, "SAV", 1.80, 1.4, 1.5, 0.3, 0.15),
        ("cool wetland", 9.5, 1000, 0.70, 0.45, 100, 230, 10, 1, "WET", 1.20, 2.3, 0.1, 2.8, 0.10),
    ],
    columns=["name", "t0", "pre", "ndvi_peak", "lswi_offset", "dem", "soc", "amp", "rain_season",
             "igbp", "r_ref", "q10", "moist_a", "moist_b", "gpp_gain"],
)

_FACTOR_META = {
    "tem": ("air_temperature", "multi-year mean air temperature", "degC"),
    "pre": ("precipitation_amount", "annual precipitation", "mm yr-1"),
    "ndvi": ("normalized_difference_vegetation_index", "growing-season mean NDVI", "1"),
    "lswi": ("land_surface_water_index", "growing-season mean LSWI", "1"),
    "dem": ("surface_altitude", "elevation above sea level", "m"),
    "soc": ("soil_organic_carbon_stock", "soil organic carbon stock", "t ha-1"),
}
_PRED_META = {
    "lst_day": ("surface_temperature", "daytime land surface temperature (8-day mean)", "degC"),
    "lst_night": ("surface_temperature", "night-time land surface temperature (8-day mean)", "degC"),
    "ndvi_8d": ("normalized_difference_vegetation_index", "NDVI (8-day composite)", "1"),
    "evi": ("enhanced_vegetation_index", "EVI (8-day composite)", "1"),
    "lswi_8d": ("land_surface_water_index", "LSWI (8-day composite)", "1"),
    "gpp": ("gross_primary_productivity_of_biomass_expressed_as_carbon",
            "gross primary production (8-day mean rate)", "g C m-2 d-1"),
    "lai": ("leaf_area_index", "leaf area index", "m2 m-2"),
    "fpar": ("fraction_of_surface_downwelling_photosynthetic_radiative_flux_absorbed_by_vegetation",
             "fraction of absorbed PAR", "1"),
    "et": ("water_evapotranspiration_amount", "evapotranspiration per 8-day period", "mm (8 d)-1"),
    "sin_doy": ("sin_day_of_year", "sine of the day of year of the period centre", "1"),
}


def synthetic_attrs() -> dict[str, str]:
    """The attributes every synthetic object carries."""
    return {"synthetic": "true", "comment": SYNTHETIC_NOTE}


@dataclass(frozen=True)
class World:
    """A synthetic world and its answer key (all arrays in memory, numpy-backed).

    Attributes
    ----------
    config
        The settings it was made from.
    grid
        The 500 m EPSG:4326 :class:`~globalflux.grid.GridSpec`.
    cube
        Predictor cube ``(time, y, x)``: :data:`PREDICTORS`, the static :data:`FACTORS`
        ``(y, x)`` and ``land_mask`` (bool). NaN over sea. CRS written with rioxarray.
    truth
        The answer key: ``zone_true`` (int16, -1 over sea), ``rh_true`` (g C m-2 d-1),
        the latent ``tsoil`` (°C) and ``soil_water`` (1).
    long
        Site observations in the canonical long table: ``site_id, lat, lon, igbp, time,
        variable, value, units, n`` (``variable`` is ``"Rh"``; ``n`` days behind each value).
    sites
        One row per site: ``site_id, lat, lon, igbp, elevation, zone_true, automated, iy, ix,
        n_obs, first, last, dataset``.
    zones
        One row per true zone: prototype name, its factor means over land and its RH response
        parameters.
    """

    config: SyntheticConfig
    grid: GridSpec
    cube: xr.Dataset
    truth: xr.Dataset
    long: pd.DataFrame
    sites: pd.DataFrame
    zones: pd.DataFrame

    @property
    def factor_names(self) -> tuple[str, ...]:
        return FACTORS

    @property
    def predictor_names(self) -> tuple[str, ...]:
        return PREDICTORS

    def training_table(self) -> pd.DataFrame:
        """The answer-key training table: each observation joined with the cube at its pixel.

        Columns: ``site_id, time, zone_true, rh`` (observed), ``rh_true`` (noise-free), the
        :data:`PREDICTORS` and :data:`FACTORS`. Built by exact pixel indices (no extraction
        code), so tests can compare the pipeline's extraction with it.
        """
        obs = self.long.merge(self.sites[["site_id", "iy", "ix", "zone_true"]], on="site_id")
        t_index = pd.DatetimeIndex(self.cube["time"].values)
        it = t_index.get_indexer(pd.DatetimeIndex(obs["time"]))
        iy = obs["iy"].to_numpy()
        ix = obs["ix"].to_numpy()
        out = obs[["site_id", "time", "zone_true"]].copy()
        out["rh"] = obs["value"].to_numpy()
        out["rh_true"] = self.truth["rh_true"].values[it, iy, ix]
        for name in PREDICTORS:
            out[name] = self.cube[name].values[it, iy, ix]
        for name in FACTORS:
            out[name] = self.cube[name].values[iy, ix]
        out.attrs.update(synthetic_attrs())
        return out


# ----------------------------------------------------------------------------- random fields


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit SD (float64)."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma=max(sigma, 0.5), mode="reflect")
    sd = f.std()
    return (f - f.mean()) / (sd if sd > 0 else 1.0)


def _fractal(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Fractal terrain: octaves of smoothed noise with amplitude halving as the scale halves."""
    out = np.zeros(shape)
    amp, sigma, total = 1.0, scale, 0.0
    while sigma >= 1.0:
        out += amp * _smooth_noise(rng, shape, sigma)
        total += amp
        amp *= 0.55
        sigma /= 2.0
    return out / max(total, 1e-9)


def _land_mask(rng: np.random.Generator, shape: tuple[int, int], sea_fraction: float) -> np.ndarray:
    """Sea on the east side behind a ragged coastline, about ``sea_fraction`` of the area."""
    ny, nx = shape
    if sea_fraction <= 0:
        return np.ones(shape, dtype=bool)
    xn = (np.arange(nx) + 0.5)[None, :] / nx
    field = xn + 0.08 * _fractal(rng, shape, scale=ny / 6) + 0.02 * _smooth_noise(rng, shape, 2)
    thresh = np.quantile(field, 1.0 - sea_fraction)
    land = field < thresh
    # keep the mainland only: small islands of land in the sea become sea (and lakes land).
    from scipy.ndimage import label

    lab, n = label(land)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        land = lab == int(np.argmax(sizes))
    return land


def _zone_layout(rng: np.random.Generator, land: np.ndarray, n_zones: int) -> np.ndarray:
    """Warped Voronoi regions of ``n_zones`` seeds spread over the land (int16, -1 over sea)."""
    ny, nx = land.shape
    iy, ix = np.nonzero(land)
    # farthest-point seeds (from a random start) give regions of comparable size
    start = rng.integers(iy.size)
    seeds = [(iy[start], ix[start])]
    cand = rng.choice(iy.size, size=min(iy.size, 4000), replace=False)
    cy, cx = iy[cand].astype(float), ix[cand].astype(float)
    dmin = np.full(cy.size, np.inf)
    for _ in range(n_zones - 1):
        sy, sx = seeds[-1]
        dmin = np.minimum(dmin, np.hypot(cy - sy, cx - sx))
        pick = int(np.argmax(dmin))
        seeds.append((cy[pick], cx[pick]))
    # pull the seeds towards the land's interior a little (less sliver zones along the coast)
    cyx = np.array([iy.mean(), ix.mean()])
    seeds_arr = np.array(seeds, dtype=float) * 0.8 + cyx * 0.2
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    # two scales of smooth displacement: wavy, irregular borders instead of straight Voronoi edges
    size = max(ny, nx)
    wy = yy + size * (0.10 * _smooth_noise(rng, land.shape, size / 8)
                      + 0.03 * _smooth_noise(rng, land.shape, size / 24))
    wx = xx + size * (0.10 * _smooth_noise(rng, land.shape, size / 8)
                      + 0.03 * _smooth_noise(rng, land.shape, size / 24))
    d = np.stack([np.hypot(wy - sy, wx - sx) for sy, sx in seeds_arr])
    zone = np.argmin(d, axis=0).astype(np.int16)
    zone[~land] = -1
    return zone


def _blend(zone: np.ndarray, values: np.ndarray, sigma: float) -> np.ndarray:
    """A per-zone value smoothly blended across zone borders (over land; sea gets the nearest)."""
    from scipy.ndimage import gaussian_filter

    out = np.zeros(zone.shape)
    weight = np.zeros(zone.shape)
    land = zone >= 0
    for z, v in enumerate(values):
        ind = gaussian_filter((zone == z).astype(float), sigma=sigma, mode="nearest")
        out += v * ind
        weight += ind
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(weight > 1e-6, out / np.maximum(weight, 1e-12), np.nan)
    out[~land] = np.nan
    return out


# ----------------------------------------------------------------------------- the world


def make_world(config: SyntheticConfig | None = None, *,
               site_locations: pd.DataFrame | None = None, **overrides: Any) -> World:
    """Build the seeded synthetic world.

    Parameters
    ----------
    config
        Settings (defaults: :class:`~globalflux.config.SyntheticConfig`).
    site_locations
        Optional table with ``site_id, lat, lon`` (degrees): sites are placed there instead of
        being drawn (``n_sites`` and ``min_sites_per_zone`` are then not used). Points off the
        world's land are dropped and listed in ``world.sites.attrs["dropped_sites"]``.
    **overrides
        Fields of the config to change, e.g. ``make_world(ny=64, nx=64, n_sites=30)``.

    Returns
    -------
    World
        Cube, answer key, site tables and zone table; see :class:`World`.

    Raises
    ------
    DataError
        If the land cannot hold the sites asked for, or no given site location is on land.
    """
    cfg = config if config is not None else SyntheticConfig()
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    rng = np.random.default_rng(cfg.seed)
    ny, nx = cfg.ny, cfg.nx
    shape = (ny, nx)
    W, S, E, N = cfg.extent
    grid = GridSpec("EPSG:4326", cfg.resolution, BBox(W, S, E, N))
    lat = grid.y[:, None] * np.ones((1, nx))

    land = _land_mask(rng, shape, cfg.sea_fraction)
    if land.sum() < max(cfg.n_sites * 4, cfg.n_zones * 50):
        raise DataError(
            f"only {int(land.sum())} land pixels for {cfg.n_sites} sites and {cfg.n_zones} zones",
            where="synthetic",
            fix="Use a bigger world (ny, nx), a smaller sea_fraction, or fewer sites/zones.")
    proto = PROTOTYPES.iloc[: cfg.n_zones].reset_index(drop=True)
    zone = _zone_layout(rng, land, cfg.n_zones)
    sig = max(1.5, min(ny, nx) / 90)  # border blending, pixels

    # ---- static factors -------------------------------------------------------------------
    dem_base = _blend(zone, proto["dem"].to_numpy(float), sig)
    relief = 0.18 * dem_base + 60.0
    dem = np.clip(dem_base + relief * _fractal(rng, shape, scale=min(ny, nx) / 5), 0.0, None)
    lat_c = 0.5 * (N + S)
    t0 = _blend(zone, proto["t0"].to_numpy(float), sig)
    tem = t0 - 0.0065 * dem - 0.7 * (lat - lat_c) + 0.35 * _smooth_noise(rng, shape, min(ny, nx) / 10)
    pre = (_blend(zone, proto["pre"].to_numpy(float), sig)
           * (1.0 + 0.0004 * (dem - dem_base))
           * np.exp(0.07 * _smooth_noise(rng, shape, min(ny, nx) / 12)))
    ndvi_peak = np.clip(_blend(zone, proto["ndvi_peak"].to_numpy(float), sig)
                        + 0.035 * _smooth_noise(rng, shape, min(ny, nx) / 14), 0.15, 0.95)
    lswi_off = (_blend(zone, proto["lswi_offset"].to_numpy(float), sig)
                + 0.03 * _smooth_noise(rng, shape, min(ny, nx) / 14))
    soc = (_blend(zone, proto["soc"].to_numpy(float), sig)
           * np.exp(0.15 * _smooth_noise(rng, shape, min(ny, nx) / 12) + 0.0002 * (dem - dem_base)))
    amp = _blend(zone, proto["amp"].to_numpy(float), sig)
    rain_season = _blend(zone, proto["rain_season"].to_numpy(float), sig)

    # ---- 8-day calendar -------------------------------------------------------------------
    starts = modis_8day_periods(f"{cfg.year}-01-01", f"{cfg.year + cfg.n_years - 1}-12-31")
    plen = period_lengths(starts)
    doy_mid = starts.day_of_year.to_numpy() + (plen - 1) / 2.0
    nt = len(starts)
    season = -np.cos(2 * np.pi * (doy_mid - 15.0) / 365.25)  # -1 mid-January, +1 mid-July
    # weather: AR(1) anomalies on two large-scale spatial patterns
    p1 = 1.0 + 0.3 * _smooth_noise(rng, shape, max(ny, nx) / 3)
    p2 = _smooth_noise(rng, shape, max(ny, nx) / 4)
    a_t = np.zeros(nt)
    w_t = np.zeros(nt)
    e1, e2 = rng.standard_normal(nt), rng.standard_normal(nt)
    for i in range(nt):
        prev_a = a_t[i - 1] if i else 0.0
        prev_w = w_t[i - 1] if i else 0.0
        a_t[i] = 0.6 * prev_a + 1.4 * e1[i]
        w_t[i] = 0.5 * prev_w + 0.07 * e2[i]

    f32 = np.float32
    S3 = season[:, None, None]
    tair = (tem[None] + amp[None] * S3 + a_t[:, None, None] * p1[None]
            + 0.6 * a_t[:, None, None] * 0.3 * p2[None])
    # soil temperature lags and damps the air (latent)
    tsoil = np.empty_like(tair)
    tsoil[0] = tair[0]
    for i in range(1, nt):
        tsoil[i] = 0.6 * tair[i] + 0.4 * tsoil[i - 1]
    tsoil = 1.0 + 0.85 * tsoil + 0.15 * tem[None]
    # soil water index W in (0, 1) (latent): wetter climates, rain season, evaporative demand
    w_mean = pre / (pre + 700.0)
    w = (w_mean[None] + 0.18 * rain_season[None] * S3 * (1 - w_mean[None])
         - 0.012 * (tair - tem[None]) + w_t[:, None, None] * (1.0 + 0.5 * p2[None]))
    w = np.clip(w, 0.03, 0.97)

    # vegetation
    green = 1.0 / (1.0 + np.exp(-(tair - 6.0) / 2.0)) * (w / (w + 0.15)) / (0.97 / 1.12)
    green = np.clip(green, 0.0, 1.0)
    ndvi_min = 0.12 + 0.12 * ndvi_peak
    ndvi8 = ndvi_min[None] + (ndvi_peak - ndvi_min)[None] * green
    ndvi8 = np.clip(ndvi8 + 0.015 * rng.standard_normal(ndvi8.shape), -0.1, 0.98)
    evi = np.clip(0.03 + 0.64 * (ndvi8 - 0.1) + 0.01 * rng.standard_normal(ndvi8.shape), -0.1, 0.9)
    fpar = np.clip(1.2 * ndvi8 - 0.15, 0.0, 0.95)
    lai = np.clip(-np.log(1.0 - fpar) / 0.5, 0.0, 7.0)
    lswi8 = np.clip(lswi_off[None] + 0.5 * (w - w_mean[None]) + 0.25 * green - 0.1
                    + 0.02 * rng.standard_normal(ndvi8.shape), -0.6, 0.8)
    lat_mid = np.deg2rad(lat_c)
    par = (7.5 + 5.0 * np.cos(2 * np.pi * (doy_mid - 172.0) / 365.25) * (0.6 + 0.4 * np.sin(lat_mid)))
    f_t = np.clip((tair + 2.0) / 20.0, 0.0, 1.0)
    f_w = w / (w + 0.2) * 1.2
    gpp = np.clip(1.3 * fpar * par[:, None, None] * f_t * np.minimum(f_w, 1.0), 0.0, None)
    et = np.clip(12.0 * np.clip(0.09 * tair + 0.4, 0.0, None) * (0.3 + 0.7 * fpar) * w / (w + 0.25),
                 0.0, None)
    lst_day = tair + 2.5 + 9.0 * (1.0 - fpar) * (1.0 - w) + 0.8 * rng.standard_normal(tair.shape)
    lst_night = tair - 3.0 - 2.0 * (1.0 - w) + 0.6 * rng.standard_normal(tair.shape)
    sin_doy = np.sin(2 * np.pi * doy_mid / 365.25)

    # static vegetation factors from the series, as the real pipeline derives them
    gs = tair > 5.0
    with np.errstate(invalid="ignore"):
        n_gs = gs.sum(axis=0)
        ndvi_gs, lswi_gs = (
            np.where(n_gs > 0, np.where(gs, a8, 0).sum(0) / np.maximum(n_gs, 1), a8.mean(0))
            for a8 in (ndvi8, lswi8))

    # ---- the true RH response ---------------------------------------------------------------
    zl = np.where(zone >= 0, zone, 0)
    r_ref = proto["r_ref"].to_numpy(float)[zl]
    q10 = proto["q10"].to_numpy(float)[zl]
    a = proto["moist_a"].to_numpy(float)[zl]
    b = proto["moist_b"].to_numpy(float)[zl]
    g = proto["gpp_gain"].to_numpy(float)[zl]
    w_opt = a / (a + b)
    f_norm = w_opt ** a * (1 - w_opt) ** b
    f_moist = (w ** a[None] * (1 - w) ** b[None]) / f_norm[None]
    soc_zone_mean = np.array([np.nanmean(soc[zone == z]) for z in range(cfg.n_zones)])[zl]
    rh = (r_ref[None] * q10[None] ** ((tsoil - 10.0) / 10.0) * f_moist
          * (1.0 + g[None] * gpp / 10.0) * (soc / soc_zone_mean)[None] ** 0.3)

    # ---- assemble the cube ------------------------------------------------------------------
    sea = ~land
    coords = {
        "time": ("time", starts.to_numpy().astype("datetime64[ns]"),
                 {"long_name": "start of the MODIS 8-day period", "standard_name": "time"}),
        "y": ("y", grid.y, {"units": "degrees_north", "standard_name": "latitude",
                            "long_name": "latitude of pixel centre", "axis": "Y"}),
        "x": ("x", grid.x, {"units": "degrees_east", "standard_name": "longitude",
                            "long_name": "longitude of pixel centre", "axis": "X"}),
        "period_days": ("time", plen.astype(np.int16),
                        {"units": "d", "long_name": "days in the 8-day period"}),
    }

    def sea_nan(arr: np.ndarray) -> np.ndarray:
        """A float32 copy of a (y, x) or (time, y, x) field with NaN over the sea."""
        arr = np.asarray(arr, dtype=f32).copy()
        arr[..., sea] = np.nan
        return arr

    def var3(arr: np.ndarray, name: str) -> xr.Variable:
        std, long, units = _PRED_META[name]
        return xr.Variable(("time", "y", "x"), sea_nan(arr),
                           {"units": units, "long_name": long, "standard_name": std})

    def var2(arr: np.ndarray, name: str) -> xr.Variable:
        std, long, units = _FACTOR_META[name]
        return xr.Variable(("y", "x"), sea_nan(arr), {"units": units, "long_name": long,
                                                      "standard_name": std})

    data_vars: dict[str, xr.Variable] = {
        "lst_day": var3(lst_day, "lst_day"),
        "lst_night": var3(lst_night, "lst_night"),
        "ndvi_8d": var3(ndvi8, "ndvi_8d"),
        "evi": var3(evi, "evi"),
        "lswi_8d": var3(lswi8, "lswi_8d"),
        "gpp": var3(gpp, "gpp"),
        "lai": var3(lai, "lai"),
        "fpar": var3(fpar, "fpar"),
        "et": var3(et, "et"),
        "sin_doy": var3(np.broadcast_to(sin_doy[:, None, None], (nt, ny, nx)), "sin_doy"),
        "tem": var2(tem, "tem"),
        "pre": var2(pre, "pre"),
        "ndvi": var2(ndvi_gs, "ndvi"),
        "lswi": var2(lswi_gs, "lswi"),
        "dem": var2(dem, "dem"),
        "soc": var2(soc, "soc"),
        "land_mask": xr.Variable(("y", "x"), land,
                                 {"long_name": "land (true) or sea (false)", "units": "1",
                                  "flag_values": "0 1", "flag_meanings": "sea land"}),
    }
    attrs = {**synthetic_attrs(), "title": "SYNTHETIC globalflux world",
             "synthetic_seed": str(cfg.seed)}
    cube = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    cube = _write_crs(cube)

    rh32, ts32, w32 = sea_nan(rh), sea_nan(tsoil), sea_nan(w)
    truth = xr.Dataset(
        {
            "zone_true": xr.Variable(("y", "x"), zone,
                                     {"long_name": "true zone (answer key), -1 over sea",
                                      "units": "1", "_FillValue": -1}),
            "rh_true": xr.Variable(("time", "y", "x"), rh32,
                                   {"long_name": "true heterotrophic respiration (answer key)",
                                    "units": RH_UNITS,
                                    "standard_name": "heterotrophic_respiration_carbon_flux"}),
            "tsoil": xr.Variable(("time", "y", "x"), ts32,
                                 {"long_name": "latent soil temperature", "units": "degC"}),
            "soil_water": xr.Variable(("time", "y", "x"), w32,
                                      {"long_name": "latent relative soil water", "units": "1"}),
        },
        coords=dict(coords),
        attrs=dict(attrs, title="SYNTHETIC globalflux world: answer key"),
    )
    truth = _write_crs(truth)

    sites, long = _sample_sites(rng, cfg, grid, zone, land, dem, tair, rh, starts, plen, proto,
                                site_locations)

    ztab = proto[["name", "igbp", "r_ref", "q10", "moist_a", "moist_b", "gpp_gain"]].copy()
    ztab.insert(0, "zone", np.arange(cfg.n_zones))
    cube_vals = {"tem": tem, "pre": pre, "ndvi": ndvi_gs, "lswi": lswi_gs, "dem": dem, "soc": soc}
    for name, arr in cube_vals.items():
        ztab[f"{name}_mean"] = [float(np.nanmean(arr[zone == z])) for z in range(cfg.n_zones)]
    ztab["pixels"] = [int((zone == z).sum()) for z in range(cfg.n_zones)]
    ztab["n_sites"] = [int((sites["zone_true"] == z).sum()) for z in range(cfg.n_zones)]
    ztab["rh_mean"] = [float(np.nanmean(rh[:, zone == z])) for z in range(cfg.n_zones)]
    ztab.attrs.update(synthetic_attrs())
    return World(config=cfg, grid=grid, cube=cube, truth=truth, long=long, sites=sites, zones=ztab)


def _write_crs(ds: xr.Dataset) -> xr.Dataset:
    import rioxarray  # noqa: F401  (registers .rio)

    ds = ds.rio.set_spatial_dims(x_dim="x", y_dim="y")
    return ds.rio.write_crs("EPSG:4326", grid_mapping_name="spatial_ref")


def _given_sites(points: pd.DataFrame, grid: GridSpec, land: np.ndarray):
    """Pixel indices of given site locations on land; the ids of those dropped."""
    missing = [c for c in ("site_id", "lat", "lon") if c not in points.columns]
    if missing:
        raise DataError(f"site locations lack columns {missing}", where="site_locations",
                        fix="Give a table with site_id, lat and lon (degrees).")
    pts = points.drop_duplicates("site_id")
    lat = pd.to_numeric(pts["lat"], errors="coerce").to_numpy(float)
    lon = pd.to_numeric(pts["lon"], errors="coerce").to_numpy(float)
    res = grid.resolution
    ix = np.floor((lon - grid.bbox.west) / res)
    iy = np.floor((grid.bbox.north - lat) / res)
    ny, nx = land.shape
    inside = np.isfinite(ix) & np.isfinite(iy) & (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    ixc = np.where(inside, ix, 0).astype(int)
    iyc = np.where(inside, iy, 0).astype(int)
    ok = inside & land[iyc, ixc]
    ids = pts["site_id"].astype(str).to_numpy()
    if not ok.any():
        W, S, E, N = grid.bbox.as_tuple()
        raise DataError(
            f"none of the {len(pts)} site locations lies on the world's land "
            f"(world [{W:.4f}, {S:.4f}, {E:.4f}, {N:.4f}])", where="site_locations",
            fix="Move the world (synthetic.west/north) over the sites, or give other sites.")
    return (iyc[ok], ixc[ok], ids[ok], lat[ok], lon[ok], list(ids[~ok]))


def _place_sites(rng, zone, land, grid: GridSpec, *, n_zones: int, n_sites: int,
                 min_per_zone: int, where: str):
    """Site pixels and coordinates of a synthetic world -> ``(iy, ix, lat, lon)``.

    Sites go to zones by area with a floor of ``min_per_zone``, on distinct pixels away from
    the outermost two pixel rows/cols (extraction windows stay inside the world), in random
    order; each site lies somewhere inside its pixel (not its centre), rounded like site
    metadata. Shared by the 8-day world and the daily world (testing.daily)."""
    ny, nx = zone.shape
    area = np.array([(zone == z).sum() for z in range(n_zones)], dtype=float)
    want = np.maximum(min_per_zone, np.round(n_sites * area / area.sum())).astype(int)
    while want.sum() > n_sites and (want > min_per_zone).any():
        big = int(np.argmax(np.where(want > min_per_zone, want, -1)))
        want[big] -= 1
    while want.sum() < n_sites:
        want[int(np.argmax(area / want))] += 1
    inner = np.zeros_like(land)
    inner[2:-2, 2:-2] = True
    picks = []
    for z in range(n_zones):
        cand = np.flatnonzero(((zone == z) & inner).ravel())
        if cand.size < want[z]:
            raise DataError(f"zone {z} has only {cand.size} pixels for {want[z]} sites",
                            where=where, fix="Use a bigger world or fewer sites.")
        picks.append(rng.choice(cand, size=want[z], replace=False))
    flat = np.concatenate(picks)
    flat = flat[rng.permutation(flat.size)]
    iy, ix = np.unravel_index(flat, (ny, nx))
    res = grid.resolution
    lat = np.round(grid.y[iy] + rng.uniform(-0.45, 0.45, flat.size) * res, 5)
    lon = np.round(grid.x[ix] + rng.uniform(-0.45, 0.45, flat.size) * res, 5)
    return iy, ix, lat, lon


def _sample_sites(rng, cfg, grid, zone, land, dem, tair, rh, starts, plen, proto,
                  site_locations=None):
    """Sites on land, uneven records, warm-season bias, log-normal noise -> (sites, long)."""
    n_zones = cfg.n_zones
    if site_locations is not None:
        iy, ix, site_ids, lat, lon, dropped = _given_sites(site_locations, grid, land)
        return _observe(rng, cfg, grid, zone, dem, tair, rh, starts, plen, proto,
                        iy, ix, site_ids.astype(object), lat, lon, dropped)
    iy, ix, lat, lon = _place_sites(rng, zone, land, grid, n_zones=n_zones, n_sites=cfg.n_sites,
                                    min_per_zone=cfg.min_sites_per_zone, where="synthetic")
    n_sites = iy.size
    site_ids = np.array([f"SYN-{k + 1:03d}" for k in range(n_sites)], dtype=object)
    return _observe(rng, cfg, grid, zone, dem, tair, rh, starts, plen, proto,
                    iy, ix, site_ids, lat, lon, [])


def _observe(rng, cfg, grid, zone, dem, tair, rh, starts, plen, proto, iy, ix, site_ids, lat, lon,
             dropped):
    """Records of each site: uneven lengths, warm-season bias, noise -> (sites, long)."""
    nt = len(starts)
    n_sites = len(site_ids)
    zs = zone[iy, ix]
    igbp = proto["igbp"].to_numpy()[zs].astype(object)
    swap = rng.random(n_sites) < 0.15  # some sites sit in another land cover than the zone's
    igbp[swap] = rng.choice(np.array(["GRA", "CRO", "MF", "OSH"], dtype=object), size=int(swap.sum()))
    automated = rng.random(n_sites) < 0.3

    rows = []
    first_l, last_l, nobs_l = [], [], []
    for k in range(n_sites):
        # uneven record lengths: from 6 periods to the whole series, skewed short
        length = int(np.clip(round(nt * rng.beta(1.3, 1.6)), min(6, nt), nt))
        start = int(rng.integers(0, nt - length + 1))
        t_site = tair[start:start + length, iy[k], ix[k]]
        warm = np.clip((t_site - t_site.min()) / max(np.ptp(t_site), 1e-6), 0, 1)
        p_obs = (0.25 + 0.7 * warm) * np.where(t_site < 0.0, 0.3, 1.0)
        if automated[k]:
            p_obs = np.clip(p_obs + 0.25, 0, 1)
        obs = rng.random(length) < p_obs
        if obs.sum() < 3:  # every site has at least three observations
            obs[np.argsort(-p_obs)[:3]] = True
        idx = start + np.flatnonzero(obs)
        true = rh[idx, iy[k], ix[k]]
        if automated[k]:
            n_days = plen[idx] - (rng.random(idx.size) < 0.2) * rng.integers(1, 4, idx.size)
            n_days = np.maximum(n_days, 1)
        else:
            n_days = np.ones(idx.size, dtype=int) + (rng.random(idx.size) < 0.15)
        sd = cfg.noise_sd / np.sqrt(n_days)
        val = true * np.exp(sd * rng.standard_normal(idx.size) - 0.5 * sd ** 2)
        for j, t in enumerate(idx):
            rows.append((k, t, float(val[j]), int(n_days[j])))
        first_l.append(starts[idx[0]])
        last_l.append(starts[idx[-1]])
        nobs_l.append(idx.size)

    kk = np.array([r[0] for r in rows])
    tt = np.array([r[1] for r in rows])
    long = pd.DataFrame({
        "site_id": pd.Series(site_ids[kk], dtype="string"),
        "lat": lat[kk],
        "lon": lon[kk],
        "igbp": pd.Series(igbp[kk], dtype="string"),
        "time": pd.DatetimeIndex(starts[tt]).astype("datetime64[ns]"),
        "variable": pd.Series(["Rh"] * len(rows), dtype="string"),
        "value": np.array([r[2] for r in rows], dtype="float64"),
        "units": pd.Series([RH_UNITS] * len(rows), dtype="string"),
        "n": np.array([r[3] for r in rows], dtype="int64"),
    })
    long.attrs.update(synthetic_attrs())
    sites = pd.DataFrame({
        "site_id": pd.Series(site_ids, dtype="string"),
        "lat": lat,
        "lon": lon,
        "igbp": pd.Series(igbp, dtype="string"),
        "elevation": dem[iy, ix].astype(float),
        "zone_true": zs.astype(int),
        "automated": automated,
        "iy": iy.astype(int),
        "ix": ix.astype(int),
        "n_obs": np.array(nobs_l, dtype=int),
        "first": pd.DatetimeIndex(first_l).astype("datetime64[ns]"),
        "last": pd.DatetimeIndex(last_l).astype("datetime64[ns]"),
        "dataset": pd.Series(["synthetic"] * n_sites, dtype="string"),
    })
    sites.attrs.update(synthetic_attrs())
    sites.attrs["dropped_sites"] = [str(d) for d in dropped]
    return sites, long
