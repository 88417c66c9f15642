"""Baselines for daily soil CO2 efflux: temperature-response models and day-of-year climatology.

All are scikit-learn-style estimators fitted per site on that site's training part (the caller
loops over sites; :func:`fit_predict_site` does one site).

* :class:`Q10Model`: ``R = R10 * Q10 ** ((T - 10) / 10)`` (van 't Hoff; e.g. Davidson et al.
  2006, Global Change Biology 12:154-164), ``T`` soil temperature in degC.
* :class:`LloydTaylorModel`: ``R = Rref * exp(E0 * (1/(Tref - T0) - 1/(T - T0)))`` with
  ``Tref = 283.15 K`` (10 degC), ``T0 = 227.13 K`` and ``E0`` (K) fitted (Lloyd and Taylor
  1994, Functional Ecology 8:315-323).
* :class:`GlobalQ10Model`: one Q10 model for all sites whose parameters come from static site
  attributes: per-site Q10 fits on the training sites, then ``log R10`` and ``log Q10`` as a
  ridge regression on the standardised attributes (training sites only). It needs no data of
  the site it predicts, so it is the fair baseline for sites a model never saw.
* :class:`DoyClimatology`: mean of the training values per day of year, smoothed with a centred
  circular window (days with no training value in the window get the overall training mean).

Temperature models are fitted by least squares on the original scale (bounded: Q10 in
[1, 10], E0 in [0, 1000] K, reference rates > 0), started from a log-linear fit.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..metrics import valid_pairs

__all__ = ["Q10Model", "LloydTaylorModel", "GlobalQ10Model", "DoyClimatology",
           "fit_predict_site"]

T_REF_K = 283.15
T0_K = 227.13


class _Params:
    """scikit-learn ``get_params``/``set_params`` over the names in ``_PARAMS``."""

    _PARAMS: tuple[str, ...] = ()

    def get_params(self, deep: bool = True):
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **p):
        for k, v in p.items():
            setattr(self, k, v)
        return self


class _TempModel(_Params):
    """Shared fitting of a two-parameter temperature response by bounded least squares."""

    _bounds: tuple[tuple[float, float], tuple[float, float]]
    _PARAMS = ("min_samples",)

    def __init__(self, min_samples: int = 5):
        self.min_samples = min_samples

    def _f(self, theta, t):  # pragma: no cover - abstract
        raise NotImplementedError

    def _start(self, t, r):  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, T, R):
        """Fit on soil temperature ``T`` (degC) and flux ``R`` (any flux unit); NaN pairs dropped."""
        from scipy.optimize import least_squares

        t, r = valid_pairs(T, R)
        if t.size < self.min_samples:
            raise ModelError(f"{t.size} valid (T, R) pairs, fewer than {self.min_samples}",
                             where=type(self).__name__, fix="Give more training days.")
        x0 = np.clip(self._start(t, r), [b[0] + 1e-9 for b in self._bounds],
                     [b[1] - 1e-9 for b in self._bounds])
        res = least_squares(lambda th: self._f(th, t) - r, x0,
                            bounds=([b[0] for b in self._bounds], [b[1] for b in self._bounds]))
        self.params_ = res.x
        self.n_train_ = int(t.size)
        return self

    def predict(self, T):
        if not hasattr(self, "params_"):
            raise ModelError("not fitted", where=type(self).__name__, fix="Call fit() first.")
        return self._f(self.params_, np.asarray(T, dtype="float64"))


def _loglinear(t, r):
    pos = r > 0
    if pos.sum() >= 2 and np.ptp(t[pos]) > 0:
        b, a = np.polyfit(t[pos], np.log(r[pos]), 1)
        return a, b
    return np.log(max(np.nanmean(r), 1e-6)), 0.0


class Q10Model(_TempModel):
    """``R = R10 * Q10 ** ((T - 10) / 10)``; learned ``R10_``, ``Q10_``."""

    _bounds = ((1e-9, np.inf), (1.0, 10.0))

    def _f(self, theta, t):
        r10, q10 = theta
        return r10 * q10 ** ((t - 10.0) / 10.0)

    def _start(self, t, r):
        a, b = _loglinear(t, r)
        return np.array([np.exp(a + 10 * b), np.exp(10 * b)])

    @property
    def R10_(self):
        return self.params_[0]

    @property
    def Q10_(self):
        return self.params_[1]


class LloydTaylorModel(_TempModel):
    """Lloyd-Taylor (1994) Arrhenius-type response; learned ``Rref_`` (at 10 degC), ``E0_`` (K)."""

    _bounds = ((1e-9, np.inf), (0.0, 1000.0))

    def _f(self, theta, t):
        rref, e0 = theta
        tk = np.maximum(np.asarray(t, dtype="float64") + 273.15, T0_K + 1.0)  # below T0: undefined
        return rref * np.exp(e0 * (1.0 / (T_REF_K - T0_K) - 1.0 / (tk - T0_K)))

    def _start(self, t, r):
        x = 1.0 / (T_REF_K - T0_K) - 1.0 / (np.maximum(t + 273.15, T0_K + 1.0) - T0_K)
        pos = r > 0
        if pos.sum() >= 2 and np.ptp(x[pos]) > 0:
            e0, a = np.polyfit(x[pos], np.log(r[pos]), 1)
            return np.array([np.exp(a), e0])
        return np.array([max(np.nanmean(r), 1e-6), 308.56])

    @property
    def Rref_(self):
        return self.params_[0]

    @property
    def E0_(self):
        return self.params_[1]


class GlobalQ10Model(_Params):
    """A Q10 model for unseen sites: ``R10`` and ``Q10`` predicted from static attributes.

    Fitting: a :class:`Q10Model` per training site (sites with fewer than ``min_samples``
    (T, R) pairs are skipped), then ``[log R10, log Q10]`` regressed on the site attributes
    standardised with the training sites' mean and standard deviation (ridge, penalty
    ``alpha``; intercept not penalised). Prediction: ``R = R10(a) * Q10(a) ** ((T - 10) / 10)``
    with ``Q10`` clipped to [1, 10] like the per-site fit; a site with a missing attribute or
    temperature gets NaN.

    Parameters
    ----------
    alpha
        Ridge penalty on the standardised attributes (1.0).
    min_samples
        Fewest (T, R) training pairs for a site's own Q10 fit to enter the regression.

    Attributes
    ----------
    coef_, intercept_
        ``(n_attributes, 2)`` and ``(2,)``: ``[log R10, log Q10] = intercept_ + z @ coef_``.
    site_params_
        ``(n_sites, 2)`` per-site ``[R10, Q10]`` of the training sites (NaN where skipped).
    n_sites_
        Training sites that entered the regression.
    """

    _PARAMS = ("alpha", "min_samples")

    def __init__(self, alpha: float = 1.0, min_samples: int = 5):
        self.alpha = alpha
        self.min_samples = min_samples

    def fit(self, A, T, R):
        """``A`` (n_sites, n_attributes); ``T`` and ``R`` (n_sites, n_days), NaN where a day is
        not used (test days of training sites must be NaN in ``R``)."""
        A = np.asarray(A, dtype="float64")
        T = np.asarray(T, dtype="float64")
        R = np.asarray(R, dtype="float64")
        if A.ndim != 2 or T.shape != R.shape or T.shape[0] != A.shape[0]:
            raise ModelError(f"shapes A {A.shape}, T {T.shape}, R {R.shape} do not agree",
                             where="GlobalQ10Model", fix="Give A (sites, attributes) and T, R "
                             "(sites, days) for the same sites.")
        params = np.full((A.shape[0], 2), np.nan)
        for i in range(A.shape[0]):
            try:
                params[i] = Q10Model(min_samples=self.min_samples).fit(T[i], R[i]).params_
            except ModelError:
                continue
        ok = np.isfinite(params).all(axis=1) & np.isfinite(A).all(axis=1)
        if ok.sum() < 2:
            raise ModelError(f"{int(ok.sum())} training site(s) with a Q10 fit and all attributes",
                             where="GlobalQ10Model",
                             fix="Give at least 2 training sites with soil temperature.")
        a = A[ok]
        self.mean_ = a.mean(axis=0)
        sd = a.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        z = (a - self.mean_) / self.scale_
        p = np.log(params[ok])
        self.intercept_ = p.mean(axis=0)
        k = z.shape[1]
        self.coef_ = np.linalg.solve(z.T @ z + float(self.alpha) * np.eye(k),
                                     z.T @ (p - self.intercept_))
        self.site_params_ = params
        self.n_sites_ = int(ok.sum())
        return self

    def predict_params(self, A) -> np.ndarray:
        """``(n_sites, 2)`` predicted ``[R10, Q10]`` from attributes ``A``."""
        if not hasattr(self, "coef_"):
            raise ModelError("not fitted", where="GlobalQ10Model", fix="Call fit() first.")
        z = (np.asarray(A, dtype="float64") - self.mean_) / self.scale_
        p = np.exp(self.intercept_ + z @ self.coef_)
        p[:, 1] = np.clip(p[:, 1], 1.0, 10.0)
        return p

    def predict(self, A, T) -> np.ndarray:
        """``(n_sites, n_days)`` flux from attributes ``A`` and temperatures ``T``."""
        p = self.predict_params(A)
        T = np.asarray(T, dtype="float64")
        return p[:, :1] * p[:, 1:] ** ((T - 10.0) / 10.0)


class DoyClimatology(_Params):
    """Day-of-year mean of the training values, smoothed over a centred circular window.

    Parameters
    ----------
    window
        Width of the centred window in days (odd; 31 by default), wrapping around the year.
    """

    _PARAMS = ("window",)

    def __init__(self, window: int = 31):
        self.window = window

    def fit(self, doy, R):
        """``doy`` day of year (1-366) and values ``R``; NaN pairs dropped."""
        d, r = valid_pairs(doy, R)
        if d.size == 0:
            raise ModelError("no valid training value", where="DoyClimatology",
                             fix="Give at least one observed day.")
        d = (np.round(d).astype(int) - 1) % 366
        sums = np.bincount(d, weights=r, minlength=366)
        cnts = np.bincount(d, minlength=366).astype(float)
        half = int(self.window) // 2
        k = np.ones(2 * half + 1)
        wrap_s = np.concatenate([sums[-half:], sums, sums[:half]]) if half else sums
        wrap_c = np.concatenate([cnts[-half:], cnts, cnts[:half]]) if half else cnts
        s = np.convolve(wrap_s, k, mode="valid")
        c = np.convolve(wrap_c, k, mode="valid")
        self.overall_mean_ = float(r.mean())
        self.table_ = np.where(c > 0, s / np.maximum(c, 1), self.overall_mean_)
        self.coverage_ = c > 0
        return self

    def predict(self, doy):
        if not hasattr(self, "table_"):
            raise ModelError("not fitted", where="DoyClimatology", fix="Call fit() first.")
        d = np.asarray(doy, dtype="float64")
        out = np.full(d.shape, np.nan)
        ok = np.isfinite(d)
        out[ok] = self.table_[(np.round(d[ok]).astype(int) - 1) % 366]
        return out


def fit_predict_site(temp, doy, obs, train, *, min_samples: int = 5, window: int = 31):
    """Fit the three baselines on one site's training days and predict every day.

    Parameters
    ----------
    temp
        Soil temperature (degC) per day.
    doy
        Day of year per day.
    obs
        Observed flux per day (NaN: not observed).
    train
        Bool per day: True on the training part.

    Returns
    -------
    dict
        ``{"q10": pred, "lt": pred, "clim": pred, "params": {...}}``; a temperature model that
        cannot be fitted (too few pairs) predicts NaN.
    """
    temp = np.asarray(temp, dtype="float64")
    obs = np.asarray(obs, dtype="float64")
    train = np.asarray(train, dtype=bool)
    y_tr = np.where(train, obs, np.nan)
    out: dict = {"params": {}}
    for key, cls in (("q10", Q10Model), ("lt", LloydTaylorModel)):
        try:
            m = cls(min_samples=min_samples).fit(temp, y_tr)
            out[key] = m.predict(temp)
            out["params"][key] = [float(v) for v in m.params_]
        except ModelError:
            out[key] = np.full(obs.shape, np.nan)
            out["params"][key] = [np.nan, np.nan]
    clim = DoyClimatology(window=window).fit(doy, y_tr)
    out["clim"] = clim.predict(doy)
    return out
