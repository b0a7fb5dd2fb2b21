"""Noise schedules: continuous time ``t in [0, 1]`` -> ``(alpha_t, sigma_t, logsnr_t)``.

Every schedule describes the marginal ``x_t = alpha_t * x0 + sigma_t * eps`` (Kingma et al. 2021,
"Variational Diffusion Models", eq. 1) and is a frozen pytree (``flax.struct.dataclass``): it passes
through ``jax.jit`` as data, so changing its numbers never recompiles.

* Discrete DDPM schedules (linear, scaled-linear, cosine, sigmoid betas; zero-terminal-SNR rescale)
  are tables of ``alpha_bar_i = prod_{j<=i} (1 - beta_j)`` for ``i = 0..T`` evaluated at ``t = i / T``
  (``alpha_bar_0 = 1``) and interpolated linearly in ``log alpha_bar`` between grid points.
* Continuous schedules: VP (linear beta, Song et al. 2021), sub-VP, VE (geometric sigma), EDM
  (Karras et al. 2022, sigma(t) on the rho-warped grid) and logSNR-linear (VDM).
* Interpolants of flow matching: the linear path alpha = 1 - t, sigma = t (Lipman et al. 2023; Liu et al.
  2023's rectified flow) and SiT's GVP path alpha = cos(pi t / 2), sigma = sin(pi t / 2) (Ma et al. 2024).
  They reach alpha = 0 at t = 1 (logsnr = -inf, the prior is exactly N(0, I)) and sigma = 0 at t = 0.

Each exposes the SDE ``dx = f(t) x dt + g(t) dW`` of its marginals: ``f = d log(alpha)/dt`` and
``g^2 = d(sigma^2)/dt - 2 f sigma^2`` (Kingma et al. 2021, appendix; Song et al. 2021 eq. 5), computed
with ``jax.jvp`` so no hand derivative can drift from the schedule itself.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = Any

_NEG_INF_LOG = -1e30  # stands for log(0) in tables, so interpolation never makes 0 * inf = nan.


def _asarray(t):
    t = jnp.asarray(t)
    return t if jnp.issubdtype(t.dtype, jnp.floating) else t.astype(jnp.float32)


class Schedule:
    """Shared methods. Subclasses define ``log_alpha2(t)`` and ``logsnr(t)`` (and may override more)."""

    variance_preserving: bool = True

    # --- the marginal -------------------------------------------------------------------------
    def log_alpha2(self, t: Array) -> Array:  # log(alpha_t^2)
        return jax.nn.log_sigmoid(self.logsnr(t))

    def log_sigma2(self, t: Array) -> Array:  # log(sigma_t^2)
        return self.log_alpha2(t) - self.logsnr(t)

    def alpha(self, t: Array) -> Array:
        return jnp.exp(0.5 * self.log_alpha2(_asarray(t)))

    def sigma(self, t: Array) -> Array:
        return jnp.exp(0.5 * self.log_sigma2(_asarray(t)))

    def alpha_sigma(self, t: Array) -> tuple[Array, Array]:
        return self.alpha(t), self.sigma(t)

    def snr(self, t: Array) -> Array:
        return jnp.exp(self.logsnr(t))

    def prior_std(self) -> Array:
        """Standard deviation of the prior p(x_1) = N(0, prior_std^2 I)."""
        return jnp.asarray(1.0)

    def t_from_logsnr(self, logsnr: Array) -> Array:
        """Inverse of ``logsnr(t)`` by bisection (subclasses with a closed form override it)."""
        logsnr = _asarray(logsnr)
        lo = jnp.zeros_like(logsnr)
        hi = jnp.ones_like(logsnr)

        def body(_, lohi):
            lo, hi = lohi
            mid = 0.5 * (lo + hi)
            go_right = self.logsnr(mid) > logsnr  # logsnr decreases with t
            return jnp.where(go_right, mid, lo), jnp.where(go_right, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 60, body, (lo, hi))
        return 0.5 * (lo + hi)

    # --- transitions q(x_t | x_s), s < t ----------------------------------------------------------
    def transition(self, s: Array, t: Array) -> tuple[Array, Array]:
        """``(alpha_{t|s}, sigma^2_{t|s})`` of q(x_t|x_s) = N(alpha_{t|s} x_s, sigma^2_{t|s} I).

        VDM eq. 3-4: alpha_{t|s} = alpha_t / alpha_s, sigma^2_{t|s} = sigma_t^2 - alpha_{t|s}^2 sigma_s^2;
        for variance-preserving schedules the latter is ``-expm1(log alpha_t^2 - log alpha_s^2)``.
        """
        d = self.log_alpha2(t) - self.log_alpha2(s)
        alpha_ts = jnp.exp(0.5 * d)
        if self.variance_preserving:
            var_ts = -jnp.expm1(d)
        else:
            var_ts = jnp.exp(self.log_sigma2(t)) - jnp.exp(d + self.log_sigma2(s))
        return alpha_ts, var_ts

    # --- the SDE ------------------------------------------------------------------------------------
    def sde(self, t: Array) -> tuple[Array, Array]:
        """``(f(t), g(t)^2)`` of the forward SDE dx = f(t) x dt + g(t) dW whose marginals are this schedule."""
        t = _asarray(t)
        la2, dla2 = jax.jvp(self.log_alpha2, (t,), (jnp.ones_like(t),))
        ls2, dls2 = jax.jvp(self.log_sigma2, (t,), (jnp.ones_like(t),))
        f = 0.5 * dla2
        g2 = jnp.exp(ls2) * (dls2 - dla2)  # d sigma^2/dt - 2 f sigma^2
        return f, g2

    def dlogsnr_dt(self, t: Array) -> Array:
        t = _asarray(t)
        return jax.jvp(self.logsnr, (t,), (jnp.ones_like(t),))[1]

    def rates(self, t: Array) -> tuple[Array, Array, Array, Array]:
        """``(alpha_t, sigma_t, d alpha/dt, d sigma/dt)``, the derivatives by ``jax.jvp`` on the schedule itself
        (the velocity parameterization of flow matching needs them)."""
        t = _asarray(t)
        a, da = jax.jvp(self.alpha, (t,), (jnp.ones_like(t),))
        s, ds = jax.jvp(self.sigma, (t,), (jnp.ones_like(t),))
        return a, s, da, ds


# ---------------------------------------------------------------------------------------------------
# Discrete (tabulated) schedules
# ---------------------------------------------------------------------------------------------------


@flax.struct.dataclass
class DiscreteSchedule(Schedule):
    """A T-step DDPM schedule: ``log_alpha_bar[i]`` at ``t = i / T``, ``i = 0..T`` (``alpha_bar_0 = 1``).

    Between grid points ``log alpha_bar`` is linear in t, so the grid values are exact and
    ``t_from_logsnr`` inverts exactly.
    """

    log_alpha_bar: Array  # [T + 1], log(alpha_bar) with log(0) stored as -1e30
    num_steps: int = flax.struct.field(pytree_node=False, default=1000)

    @property
    def alpha_bar(self) -> Array:  # [T + 1]
        return jnp.exp(self.log_alpha_bar)

    @property
    def betas(self) -> Array:  # [T], beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}, i = 1..T
        return -jnp.expm1(jnp.diff(self.log_alpha_bar))

    def log_alpha2(self, t):
        t = _asarray(t)
        pos = jnp.clip(t, 0.0, 1.0) * self.num_steps
        i = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, self.num_steps - 1)
        w = pos - i
        table = self.log_alpha_bar.astype(t.dtype)
        return (1.0 - w) * table[i] + w * table[i + 1]

    def log_sigma2(self, t):
        return jnp.log(-jnp.expm1(self.log_alpha2(t)))

    def logsnr(self, t):
        la2 = self.log_alpha2(t)
        return la2 - jnp.log(-jnp.expm1(la2))

    def t_from_logsnr(self, logsnr):
        logsnr = _asarray(logsnr)
        la2 = jax.nn.log_sigmoid(logsnr)
        table = -self.log_alpha_bar.astype(logsnr.dtype)  # increasing in i
        i = jnp.clip(jnp.searchsorted(table, -la2, side="right") - 1, 0, self.num_steps - 1)
        lo, hi = table[i], table[i + 1]
        w = jnp.clip((-la2 - lo) / (hi - lo), 0.0, 1.0)
        return (i + w) / self.num_steps


def _check_betas(betas: np.ndarray, name: str) -> np.ndarray:
    betas = np.asarray(betas, np.float64)
    if betas.ndim != 1 or betas.size < 1:
        raise ValueError(f"{name}: betas must be a 1-D array of length T >= 1, got shape {betas.shape}")
    if not np.all((betas > 0) & (betas <= 1)) or not np.all(np.isfinite(betas)):
        bad = betas[~((betas > 0) & (betas <= 1))][:3]
        raise ValueError(f"{name}: every beta must lie in (0, 1] (1 only for the last, zero-terminal-SNR "
                         f"step); got values such as {bad.tolist()}")
    if np.any(betas[:-1] >= 1):
        raise ValueError(f"{name}: only the last beta may equal 1")
    return betas


def _check_T(num_steps, name):
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"{name}: num_steps (T) must be an integer >= 1, got {num_steps!r}")
    return int(num_steps)


def from_betas(betas, *, name: str = "betas") -> DiscreteSchedule:
    """A discrete schedule from its betas (DDPM eq. 4: alpha_bar_t = prod_s (1 - beta_s))."""
    betas = _check_betas(betas, name)
    with np.errstate(divide="ignore"):
        log_ab = np.concatenate([[0.0], np.cumsum(np.log1p(-betas))])
    log_ab = np.where(np.isfinite(log_ab), log_ab, _NEG_INF_LOG)
    return DiscreteSchedule(log_alpha_bar=jnp.asarray(log_ab), num_steps=len(betas))


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
    """Ho et al. 2020: betas linear from 1e-4 to 0.02, scaled by 1000/T (improved-diffusion) when T != 1000."""
    T = _check_T(num_steps, "linear")
    scale = 1000.0 / T
    if scale * beta_end >= 1:
        raise ValueError(f"linear: num_steps={T} scales beta_end to {scale * beta_end:.3g} >= 1; use "
                         f"num_steps > {int(1000 * beta_end)} or another schedule (cosine, logsnr_linear)")
    return np.linspace(scale * beta_start, scale * beta_end, T, dtype=np.float64)


def scaled_linear_betas(num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012):
    """Stable Diffusion: sqrt(beta) linear between sqrt(beta_start) and sqrt(beta_end)."""
    T = _check_T(num_steps, "scaled_linear")
    return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
    """Nichol & Dhariwal 2021 eq. 17: alpha_bar(t) = cos^2((t/T + s)/(1 + s) * pi/2), beta clipped at 0.999."""
    T = _check_T(num_steps, "cosine")
    f = lambda u: np.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    u = np.arange(T + 1, dtype=np.float64) / T
    ab = f(u) / f(0.0)
    return np.minimum(1 - ab[1:] / ab[:-1], max_beta)


def sigmoid_betas(num_steps: int = 1000, start: float = -3.0, end: float = 3.0, tau: float = 1.0):
    """Sigmoid schedule (Jabri et al. 2022; Chen 2023): alpha_bar from a scaled sigmoid of t."""
    T = _check_T(num_steps, "sigmoid")
    u = np.arange(T + 1, dtype=np.float64) / T
    sig = lambda z: 1 / (1 + np.exp(-z))
    v0, v1 = sig(start / tau), sig(end / tau)
    ab = (-sig((u * (end - start) + start) / tau) + v1) / (v1 - v0)
    ab = np.clip(ab, 1e-9, 1.0)
    return np.clip(1 - ab[1:] / ab[:-1], 1e-12, 0.999)


def rescale_zero_terminal_snr(betas) -> np.ndarray:
    """Lin et al. 2023 Algorithm 1: shift and scale sqrt(alpha_bar) so alpha_bar_T = 0 (beta_T = 1)."""
    betas = _check_betas(betas, "rescale_zero_terminal_snr")
    sab = np.sqrt(np.cumprod(1 - betas))
    s0, sT = sab[0], sab[-1]
    sab = (sab - sT) * s0 / (s0 - sT)
    ab = sab**2
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    return 1 - ab / ab_prev


# ---------------------------------------------------------------------------------------------------
# Continuous schedules
# ---------------------------------------------------------------------------------------------------


@flax.struct.dataclass
class VPSchedule(Schedule):
    """VP SDE (Song et al. 2021 eq. 11): beta(t) linear from beta_min to beta_max; alpha = exp(-B/2)."""

    beta_min: Array = 0.1
    beta_max: Array = 20.0

    def _B(self, t):  # integral_0^t beta(s) ds
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def log_alpha2(self, t):
        return -self._B(_asarray(t))

    def log_sigma2(self, t):
        return jnp.log(-jnp.expm1(-self._B(_asarray(t))))

    def logsnr(self, t):
        return -jnp.log(jnp.expm1(self._B(_asarray(t))))

    def sde(self, t):
        t = _asarray(t)
        beta = self.beta_min + t * (self.beta_max - self.beta_min)
        return -0.5 * beta, beta

    def t_from_logsnr(self, logsnr):
        B = jax.nn.softplus(-_asarray(logsnr))  # log(1 + e^{-logsnr})
        b0, db = self.beta_min, self.beta_max - self.beta_min
        return 2 * B / (b0 + jnp.sqrt(b0**2 + 2 * db * B))


@flax.struct.dataclass
class SubVPSchedule(VPSchedule):
    """sub-VP SDE (Song et al. 2021 eq. 12): alpha as VP, sigma = 1 - exp(-B(t))."""

    variance_preserving = False

    def log_sigma2(self, t):
        return 2 * jnp.log(-jnp.expm1(-self._B(_asarray(t))))

    def logsnr(self, t):
        return self.log_alpha2(t) - self.log_sigma2(t)

    def sde(self, t):
        t = _asarray(t)
        beta = self.beta_min + t * (self.beta_max - self.beta_min)
        return -0.5 * beta, beta * -jnp.expm1(-2 * self._B(t))

    t_from_logsnr = Schedule.t_from_logsnr


@flax.struct.dataclass
class VESchedule(Schedule):
    """VE SDE (Song et al. 2021 eq. 9): alpha = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t."""

    sigma_min: Array = 0.01
    sigma_max: Array = 50.0
    variance_preserving = False

    def log_alpha2(self, t):
        return jnp.zeros_like(_asarray(t))

    def log_sigma2(self, t):
        t = _asarray(t)
        return 2 * (jnp.log(self.sigma_min) + t * (jnp.log(self.sigma_max) - jnp.log(self.sigma_min)))

    def logsnr(self, t):
        return -self.log_sigma2(t)

    def t_from_logsnr(self, logsnr):
        lmin, lmax = jnp.log(self.sigma_min), jnp.log(self.sigma_max)
        return (-0.5 * _asarray(logsnr) - lmin) / (lmax - lmin)

    def prior_std(self):
        return jnp.asarray(self.sigma_max)


@flax.struct.dataclass
class EDMSchedule(Schedule):
    """EDM (Karras et al. 2022): alpha = 1 and sigma(t) on the rho-warped grid of eq. 5, decreasing t -> sigma
    from sigma_max at t = 1 to sigma_min at t = 0, so uniform t steps are the Karras sigmas."""

    sigma_min: Array = 0.002
    sigma_max: Array = 80.0
    rho: Array = 7.0
    variance_preserving = False

    def _sigma(self, t):
        a, b = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (a + _asarray(t) * (b - a)) ** self.rho

    def log_alpha2(self, t):
        return jnp.zeros_like(_asarray(t))

    def log_sigma2(self, t):
        return 2 * jnp.log(self._sigma(t))

    def logsnr(self, t):
        return -self.log_sigma2(t)

    def t_from_logsnr(self, logsnr):
        a, b = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        s = jnp.exp(-0.5 * _asarray(logsnr))
        return (s ** (1 / self.rho) - a) / (b - a)

    def prior_std(self):
        return jnp.asarray(self.sigma_max)


@flax.struct.dataclass
class LogSNRLinearSchedule(Schedule):
    """VDM (Kingma et al. 2021) fixed schedule: logsnr linear from logsnr_max at t=0 to logsnr_min at t=1;
    variance preserving (alpha^2 = sigmoid(logsnr))."""

    logsnr_max: Array = 10.0
    logsnr_min: Array = -10.0

    def logsnr(self, t):
        return self.logsnr_max + _asarray(t) * (self.logsnr_min - self.logsnr_max)

    def log_sigma2(self, t):
        return jax.nn.log_sigmoid(-self.logsnr(t))

    def t_from_logsnr(self, logsnr):
        return (_asarray(logsnr) - self.logsnr_max) / (self.logsnr_min - self.logsnr_max)


@flax.struct.dataclass
class CosineSchedule(Schedule):
    """Continuous cosine VP schedule (Nichol & Dhariwal 2021 with s = 0): logsnr = -2 log tan(pi t / 2),
    clipped to [logsnr_min, logsnr_max] by shifting t into the matching range."""

    logsnr_min: Array = -15.0
    logsnr_max: Array = 15.0

    def _t_range(self):
        t0 = jnp.arctan(jnp.exp(-0.5 * self.logsnr_max)) * 2 / jnp.pi
        t1 = jnp.arctan(jnp.exp(-0.5 * self.logsnr_min)) * 2 / jnp.pi
        return t0, t1

    def logsnr(self, t):
        t0, t1 = self._t_range()
        return -2 * jnp.log(jnp.tan(jnp.pi / 2 * (t0 + _asarray(t) * (t1 - t0))))

    def log_sigma2(self, t):
        return jax.nn.log_sigmoid(-self.logsnr(t))

    def t_from_logsnr(self, logsnr):
        t0, t1 = self._t_range()
        u = jnp.arctan(jnp.exp(-0.5 * _asarray(logsnr))) * 2 / jnp.pi
        return (u - t0) / (t1 - t0)


@flax.struct.dataclass
class LinearPathSchedule(Schedule):
    """The linear interpolant of flow matching and rectified flow: x_t = (1 - t) x0 + t eps (Lipman et al.
    2023; Liu et al. 2023). Not variance preserving; logsnr = 2 log((1 - t) / t), infinite at both ends."""

    variance_preserving = False

    def alpha(self, t):
        return 1.0 - _asarray(t)

    def sigma(self, t):
        return _asarray(t)

    def log_alpha2(self, t):
        return 2 * jnp.log1p(-_asarray(t))

    def log_sigma2(self, t):
        return 2 * jnp.log(_asarray(t))

    def logsnr(self, t):
        t = _asarray(t)
        return 2 * (jnp.log1p(-t) - jnp.log(t))

    def t_from_logsnr(self, logsnr):
        return jax.nn.sigmoid(-0.5 * _asarray(logsnr))


@flax.struct.dataclass
class GVPSchedule(Schedule):
    """SiT's generalized variance-preserving interpolant (Ma et al. 2024): alpha = cos(pi t / 2), sigma =
    sin(pi t / 2); the untruncated continuous cosine schedule, logsnr = -2 log tan(pi t / 2)."""

    def alpha(self, t):  # cos(pi t / 2), written so that it is exactly 0 at t = 1 in floating point
        return jnp.sin(0.5 * jnp.pi * (1.0 - _asarray(t)))

    def sigma(self, t):
        return jnp.sin(0.5 * jnp.pi * _asarray(t))

    def log_alpha2(self, t):
        return 2 * jnp.log(self.alpha(t))

    def log_sigma2(self, t):
        return 2 * jnp.log(self.sigma(t))

    def logsnr(self, t):
        return self.log_alpha2(t) - self.log_sigma2(t)

    def t_from_logsnr(self, logsnr):
        return jnp.arctan(jnp.exp(-0.5 * _asarray(logsnr))) * 2 / jnp.pi


def alpha_vanishes(schedule: Schedule) -> bool:
    """Whether alpha reaches 0 at t = 1 (the flow interpolants: lambda = -inf where sampling starts)."""
    return isinstance(schedule, (LinearPathSchedule, GVPSchedule))


# ---------------------------------------------------------------------------------------------------
# By name
# ---------------------------------------------------------------------------------------------------


def _discrete(betas_fn: Callable, zero_terminal_snr: bool = False, **kwargs) -> DiscreteSchedule:
    name = betas_fn.__name__.replace("_betas", "")
    betas = betas_fn(**kwargs)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return from_betas(betas, name=name)


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "linear": lambda **kw: _discrete(linear_betas, **kw),
    "scaled_linear": lambda **kw: _discrete(scaled_linear_betas, **kw),
    "cosine": lambda **kw: _discrete(cosine_betas, **kw),
    "sigmoid": lambda **kw: _discrete(sigmoid_betas, **kw),
    "vp": VPSchedule,
    "subvp": SubVPSchedule,
    "ve": VESchedule,
    "edm": EDMSchedule,
    "logsnr_linear": LogSNRLinearSchedule,
    "cosine_continuous": CosineSchedule,
    "flow_linear": LinearPathSchedule,
    "flow_gvp": GVPSchedule,
}


def get_schedule(name: str, **kwargs) -> Schedule:
    """Build a schedule by name: one of ``SCHEDULES`` (discrete ones take ``num_steps``, default 1000,
    and ``zero_terminal_snr``; continuous ones take their dataclass fields)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule name {name!r}; allowed: {sorted(SCHEDULES)}")
    try:
        return SCHEDULES[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"schedule {name!r}: bad arguments {sorted(kwargs)}: {e}") from None


def is_discrete(schedule: Schedule) -> bool:
    return isinstance(schedule, DiscreteSchedule)
