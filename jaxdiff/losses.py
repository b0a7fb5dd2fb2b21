"""Training losses: weighted denoising MSE (eps / x0 / v / score targets), the variational bound in
bits/dim, the hybrid loss with learned variance, continuous-time denoising score matching.

Every loss is built by :func:`make_loss` and has the signature ``loss_fn(params, batch, key) ->
(loss, metrics)``; per-example terms ``[B]`` are computed first, then averaged.

Weightings follow Kingma & Gao 2023 ("Understanding diffusion objectives"): each is a weight
``w_eps(t)`` on the eps-space error ``||eps_hat - eps||^2`` (mean over dims); since every
parameterization's error is a known multiple of the eps error, the loss is computed in the model's own
output space with the matching factor. ``"uniform"`` is the exception: plain MSE of the output.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxdiff.forward import prior_kl, q_sample
from jaxdiff.parameterization import check_prediction, from_x0_eps, rates_at, to_x0_eps
from jaxdiff.reverse import LN2, VARIANCES, p_variance, vdm_decoder_nll, vlb_term
from jaxdiff.rng import Stream, per_example_keys, stream
from jaxdiff.schedules import DiscreteSchedule, Schedule

LOSS_TYPES = ("mse", "vlb", "hybrid")


def mean_flat(x):
    """Mean over all but the first axis: ``[B, ...] -> [B]``."""
    return x.reshape(x.shape[0], -1).mean(-1)


# ---------------------------------------------------------------------------------------------------
# make_loss
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Options of :func:`make_loss` (see there)."""

    prediction: str = "eps"
    weighting: str = "uniform"
    loss_type: str = "mse"
    variance: str = "fixed_small"
    num_levels: int = 256
    num_steps: int | None = None
    t_min: float = 1e-5
    t_sampling: str = "uniform"
    min_snr_gamma: float = 5.0
    sigma_data: float = 0.5
    edm_p_mean: float = -1.2
    edm_p_std: float = 1.2
    logit_normal_loc: float = 0.0
    logit_normal_scale: float = 1.0
    mode_scale: float = 1.29
    vlb_weight: float = 1e-3
    p_uncond: float = 0.0
    null_cond: Any = None
    dequantize: bool = False

    def validate(self, schedule: Schedule):
        check_prediction(self.prediction)
        for field, value, allowed in (("weighting", self.weighting, WEIGHTINGS),
                                      ("loss_type", self.loss_type, LOSS_TYPES),
                                      ("variance", self.variance, VARIANCES),
                                      ("t_sampling", self.t_sampling, T_SAMPLINGS)):
            if value not in allowed:
                raise ValueError(f"unknown {field} {value!r}; allowed: {list(allowed)}")
        if self.num_levels < 2:
            raise ValueError(f"num_levels must be >= 2 (256 for uint8 data), got {self.num_levels}")
        if self.loss_type != "mse" and self.grid_steps(schedule) is None:
            raise ValueError(f"loss_type={self.loss_type!r} needs a discrete time grid: use a discrete "
                             "schedule or pass num_steps")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond must lie in [0, 1), got {self.p_uncond}")
        if self.t_sampling == "importance" and (self.weighting in ("uniform", "simple")
                                                 or self.grid_steps(schedule) is not None):
            raise ValueError("t_sampling='importance' samples continuous t with density proportional to the "
                             f"weighting; it needs a non-constant weighting (got {self.weighting!r}) and a "
                             "continuous schedule without num_steps")
        if self.logit_normal_scale <= 0:
            raise ValueError(f"logit_normal_scale must be > 0, got {self.logit_normal_scale}")
        if not -1.0 <= self.mode_scale <= 2.0 / (jnp.pi - 2.0):
            raise ValueError(f"mode_scale must lie in [-1, 2/(pi - 2)] = [-1, 1.752] (a monotone map), got "
                             f"{self.mode_scale}")
        if self.prediction == "velocity" and self.loss_type != "mse":
            raise ValueError("prediction 'velocity' trains with loss_type 'mse' (the flow-matching loss)")
        if self.variance == "learned_range" and self.loss_type == "mse":
            raise ValueError("variance='learned_range' is trained by loss_type 'hybrid' or 'vlb'")

    def grid_steps(self, schedule):
        if self.num_steps is not None:
            return self.num_steps
        return schedule.num_steps if isinstance(schedule, DiscreteSchedule) else None


