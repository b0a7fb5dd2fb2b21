"""DPM-Solver++(2S) as a sampler (Lu et al. 2022b, Algorithm 1) and its ancestral form (k-diffusion's
``sample_dpmpp_2s_ancestral``): single steps of two model evaluations on data predictions."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.samplers.common import finish, nonzero, prepare, require_key, rho, scan_steps, step_key
from jaxdiff.samplers.dpmpp import dpmpp_2s_step


def sample_dpmpp_2s(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None,
                    prediction: str = "eps", r: float = 0.5, spacing: str = "logsnr", t_max: float = 1.0,
                    t_min=None, cond=None, return_trajectory: bool = False):
    """DPM-Solver++(2S) (Lu et al. 2022b, Algorithm 1): second-order single-step on data predictions, the
    extra evaluation at lambda_t + r h. NFE = 2 num_steps (- 1 when the grid ends at sigma = 0, whose step
    returns x0_hat)."""
    return sample_dpmpp_2s_ancestral(model_fn, schedule, x_T, key, num_steps=num_steps, ts=ts,
                                     prediction=prediction, r=r, eta=0.0, spacing=spacing, t_max=t_max, t_min=t_min,
                                     cond=cond, return_trajectory=return_trajectory)


def ancestral_split(schedule, t, s, eta):
    """k-diffusion's ``get_ancestral_step`` in EDM's rho = sigma / alpha: the step t -> s splits into a
    deterministic step to rho_down and fresh noise rho_up, rho_up = min(rho_s, eta rho_s sqrt(1 - rho_s^2 /
    rho_t^2)), rho_down^2 = rho_s^2 - rho_up^2 (eta = 1: DDPM's posterior variance, to first order).
    Returns (t_down, rho_up)."""
    r_t, r_s = rho(schedule, t), rho(schedule, s)
    r_up = jnp.minimum(r_s, eta * r_s * jnp.sqrt(jnp.maximum(1 - (r_s / r_t) ** 2, 0.0)))
    r_down = jnp.sqrt(jnp.maximum(r_s**2 - r_up**2, 0.0))
    t_down = jnp.where(r_down > 0, schedule.t_from_logsnr(-2 * jnp.log(jnp.maximum(r_down, 1e-30))), 0.0)
    return jnp.where(eta > 0, t_down, s), r_up


def sample_dpmpp_2s_ancestral(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None,
                              prediction: str = "eps", eta=1.0, s_noise=1.0, r: float = 0.5,
                              spacing: str = "logsnr", t_max: float = 1.0, t_min=None, cond=None,
                              return_trajectory: bool = False):
    """Ancestral DPM-Solver++(2S) (k-diffusion's ``sample_dpmpp_2s_ancestral``) on any schedule: a 2S step to
    rho_down, then noise rho_up (:func:`ancestral_split`), in y = x / alpha. eta = 0 is DPM-Solver++(2S).
    NFE = 2 num_steps (- 1 when the grid ends at sigma = 0)."""
    if nonzero(eta):
        require_key(key, "dpmpp_2s_ancestral", "with eta > 0 draws noise")
    den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction, spacing=spacing,
                      t_max=t_max, t_min=t_min, cond=cond)
    if not 0.0 < r < 1.0:
        raise ValueError(f"dpmpp_2s: the intermediate point r must lie in (0, 1), got {r}")
    eta = jnp.asarray(eta, x_T.dtype)

    def step(carry, t, s, i):
        (x,) = carry
        m0, _ = den(x, t)
        t_down, r_up = ancestral_split(schedule, t, s, eta)
        # The step to sigma = 0 (t_down = 0) returns x0_hat; its 2S branch is skipped (no second evaluation).
        x_down = jax.lax.cond(schedule.sigma(t_down) > 0,
                              lambda: dpmpp_2s_step(den, schedule, x, t, t_down, m0, r), lambda: m0)
        z = jax.random.normal(step_key(key, i), x.shape, x.dtype) if key is not None else jnp.zeros_like(x)
        y = x_down / schedule.alpha(t_down) + r_up * s_noise * z
        return (schedule.alpha(s) * y,)

    (x,), traj = scan_steps(step, (x_T,), ts, return_trajectory, den=den)
    return finish(x, traj, return_trajectory)
