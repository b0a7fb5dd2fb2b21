"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) and DDIM (Song et al. 2021a, eq. 12)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.forward import bcast, q_posterior_coefs
from jaxdiff.guidance import classifier_log_prob_grad
from jaxdiff.parameterization import to_x0_eps_at
from jaxdiff.reverse import p_mean, p_variance
from jaxdiff.samplers.common import finish, nonzero, prepare, require_key, scan_steps, step_key


def ddim_step(schedule, x, x0, eps, t, s, eta, noise):
    """One DDIM step t -> s < t (Song et al. 2021a eq. 12, general schedule):

    x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z,  c^2 = eta^2 Var[q(x_s | x_t, x0)]
    (c = eta * sigma_t(eta) of eq. 16); eta = 0 is the deterministic DDIM, eta = 1 is DDPM ancestral
    sampling with the posterior variance beta_tilde.
    """
    _, _, var_post = q_posterior_coefs(schedule, s, t)
    c2 = eta**2 * var_post
    alpha_s, sigma_s = schedule.alpha(s), schedule.sigma(s)
    dir_coef = jnp.sqrt(jnp.maximum(sigma_s**2 - c2, 0.0))
    return bcast(alpha_s, x) * x0 + bcast(dir_coef, x) * eps + bcast(jnp.sqrt(c2), x) * noise


def sample_ddim(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None, prediction: str = "eps",
                eta=0.0, spacing: str = "uniform", t_max: float = 1.0, t_min=None, cond=None,
                return_trajectory: bool = False):
    """DDIM (Song et al. 2021a): :func:`ddim_step` over the grid (``num_steps`` respaced steps, or ``ts``).

    Args:
      model_fn: ``model_fn(x, t [B], cond) -> prediction``.
      schedule: any schedule; a discrete one is respaced to ``num_steps`` integer steps.
      x_T: ``[B, ...]`` initial noise (scaled by sigma(t_max) / prior_std by the caller).
      key: PRNG key (used when eta > 0; None means no noise, i.e. eta is ignored).
      eta: 0 deterministic ... 1 ancestral (a traced value; changing it does not recompile).
      spacing: ``uniform | quadratic | trailing | leading | logsnr | karras``.
    Clip x0 (Ho et al. 2020) with :func:`jaxdiff.parameterization.clip_x0_model_fn` (any sampler).
    """
    if nonzero(eta):
        require_key(key, "ddim", "with eta > 0 draws noise")
    den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction, spacing=spacing,
                      t_max=t_max, t_min=t_min, cond=cond)
    eta = jnp.asarray(eta, x_T.dtype)

    def step(carry, t, s, i):
        (x,) = carry
        x0, eps = den(x, t)
        noise = (jnp.zeros_like(x) if key is None  # deterministic DDIM needs no key
                 else jax.random.normal(step_key(key, i), x.shape, x.dtype))
        return (ddim_step(schedule, x, x0, eps, t, s, eta, noise),)

    (x,), traj = scan_steps(step, (x_T,), ts, return_trajectory, den=den)
    return finish(x, traj, return_trajectory)


def sample_ddpm(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None, prediction: str = "eps",
                variance: str = "fixed_small", spacing: str = "uniform", t_max: float = 1.0, t_min=None,
                cond=None, classifier_fn=None, classifier_scale=1.0, return_trajectory: bool = False):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on any schedule and grid:
    x_s = mu(x_t, x0_hat) + sqrt(var) z with mu the posterior mean (eq. 7) and var fixed small
    (beta_tilde), fixed large (beta) or learned (Nichol & Dhariwal 2021: ``model_fn`` then outputs 2C
    channels, the last C interpolating log beta and log beta_tilde). No noise on the step to sigma = 0.

    ``num_steps`` defaults to the discrete schedule's T (respacing when smaller, as improved-diffusion).
    With ``classifier_fn(x_t, t) -> logits`` (labels from ``cond``), the mean is shifted by
    ``classifier_scale * Sigma * grad_x log p(y | x_t, t)`` (Dhariwal & Nichol 2021, Algorithm 1; the
    gradient is :func:`jaxdiff.guidance.classifier_log_prob_grad`).
    """
    if num_steps is None and ts is None:
        num_steps = getattr(schedule, "num_steps", None)
        if num_steps is None:
            raise ValueError("sample_ddpm: num_steps (or ts) is required for a continuous schedule")
    require_key(key, "ddpm")
    _, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction, spacing=spacing,
                    t_max=t_max, t_min=t_min, cond=cond, stateless="ddpm")
    C = x_T.shape[-1]

    def step(carry, t, s, i):
        (x,) = carry
        tb = jnp.full((x.shape[0],), t, x.dtype)
        out = model_fn(x, tb, cond)  # the variance channels are read beside the prediction
        x0, _ = to_x0_eps_at(out[..., :C], prediction, x, schedule, tb)
        mean = p_mean(schedule, x, x0, s, t)
        log_var = p_variance(schedule, jnp.full_like(tb, s), tb, out[..., C:] if out.shape[-1] > C else None,
                             variance)
        log_var = bcast(log_var, x) if jnp.ndim(log_var) <= 1 else log_var
        std = jnp.where(schedule.sigma(s) > 0, jnp.exp(0.5 * log_var), 0.0)
        if classifier_fn is not None:  # Algorithm 1: mu + s * Sigma * grad log p(y | x_t)
            mean = mean + classifier_scale * std**2 * classifier_log_prob_grad(classifier_fn, x, tb, cond)
        return (mean + std * jax.random.normal(step_key(key, i), x.shape, x.dtype),)

    (x,), traj = scan_steps(step, (x_T,), ts, return_trajectory)
    return finish(x, traj, return_trajectory)