def drop_condition(cond, keys, p: float, null_cond=None):
    """Replace each example's condition by ``null_cond`` (zeros if None) with probability ``p`` (condition
    dropout for classifier-free guidance, Ho & Salimans 2022); per-example keys ``[B]``."""
    if cond is None or p <= 0:
        return cond
    drop = jax.vmap(lambda k: jax.random.bernoulli(stream(k, Stream.COND_DROP), p))(keys)  # [B]

    def one(c, n):
        n = jnp.broadcast_to(jnp.asarray(n if n is not None else 0, c.dtype), c.shape)
        return jnp.where(drop.reshape((-1,) + (1,) * (c.ndim - 1)), n, c)

    if isinstance(cond, dict):
        nulls = null_cond if isinstance(null_cond, dict) else {k: null_cond for k in cond}
        return {k: one(v, nulls.get(k)) for k, v in cond.items()}
    return one(cond, null_cond)


def _snr(schedule, t):
    return jnp.exp(schedule.logsnr(t))


def _edm_weight(cfg, schedule, t):  # Karras et al. 2022: lambda(sigma) = (sigma^2 + sd^2)/(sigma sd)^2 on x0 error
    sig2 = 1.0 / _snr(schedule, t)
    return (sig2 + cfg.sigma_data**2) / cfg.sigma_data**2


# The eps-space weight w_eps(t) of each weighting, ``(cfg, schedule, t) -> [B]``; "uniform" has none (plain MSE
# of the model's output, not converted to eps space).
WEIGHTINGS = {
    "uniform": None,
    # L_simple (Ho et al. 2020) in any parameterization; = sigma^2-weighted DSM
    "simple": lambda cfg, schedule, t: jnp.ones_like(t),
    "snr": lambda cfg, schedule, t: 1.0 / _snr(schedule, t),  # x0-space MSE
    # Hang et al. 2023: x0-space weight min(SNR, gamma)
    "min_snr": lambda cfg, schedule, t: jnp.minimum(_snr(schedule, t), cfg.min_snr_gamma) / _snr(schedule, t),
    "edm": _edm_weight,
    # Song et al. 2021b: g(t)^2 on the score error = g^2/sigma^2 on eps error
    "likelihood": lambda cfg, schedule, t: schedule.sde(t)[1] / schedule.sigma(t) ** 2,
    # Kingma et al. 2021 eq. 17: -1/2 dlogsnr/dt, t ~ U(0, 1)
    "elbo": lambda cfg, schedule, t: -0.5 * schedule.dlogsnr_dt(t),
}


def eps_weight(cfg: LossConfig, schedule: Schedule, t):
    """``w_eps(t)``: the weight on the eps-space squared error for ``cfg.weighting`` (``WEIGHTINGS``)."""
    fn = WEIGHTINGS.get(cfg.weighting)
    if fn is None:
        raise ValueError(f"weighting {cfg.weighting!r} has no eps-space weight; allowed: "
                         f"{[k for k, v in WEIGHTINGS.items() if v is not None]}")
    return fn(cfg, schedule, t)


def output_factor(prediction: str, alpha, sigma, dalpha=None, dsigma=None):
    """``||d eps||^2 / ||d out||^2`` for a model output of kind ``prediction`` (at fixed x_t; ``velocity``:
    du = (alpha sigma' - sigma alpha') / alpha d eps)."""
    return {"eps": lambda: jnp.ones_like(alpha),
            "x0": lambda: (alpha / sigma) ** 2,
            "v": lambda: (alpha / (alpha**2 + sigma**2)) ** 2,
            "score": lambda: sigma**2,
            "velocity": lambda: (alpha / (alpha * dsigma - sigma * dalpha)) ** 2}[prediction]()


def logit_normal_times(u_normal, loc: float = 0.0, scale: float = 1.0):
    """Esser et al. 2024 (SD3) eq. 19: t = sigmoid(loc + scale n), n ~ N(0, 1): density
    pi(t) = 1 / (scale sqrt(2 pi)) 1 / (t (1 - t)) exp(-(logit(t) - loc)^2 / (2 scale^2))."""
    return jax.nn.sigmoid(loc + scale * u_normal)


def mode_times(u, scale: float = 1.29):
    """Esser et al. 2024 (SD3) eq. 20, mode sampling with heavy tails: t = 1 - u - s (cos^2(pi u / 2) - 1 + u)
    for u ~ U(0, 1); s = 0 is uniform, s > 0 favours mid-range t (monotone for -1 <= s <= 2 / (pi - 2))."""
    return 1.0 - u - scale * (jnp.cos(0.5 * jnp.pi * u) ** 2 - 1.0 + u)


