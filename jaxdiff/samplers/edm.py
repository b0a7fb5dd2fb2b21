"""EDM's Euler and Heun samplers (Karras et al. 2022, Algorithm 2), with optional stochastic churn.

The probability-flow ODE on any schedule, written in EDM's variables x_hat = x / alpha and
sigma_hat = sigma / alpha, is dx_hat / dsigma_hat = (x_hat - D(x_hat; sigma_hat)) / sigma_hat (eq. 4 with
s = 1). Karras sigmas (rho = 7) by default; ``sigma_max`` caps the top level (EDM: 80).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.forward import bcast
from jaxdiff.samplers.common import check_finite_start, finish, prepare, rho, scan_steps, step_key


def edm_sample(den, schedule, x_T, ts, key, *, second_order: bool, S_churn=0.0, S_min=0.0,
               S_max=float("inf"), S_noise=1.0, return_trajectory=False):
    """Algorithm 2 over the grid ``ts`` with the denoiser ``den``."""
    num_steps = ts.shape[0] - 1
    check_finite_start(schedule, ts, "EDM's Euler / Heun sampler")
    D = lambda xh, t: den(bcast(schedule.alpha(t), xh) * xh, t)[0]  # denoiser on x_hat

    def step(carry, t_cur, t_next, i):
        (x,) = carry
        s_cur, s_next = rho(schedule, t_cur), rho(schedule, t_next)
        xh = x / schedule.alpha(t_cur)
        if S_churn > 0:  # Increase noise temporarily.
            gamma = jnp.where((s_cur >= S_min) & (s_cur <= S_max), min(S_churn / num_steps, 2**0.5 - 1), 0.0)
            t_hat = jnp.clip(schedule.t_from_logsnr(-2 * jnp.log(s_cur * (1 + gamma))), t_cur, 1.0)
            s_hat = rho(schedule, t_hat)
            z = jax.random.normal(step_key(key, i), x.shape, x.dtype)
            xh = xh + jnp.sqrt(jnp.maximum(s_hat**2 - s_cur**2, 0.0)) * S_noise * z
        else:
            t_hat, s_hat = t_cur, s_cur
        d = (xh - D(xh, t_hat)) / s_hat  # Euler step.
        xh_next = xh + (s_next - s_hat) * d
        if second_order:  # Apply the 2nd order correction (not on the step to sigma = 0: no evaluation there).
            def correct(xh_next):
                d2 = (xh_next - D(xh_next, t_next)) / s_next
                return xh + (s_next - s_hat) * 0.5 * (d + d2)

            xh_next = jax.lax.cond(s_next > 0, correct, lambda v: v, xh_next)
        return (schedule.alpha(t_next) * xh_next,)

    (x,), traj = scan_steps(step, (x_T,), ts, return_trajectory)
    return finish(x, traj, return_trajectory)


def sample_euler(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None, prediction: str = "eps",
                 spacing: str = "karras", t_max: float = 1.0, t_min=None, cond=None, sigma_max=None,
                 S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"),
                 S_noise: float = 1.0, return_trajectory: bool = False):
    """Euler on the PF-ODE in (x_hat, sigma_hat) (Karras et al. 2022 Algorithm 2 without the correction),
    optional stochastic churn (S_churn, S_min, S_max, S_noise). NFE = num_steps."""
    den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction, spacing=spacing,
                      t_max=t_max, t_min=t_min, cond=cond, sigma_max=sigma_max)
    return edm_sample(den, schedule, x_T, ts, key, second_order=False, S_churn=S_churn, S_min=S_min,
                      S_max=S_max, S_noise=S_noise, return_trajectory=return_trajectory)


def sample_heun(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None, prediction: str = "eps",
                spacing: str = "karras", t_max: float = 1.0, t_min=None, cond=None, sigma_max=None,
                S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"),
                S_noise: float = 1.0, return_trajectory: bool = False):
    """EDM's Heun sampler (Karras et al. 2022 Algorithm 2): Euler step + trapezoidal correction; NFE =
    2 num_steps - 1 when the grid ends at sigma = 0 (EDM: 18 steps = 35 NFE), else 2 num_steps."""
    den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction, spacing=spacing,
                      t_max=t_max, t_min=t_min, cond=cond, sigma_max=sigma_max)
    return edm_sample(den, schedule, x_T, ts, key, second_order=True, S_churn=S_churn, S_min=S_min,
                      S_max=S_max, S_noise=S_noise, return_trajectory=return_trajectory)
