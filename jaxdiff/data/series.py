"""Real time series that statsmodels ships, cut into normalised windows for diffusion models and
forecasting (offline: the data are inside the statsmodels package).

Each series has a declared seasonal period (or None) used by the seasonal-naive baseline. The last
``test_frac`` of every series is held out by time: training windows lie entirely before it, and test
windows are rolling forecast origins inside it (forecast ``horizon`` values from the ``window - horizon``
values before them, origins ``horizon`` apart). Every window is normalised by its own context (the first
``window - horizon`` values, the part known at forecast time): ``z = (y - loc) / scale`` with loc the
context mean and scale its standard deviation, floored at 10% of the series' training std.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    name: str
    period: int | None  # declared seasonal period (None: naive baseline)
    freq: str
    description: str


SERIES = (
    SeriesInfo("sunspots", 11, "yearly", "Wolf sunspot numbers 1700-2008 (period: the ~11-year solar cycle)"),
    SeriesInfo("co2", 12, "monthly", "Mauna Loa CO2 (ppm) 1958-2001, weekly data averaged by month"),
    SeriesInfo("elnino", 12, "monthly", "El Nino sea surface temperature 1950-2010"),
    SeriesInfo("nile", None, "yearly", "Nile river flow at Aswan 1871-1970"),
    SeriesInfo("unemployment", 4, "quarterly", "US unemployment rate 1959-2009 (macrodata)"),
    SeriesInfo("inflation", 4, "quarterly", "US inflation rate 1959-2009 (macrodata)"),
)
SERIES_NAMES = tuple(s.name for s in SERIES)


def load_series(name: str) -> np.ndarray:
    """The raw series ``[n]`` (float64) from statsmodels.datasets."""
    import statsmodels.api as sm

    ds = sm.datasets
    if name == "sunspots":
        return ds.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(float)
    if name == "co2":
        s = ds.co2.load_pandas().data["co2"]
        return s.resample("MS").mean().interpolate().to_numpy(float)
    if name == "elnino":
        return ds.elnino.load_pandas().data.iloc[:, 1:].to_numpy(float).ravel()
    if name == "nile":
        return ds.nile.load_pandas().data["volume"].to_numpy(float)
    if name in ("unemployment", "inflation"):
        col = {"unemployment": "unemp", "inflation": "infl"}[name]
        return ds.macrodata.load_pandas().data[col].to_numpy(float)
    raise ValueError(f"unknown series {name!r}; allowed: {list(SERIES_NAMES)}")


def split_index(n: int, test_frac: float) -> int:
    return int(round(n * (1 - test_frac)))


def training_part(values: np.ndarray, test_frac: float = 0.2) -> np.ndarray:
    """The values before the held-out test part (what validation splits are cut from)."""
    return np.asarray(values)[: split_index(len(values), test_frac)]


def normalise(window: np.ndarray, context: int, floor: float):
    """``(z, loc, scale)`` with loc/scale from the window's first ``context`` values."""
    c = window[:context]
    loc = float(c.mean())
    scale = float(max(c.std(), floor))
    return (window - loc) / scale, loc, scale


def make_windows(values: np.ndarray, window: int, horizon: int, test_frac: float = 0.2):
    """Training windows (stride 1, before the split) and rolling-origin test windows (after it).

    Returns two dicts of arrays: ``z [N, window]`` normalised, ``loc``, ``scale``, ``start`` (index of the
    window's first value in the series).
    """
    values = np.asarray(values, np.float64)
    n, context = len(values), window - horizon
    if not 0 < horizon < window:
        raise ValueError(f"need 0 < horizon < window, got horizon={horizon}, window={window}")
    split = split_index(n, test_frac)
    if split < window + 1:
        raise ValueError(f"series of length {n} is too short for window={window}: its training part "
                         f"({split} values, test_frac={test_frac}) must hold more than one window")
    floor = 0.1 * float(values[:split].std())
    train = [s for s in range(0, split - window + 1)]
    test = [o - context for o in range(split, n - horizon + 1, horizon)]
    if not test:
        raise ValueError(f"series of length {n} has no test origin for horizon={horizon}")

    def pack(starts):
        out = [normalise(values[s:s + window], context, floor) for s in starts]
        return {"z": np.stack([o[0] for o in out]).astype(np.float32),
                "loc": np.array([o[1] for o in out], np.float32),
                "scale": np.array([o[2] for o in out], np.float32),
                "start": np.array(starts, np.int32)}

    return pack(train), pack(test)


# ---------------------------------------------------------------------------------------------------
# Baselines and scores
# ---------------------------------------------------------------------------------------------------


def seasonal_naive(history: np.ndarray, horizon: int, period: int | None) -> np.ndarray:
    """y_hat_{T+h} = y_{T+h-m k} with k = ceil(h/m) (the last observed season); naive (last value) when
    ``period`` is None."""
    m = period or 1
    h = np.arange(1, horizon + 1)
    return np.asarray(history)[len(history) + h - 1 - m * np.ceil(h / m).astype(int)]


def fit_ar(train: np.ndarray, max_lag: int):
    """AutoReg with a constant, lag order by AIC up to ``max_lag`` (statsmodels); returns (const, coefs,
    sigma2)."""
    from statsmodels.tsa.ar_model import AutoReg, ar_select_order

    sel = ar_select_order(train, maxlag=max_lag, ic="aic", trend="c")
    lags = sel.ar_lags or [1]
    res = AutoReg(train, lags=lags, trend="c").fit()
    coefs = np.zeros(max(lags))
    coefs[np.asarray(lags) - 1] = res.params[1:]
    return float(res.params[0]), coefs, float(res.sigma2)


def ar_forecast(history: np.ndarray, horizon: int, const: float, coefs: np.ndarray, sigma2: float):
    """Mean and standard deviation of the h-step AR forecasts (psi weights for the variance)."""
    p = len(coefs)
    buf = list(history[-p:])
    mean = []
    for _ in range(horizon):
        y = const + float(np.dot(coefs, buf[::-1][:p]))
        mean.append(y)
        buf.append(y)
    psi = np.zeros(horizon)
    psi[0] = 1.0
    for j in range(1, horizon):
        psi[j] = sum(coefs[i] * psi[j - 1 - i] for i in range(min(p, j)))
    std = np.sqrt(sigma2 * np.cumsum(psi**2))
    return np.array(mean), std


def crps_samples(samples: np.ndarray, y: np.ndarray) -> np.ndarray:
    """CRPS of an ensemble ``[S, H]`` per target ``[H]``: E|X - y| - E|X - X'| / 2 (the unbiased "fair"
    form over S(S-1) pairs; Gneiting & Raftery 2007)."""
    S = samples.shape[0]
    a = np.abs(samples - y[None]).mean(0)
    xs = np.sort(samples, axis=0)
    # sum_{i,j} |x_i - x_j| = 2 sum_i (2i - S + 1) x_(i) for sorted x (0-based i)
    w = (2 * np.arange(S) - S + 1)[:, None]
    pair = 2 * (w * xs).sum(0) / (S * (S - 1))
    return a - 0.5 * pair


def crps_gaussian(mean, std, y):
    """Closed-form CRPS of N(mean, std^2) at y."""
    from scipy.stats import norm

    z = (y - mean) / std
    return std * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))