class ImportanceSampler:
    """Sample t in [t_min, 1] with density p(t) proportional to the eps-space weight ``w(t)`` and return the
    importance weight w(t)/p(t), which is the constant integral of w (Song et al. 2021a, "Maximum
    likelihood training of score-based diffusion models", Sec. 5: the likelihood weighting g^2 has high
    variance under t ~ U; sampling t proportionally to it makes every example's weight equal).

    The density is tabulated once on ``n`` cells uniform in u = log t (w ~ 1/t near 0 for VP) and is exactly
    piecewise constant in u there, so the returned ratio w(t)/p(t) is exact and the loss stays unbiased
    whatever the table's resolution.
    """

    def __init__(self, weight_fn: Callable, t_min: float, n: int = 2048):
        import numpy as np

        if not 0 < t_min < 1:
            raise ValueError(f"importance sampling needs 0 < t_min < 1, got {t_min}")
        self.log_t0 = float(np.log(t_min))
        u = np.linspace(0.0, 1.0, n + 1)
        mid = 0.5 * (u[1:] + u[:-1])
        t_mid = np.exp(self.log_t0 * (1 - mid))
        dens_u = np.asarray(jax.device_get(weight_fn(jnp.asarray(t_mid, jnp.float32))), np.float64)
        dens_u = dens_u * t_mid * (-self.log_t0)  # w(t) dt/du
        if not np.all(np.isfinite(dens_u)) or np.any(dens_u <= 0):
            raise ValueError("importance sampling needs a positive, finite weighting on [t_min, 1]")
        mass = dens_u / n
        self.total = float(mass.sum())  # ~ integral of w over [t_min, 1]
        self.cdf = np.concatenate([[0.0], np.cumsum(mass) / self.total]).astype(np.float32)
        self.p_u = (dens_u / self.total).astype(np.float32)  # piecewise-constant density in u
        self.n = n

    def sample(self, r):
        """t for uniform draws ``r`` in [0, 1) (inverse CDF)."""
        cdf, n = jnp.asarray(self.cdf), self.n
        cell = jnp.clip(jnp.searchsorted(cdf, r, side="right") - 1, 0, n - 1)
        frac = (r - cdf[cell]) / jnp.maximum(cdf[cell + 1] - cdf[cell], 1e-30)
        return jnp.exp(self.log_t0 * (1 - (cell + jnp.clip(frac, 0.0, 1.0)) / n))

    def ratio(self, weight_fn, t):
        """The importance weight w(t) / p(t) (close to ``total``; exact, so the estimate is unbiased)."""
        u = 1 - jnp.log(t) / self.log_t0
        cell = jnp.clip(jnp.floor(u * self.n).astype(jnp.int32), 0, self.n - 1)
        p_t = jnp.asarray(self.p_u)[cell] / (t * (-self.log_t0))  # p(t) = p(u) du/dt
        return weight_fn(t) / p_t


def _normal(keys):
    return jax.vmap(lambda k: jax.random.normal(stream(k, Stream.TIME)))(keys)


def _uniform_times(cfg, schedule, keys, u, importance):
    T = cfg.grid_steps(schedule)
    if T is not None:  # step ~ U{1..T}, t = step / T, s = t - 1 / T
        step = jnp.minimum(jnp.floor(u * T).astype(jnp.int32) + 1, T)
        return step / T, (step - 1) / T, step
    return cfg.t_min + (1 - cfg.t_min) * u


def _edm_times(cfg, schedule, keys, u, importance):  # EDM's log-normal sigma mapped through t_from_logsnr
    log_sigma = cfg.edm_p_mean + cfg.edm_p_std * _normal(keys)
    return jnp.clip(schedule.t_from_logsnr(-2 * log_sigma), 0.0, 1.0)


# Each t-sampling ``(cfg, schedule, keys, u, importance) -> t [B]`` (or ``(t, s, step)`` on a grid of steps), with
# u ~ U[0, 1) per example from the TIME stream.
T_SAMPLINGS = {
    "uniform": _uniform_times,
    "edm_lognormal": _edm_times,
    "importance": lambda cfg, schedule, keys, u, importance: importance.sample(u),  # t from the weighting's density
    "logit_normal": lambda cfg, schedule, keys, u, importance: jnp.clip(
        logit_normal_times(_normal(keys), cfg.logit_normal_loc, cfg.logit_normal_scale), cfg.t_min, 1.0 - cfg.t_min),
    "mode": lambda cfg, schedule, keys, u, importance: jnp.clip(mode_times(u, cfg.mode_scale), cfg.t_min,
                                                                1.0 - cfg.t_min),
}


