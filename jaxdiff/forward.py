"""The forward process: q(x_t | x0), the posterior q(x_s | x_t, x0) and the prior term.

Ho et al. 2020 (DDPM) eq. 4, 6-7 in the general form of Kingma et al. 2021 (VDM) eq. 3-4 and
appendix A, valid for any schedule (variance preserving or not) and any s < t.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiff.schedules import Schedule


def bcast(v, x):
    """Broadcast a per-example value ``[B]`` (or scalar) against ``x`` of shape ``[B, ...]``."""
    v = jnp.asarray(v)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def check_shapes(x0, other, t=None, names=("x0", "eps")):
    """ValueError (not an assert) when two arrays differ in shape or t is neither scalar nor [B]."""
    if x0.shape != other.shape:
        raise ValueError(f"{names[0]} has shape {x0.shape} but {names[1]} has shape {other.shape}; "
                         "they must be equal")
    if t is None:
        return
    if jnp.ndim(t) > 1 or (jnp.ndim(t) == 1 and jnp.shape(t)[0] != x0.shape[0]):
        raise ValueError(f"t must be a scalar or have shape [batch] = ({x0.shape[0]},), got {jnp.shape(t)}")


def q_sample(schedule: Schedule, x0, t, eps):
    """Sample q(x_t | x0) = N(alpha_t x0, sigma_t^2 I) by reparameterization (DDPM eq. 4).

    Args:
      schedule: any schedule.
      x0: clean data ``[B, ...]``.
      t: times ``[B]`` (or a scalar) in [0, 1].
      eps: standard normal noise, same shape as ``x0``.
    Returns:
      ``x_t = alpha_t * x0 + sigma_t * eps``.
    """
    check_shapes(x0, eps, t)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    return bcast(alpha, x0) * x0 + bcast(sigma, x0) * eps


def q_posterior_coefs(schedule: Schedule, s, t):
    """Coefficients of q(x_s | x_t, x0) = N(c_x0 * x0 + c_xt * x_t, var), for s < t.

    VDM eq. (A.?): mu = alpha_{t|s} sigma_s^2/sigma_t^2 x_t + alpha_s sigma^2_{t|s}/sigma_t^2 x0 and
    var = sigma^2_{t|s} sigma_s^2 / sigma_t^2; with s = (i-1)/T, t = i/T on a DDPM table these are DDPM
    eq. 7 (beta_tilde_t = (1 - alpha_bar_{t-1})/(1 - alpha_bar_t) beta_t).

    Returns:
      ``(c_x0, c_xt, var)``, each with the shape of ``s``/``t``.
    """
    alpha_ts, var_ts = schedule.transition(s, t)
    alpha_s = schedule.alpha(s)
    sigma2_s, sigma2_t = schedule.sigma(s) ** 2, schedule.sigma(t) ** 2
    c_x0 = alpha_s * var_ts / sigma2_t
    c_xt = alpha_ts * sigma2_s / sigma2_t
    var = var_ts * sigma2_s / sigma2_t
    return c_x0, c_xt, var


def q_posterior(schedule: Schedule, x0, x_t, s, t):
    """Mean and variance of q(x_s | x_t, x0) (DDPM eq. 6-7, general s < t).

    Args:
      x0, x_t: ``[B, ...]``.  s, t: ``[B]`` or scalars with s < t.
    Returns:
      ``(mean [B, ...], var [B] or scalar)``.
    """
    check_shapes(x0, x_t, None, ("x0", "x_t"))
    c_x0, c_xt, var = q_posterior_coefs(schedule, s, t)
    return bcast(c_x0, x0) * x0 + bcast(c_xt, x_t) * x_t, var


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * jnp.exp(-logvar2) - 1.0)


def prior_kl(schedule: Schedule, x0):
    """KL(q(x_1 | x0) || p(x_1)) per example, summed over dims (nats); p(x_1) = N(0, prior_std^2 I).

    Args:
      x0: ``[B, ...]``.
    Returns:
      ``[B]`` nats.
    """
    one = jnp.ones((x0.shape[0],), x0.dtype)
    mean = bcast(schedule.alpha(one), x0) * x0
    logvar = bcast(schedule.log_sigma2(one), x0)
    kl = normal_kl(mean, logvar, 0.0, 2 * jnp.log(schedule.prior_std()).astype(x0.dtype))
    return kl.reshape(x0.shape[0], -1).sum(-1)
