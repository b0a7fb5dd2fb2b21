"""The reverse process p(x_s | x_t) and its variational-bound terms (Ho et al. 2020; Nichol & Dhariwal 2021;
Kingma et al. 2021): the variance choices (fixed small / fixed large / learned range), the discretized
Gaussian decoder over K levels, the KL and decoder terms of the VLB. Used by the losses, the DDPM
sampler and the likelihood code.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import log_ndtr

from jaxdiff.forward import bcast, normal_kl, q_posterior_coefs, q_sample
from jaxdiff.schedules import Schedule

LN2 = 0.6931471805599453
VARIANCES = ("fixed_small", "fixed_large", "learned_range")


def sum_flat(x):
    return x.reshape(x.shape[0], -1).sum(-1)


# ---------------------------------------------------------------------------------------------------
# Discretized Gaussian decoder (DDPM eq. 13) over K levels
# ---------------------------------------------------------------------------------------------------


def _log_ndtr_diff(a, b):
    """log(Phi(b) - Phi(a)) for a < b, computed in the tail where it is accurate."""
    flip = a > 0  # Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    lo, hi = jnp.where(flip, -b, a), jnp.where(flip, -a, b)
    lhi, llo = log_ndtr(hi), log_ndtr(lo)
    return lhi + jnp.log(-jnp.expm1(jnp.minimum(llo - lhi, -1e-30)))


def discretized_gaussian_log_likelihood(x, mean, log_scale, num_levels: int):
    """log P(x) of data on ``num_levels`` evenly spaced values in [-1, 1] under N(mean, e^{2 log_scale})
    integrated over each value's bin (width 2/(K-1)); the first and last bins extend to -inf / +inf, so
    the K probabilities sum to 1 (Ho et al. 2020 eq. 13 with K levels instead of 256).

    Returns an elementwise log-probability (nats), same shape as ``x``.
    """
    if num_levels < 2:
        raise ValueError(f"num_levels must be >= 2, got {num_levels}")
    half = 1.0 / (num_levels - 1)
    inv_s = jnp.exp(-log_scale)
    lo = (x - half - mean) * inv_s
    hi = (x + half - mean) * inv_s
    log_mid = _log_ndtr_diff(lo, hi)
    log_left = log_ndtr(hi)  # x at -1: P(X < x + half)
    log_right = log_ndtr(-lo)  # x at +1: P(X > x - half)
    return jnp.where(x < -1 + half, log_left, jnp.where(x > 1 - half, log_right, log_mid))


# ---------------------------------------------------------------------------------------------------
# The reverse-process Gaussian p(x_s | x_t) and the VLB terms
# ---------------------------------------------------------------------------------------------------


def p_variance(schedule: Schedule, s, t, var_values=None, variance: str = "fixed_small"):
    """log of the variance of p(x_s | x_t): ``fixed_small`` = posterior beta_tilde (clipped where it is 0
    to the next step's value, as improved-diffusion does), ``fixed_large`` = beta = sigma^2_{t|s},
    ``learned_range`` = exp(frac log beta + (1 - frac) log beta_tilde), frac = (v + 1)/2 (Nichol & Dhariwal
    2021 eq. 15) from ``var_values`` in [-1, 1]. Returns a log-variance broadcastable to the data."""
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; allowed: {list(VARIANCES)}")
    _, _, small = q_posterior_coefs(schedule, s, t)
    _, _, small_next = q_posterior_coefs(schedule, t, jnp.minimum(2 * t - s, 1.0))
    small = jnp.where(small > 0, small, small_next)
    large = schedule.transition(s, t)[1]
    if variance == "fixed_small":
        return jnp.log(small)
    if variance == "fixed_large":
        return jnp.log(large)
    if var_values is None:
        raise ValueError("variance='learned_range' needs the model's extra variance channels")
    frac = (var_values + 1) / 2
    ref = var_values
    return frac * bcast(jnp.log(large), ref) + (1 - frac) * bcast(jnp.log(small), ref)


def vlb_term(schedule: Schedule, x0, x_t, x0_hat, s, t, *, num_levels: int,
             log_var=None, decoder=None):
    """One term of the variational bound (nats per example, summed over dims).

    KL(q(x_s|x_t,x0) || p(x_s|x_t)) with p's mean from ``x0_hat`` (DDPM eq. 5); where ``decoder`` is True
    (the first step when sigma(s) = 0) it is instead the discretized-Gaussian NLL -log p(x0 | x_t) of
    DDPM eq. 13, with mean mu(x_t, x0_hat) and the same variance.

    Args:
      x0, x_t, x0_hat: ``[B, ...]``; s, t: ``[B]``; log_var: log-variance of p (``[B]`` or ``[B, ...]``);
      decoder: ``[B]`` bool.
    """
    c_x0, c_xt, var_q = q_posterior_coefs(schedule, s, t)
    mean_q = bcast(c_x0, x0) * x0 + bcast(c_xt, x0) * x_t
    mean_p = bcast(c_x0, x0) * x0_hat + bcast(c_xt, x0) * x_t
    log_var_p = bcast(log_var, x0) if jnp.ndim(log_var) <= 1 else log_var
    safe_var_q = jnp.where(var_q > 0, var_q, 1.0)
    kl = sum_flat(normal_kl(mean_q, bcast(jnp.log(safe_var_q), x0), mean_p, log_var_p))
    nll = -sum_flat(discretized_gaussian_log_likelihood(
        x0, mean_p / bcast(schedule.alpha(s), x0), 0.5 * log_var_p - bcast(jnp.log(schedule.alpha(s)), x0),
        num_levels))
    return jnp.where(decoder, nll, kl)


def vdm_decoder_nll(schedule: Schedule, x0, eps0, num_levels: int):
    """-log p(x0 | z_0) with z_0 = alpha_0 x0 + sigma_0 eps0 and p = discretized N(z_0/alpha_0,
    (sigma_0/alpha_0)^2) (Kingma et al. 2021 decoder), for schedules with sigma(0) > 0. ``[B]`` nats."""
    zero = jnp.zeros((x0.shape[0],), x0.dtype)
    a0, s0 = schedule.alpha(zero), schedule.sigma(zero)
    z0 = q_sample(schedule, x0, zero, eps0)
    mean = z0 / bcast(a0, x0)
    log_scale = bcast(jnp.log(s0) - jnp.log(a0), x0)
    return -sum_flat(discretized_gaussian_log_likelihood(x0, mean, log_scale, num_levels))


def p_mean(schedule: Schedule, x_t, x0_hat, s, t):
    """The mean of p(x_s | x_t): the posterior mean mu(x_t, x0_hat) of q(x_s | x_t, x0) (DDPM eq. 7)."""
    c_x0, c_xt, _ = q_posterior_coefs(schedule, s, t)
    return bcast(c_x0, x_t) * x0_hat + bcast(c_xt, x_t) * x_t