def sample_times(cfg: LossConfig, schedule: Schedule, keys, importance: ImportanceSampler | None = None):
    """Per-example ``(t, s, step)`` by ``cfg.t_sampling`` (``T_SAMPLINGS``): on a grid of T steps (uniform),
    step ~ U{1..T}, t = step/T, s = t - 1/T; else t ~ U(t_min, 1) (or EDM's log-normal sigma mapped through
    ``t_from_logsnr``, SD3's logit-normal or mode times, or t from the weighting's own density:
    ``importance``), with s = t and step = 0."""
    u = jax.vmap(lambda k: jax.random.uniform(stream(k, Stream.TIME)))(keys)
    out = T_SAMPLINGS[cfg.t_sampling](cfg, schedule, keys, u, importance)
    return out if isinstance(out, tuple) else (out, out, jnp.zeros_like(out, jnp.int32))


def masked_mean_flat(v, mask=None):
    """Per-example mean of ``v [B, ...]`` over the entries where ``mask`` (broadcast to ``v``) is 1; without a
    mask, over all entries. An example with an all-zero mask has mean 0."""
    if mask is None:
        return mean_flat(v)
    m = jnp.broadcast_to(jnp.asarray(mask, v.dtype), v.shape).reshape(v.shape[0], -1)
    return (m * v.reshape(v.shape[0], -1)).sum(-1) / jnp.maximum(m.sum(-1), 1.0)


def make_loss(apply_fn: Callable, schedule: Schedule, **options) -> Callable:
    """Build ``loss_fn(params, batch, key, *, noise=None, loss_mask=None) -> (loss, metrics)``.

    Args:
      apply_fn: ``apply_fn(params, x_t, t, cond, keys) -> out`` with ``out`` of the data's shape (or twice
        its channels when ``variance='learned_range'``); ``keys [B]`` are per-example dropout keys (the
        ``DROPOUT`` stream of each example's key), so dropout does not depend on how a batch is split.
      schedule: any schedule.
      **options: fields of :class:`LossConfig`, each described below.

    Options:

    - ``prediction``: what the network outputs, ``eps | x0 | v | score | velocity`` (flow matching's
      u = dx_t/dt; with ``weighting='uniform'`` the loss is the flow-matching velocity MSE).
    - ``weighting``: ``uniform`` (plain MSE of the output; L_simple for eps), ``simple`` (eps-MSE in any
      parameterization; sigma^2-weighted DSM), ``snr`` (x0-MSE), ``min_snr`` (Hang et al. 2023),
      ``edm`` (Karras et al. 2022), ``likelihood`` (g^2, Song et al. 2021b), ``elbo`` (VDM).
    - ``loss_type``: ``mse``; ``vlb`` (Monte-Carlo variational bound, bits/dim); ``hybrid`` (mse +
      vlb_weight * T * vlb term with stop-gradient on the mean; Nichol & Dhariwal 2021).
    - ``variance``: ``fixed_small | fixed_large | learned_range`` (reverse-process variance for the VLB).
    - ``num_levels``: the data's number of levels K (bits/dim and the decoder use it).
    - ``num_steps``: the VLB's time grid for continuous schedules (discrete ones use their T).
    - ``t_min``: smallest t for continuous-time MSE training.
    - ``t_sampling``: ``uniform``, ``edm_lognormal`` (ln sigma ~ N(P_mean, P_std^2)) or ``importance`` (t with
      density proportional to the weighting, each example weighted by its integral; Song et al.
      2021a's importance sampling for the likelihood weighting), ``logit_normal`` (t = sigmoid(loc +
      scale n), SD3's default for flows; ``logit_normal_loc``, ``logit_normal_scale``) or ``mode``
      (SD3's mode sampling, ``mode_scale``); both clipped to [t_min, 1 - t_min].
    - ``dequantize``: add uniform noise over each of the ``num_levels`` bins to x0 (train a continuous
      density for the probability-flow ODE likelihood of discrete data).
    - ``p_uncond, null_cond``: condition dropout for classifier-free guidance (the U-Net's null label is
      ``num_classes``).

    ``batch`` holds ``"x"`` ``[B, ...]`` in [-1, 1] and optionally ``"cond"``; ``key`` is one key or per-example
    keys ``[B]`` (training passes keys folded from each example's global index). ``noise`` (the data's shape)
    is the noise paired with each x in place of fresh draws (a coupling, as reflow trains on); ``loss_mask``
    (broadcast to the data) weights each entry of the MSE, which becomes the mean over the weighted entries (1
    where it counts: the unobserved entries of a conditional imputation model,
    :func:`jaxdiff.imputation.make_conditional_loss`).
    """
    cfg = LossConfig(**options)
    cfg.validate(schedule)
    T = cfg.grid_steps(schedule)
    importance = None
    if cfg.t_sampling == "importance":
        importance = ImportanceSampler(lambda t: eps_weight(cfg, schedule, t), cfg.t_min)

    def loss_fn(params, batch, key, *, noise=None, loss_mask=None):
        x0 = jnp.asarray(batch["x"])
        B, C = x0.shape[0], x0.shape[-1]
        D = x0[0].size
        keys = per_example_keys(key, B)
        if cfg.dequantize:  # uniform noise over each level's bin (width 2/(K-1)): a continuous density
            half = 1.0 / (cfg.num_levels - 1)
            x0 = x0 + jax.vmap(lambda k, x: jax.random.uniform(stream(k, Stream.DEQUANT), x.shape, x.dtype,
                                                                -half, half))(keys, x0)
        t, s, step = sample_times(cfg, schedule, keys, importance)
        if noise is not None:  # a coupling of noise and data (reflow's pairs)
            eps = jnp.asarray(noise, x0.dtype)
        else:
            eps = jax.vmap(lambda k, x: jax.random.normal(stream(k, Stream.NOISE), x.shape, x.dtype))(keys, x0)
        rates = rates_at(schedule, t, cfg.prediction)  # (alpha, sigma[, alpha', sigma'])
        x_t = q_sample(schedule, x0, t, eps)
        cond = drop_condition(batch.get("cond"), keys, cfg.p_uncond, cfg.null_cond)
        out = apply_fn(params, x_t, t, cond, jax.vmap(lambda k: stream(k, Stream.DROPOUT))(keys))
        pred, var_values = out[..., :C], (out[..., C:] if out.shape[-1] > C else None)
        metrics = {}
        loss = jnp.zeros((B,), x0.dtype)
        if cfg.loss_type in ("mse", "hybrid"):
            target = from_x0_eps(x0, eps, cfg.prediction, *rates)
            mse = masked_mean_flat((pred - target) ** 2, loss_mask)
            if cfg.weighting == "uniform":
                w = jnp.ones_like(t)
            elif importance is not None:  # w(t)/p(t) = the weighting's integral, times the output factor
                w = importance.ratio(lambda t: eps_weight(cfg, schedule, t), t) \
                    * output_factor(cfg.prediction, *rates)
            else:
                w = eps_weight(cfg, schedule, t) * output_factor(cfg.prediction, *rates)
            loss = loss + w * mse
            metrics["mse"] = mse
        if cfg.loss_type in ("vlb", "hybrid"):
            if loss_mask is not None:
                raise ValueError(f"loss_type={cfg.loss_type!r} is a bound on the whole example; a loss_mask "
                                 "(conditional imputation) needs loss_type='mse'")
            mean_pred = jax.lax.stop_gradient(pred) if cfg.loss_type == "hybrid" else pred
            x0_hat, _ = to_x0_eps(mean_pred, cfg.prediction, x_t, *rates)
            log_var = p_variance(schedule, s, t, var_values, cfg.variance)
            decoder = schedule.sigma(s) <= 0
            term = vlb_term(schedule, x0, x_t, x0_hat, s, t, num_levels=cfg.num_levels,
                            log_var=log_var, decoder=decoder) / (D * LN2)  # bits/dim
            if cfg.loss_type == "hybrid":
                loss = loss + cfg.vlb_weight * T * term
            else:
                eps0 = jax.vmap(lambda k, x: jax.random.normal(stream(k, Stream.PRIOR_NOISE), x.shape,
                                                               x.dtype))(keys, x0)
                extra = jnp.where(schedule.sigma(jnp.zeros_like(t)) > 0,
                                  vdm_decoder_nll(schedule, x0, eps0, cfg.num_levels), 0.0)
                loss = loss + T * term + (prior_kl(schedule, x0) + extra) / (D * LN2)
            metrics["vlb_term_bpd"] = term
        metrics["loss"] = loss
        metrics["t"] = t
        return loss.mean(), metrics

    return loss_fn
