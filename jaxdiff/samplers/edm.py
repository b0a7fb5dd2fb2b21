"""EDM's Euler and Heun samplers (Karras et al. 2022, Algorithm 2), with optional stochastic churn.

The probability-flow ODE on any schedule, written in EDM's variables x_hat = x / alpha and
sigma_hat = sigma / alpha, is dx_hat / dsigma_hat = (x_hat - D(x_hat; sigma_hat)) / sigma_hat (eq. 4 with
s = 1). Karras sigmas (rho = 7) by default; ``sigma_max`` caps the top level (EDM: 80).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.forward import bcast
from jaxdiff.samplers.common import check_finite_start, finish, nonzero, prepare, require_key, rho, scan_steps, step_key
from jaxdiff.samplers.timegrids import zero_noise_at_zero


def pf_ode_step(D, x, s, s_to, *, second_order: bool, t=None, t_to=None):
    """One step sigma -> sigma' of the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma in x_hat = x /
    alpha (Karras et al. 2022, Algorithm 1 / 2 without churn): Euler, or with ``second_order`` Heun's correction,
    which a scalar sigma' = 0 skips (no evaluation there). ``s``, ``s_to``: scalars or per-example ``[B]``;
    ``D`` is called at ``t`` / ``t_to`` (default: the sigmas themselves) for a denoiser that takes times."""
    t, t_to = (s if t is None else t), (s_to if t_to is None else t_to)
    b = lambda v: v if jnp.ndim(v) == 0 else bcast(v, x)  # noqa: E731  (a scalar stays one: the same program)
    d = (x - D(x, t)) / b(s)  # Euler step
    x_next = x + b(s_to - s) * d
    if not second_order:
        return x_next

    def correct(x_next):  # the 2nd order correction
        d2 = (x_next - D(x_next, t_to)) / b(s_to)
        return x + b(s_to - s) * 0.5 * (d + d2)

    return jax.lax.cond(s_to > 0, correct, lambda v: v, x_next) if jnp.ndim(s_to) == 0 else correct(x_next)


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
        xh_next = pf_ode_step(D, xh, s_hat, s_next, second_order=second_order, t=t_hat, t_to=t_next)
        return (schedule.alpha(t_next) * xh_next,)

    (x,), traj = scan_steps(step, (x_T,), ts, return_trajectory, den=den)
    return finish(x, traj, return_trajectory)


def _run(model_fn, schedule, x_T, key, second_order, num_steps, ts, step_to_zero, return_trajectory, grid_kw,
         churn):
    """EDM's grid with ``step_to_zero`` (Algorithm 1's t_N = 0): on a schedule whose sigma never reaches 0
    (EDM, VE), ``num_steps - 1`` steps on the grid down to sigma_min, then the Euler step to sigma = 0, which
    returns D(x; sigma_min) (one evaluation): EDM's 18 Heun steps are 35 NFE."""
    tail = step_to_zero and not zero_noise_at_zero(schedule)
    if tail and ts is None:
        if num_steps is None or num_steps < 2:
            raise ValueError(f"step_to_zero needs num_steps >= 2 (the last step is the one to sigma = 0), got "
                             f"{num_steps}")
        num_steps -= 1
    if nonzero(churn["S_churn"]):
        require_key(key, "EDM's Euler / Heun sampler", "with S_churn > 0 draws noise")
    den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, finite_start="EDM's Euler / Heun sampler",
                      **grid_kw)
    out = edm_sample(den, schedule, x_T, ts, key, second_order=second_order, return_trajectory=return_trajectory,
                     **churn)
    if not tail:
        return out
    x, traj = out if return_trajectory else (out, None)
    x0 = den(x, ts[-1])[0]  # x_N = x + (0 - sigma) (x - D) / sigma = D
    return finish(x0, None if traj is None else jnp.concatenate([traj, x0[None]]), return_trajectory)


def sample_euler(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None, prediction: str = "eps",
                 spacing: str = "karras", t_max: float = 1.0, t_min=None, cond=None, sigma_max=None,
                 S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"),
                 S_noise: float = 1.0, step_to_zero: bool = False, return_trajectory: bool = False):
    """Euler on the PF-ODE in (x_hat, sigma_hat) (Karras et al. 2022 Algorithm 2 without the correction),
    optional stochastic churn (S_churn, S_min, S_max, S_noise); ``step_to_zero``: the last step goes to
    sigma = 0 on schedules whose sigma stays above 0 (see :func:`_run`). NFE = num_steps."""
    return _run(model_fn, schedule, x_T, key, False, num_steps, ts, step_to_zero, return_trajectory,
                dict(prediction=prediction, spacing=spacing, t_max=t_max, t_min=t_min, cond=cond,
                     sigma_max=sigma_max), dict(S_churn=S_churn, S_min=S_min, S_max=S_max, S_noise=S_noise))


def sample_heun(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None, prediction: str = "eps",
                spacing: str = "karras", t_max: float = 1.0, t_min=None, cond=None, sigma_max=None,
                S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"),
                S_noise: float = 1.0, step_to_zero: bool = False, return_trajectory: bool = False):
    """EDM's Heun sampler (Karras et al. 2022 Algorithm 2): Euler step + trapezoidal correction; NFE =
    2 num_steps - 1 when the grid ends at sigma = 0 (VP schedules; EDM / VE with ``step_to_zero``: EDM's 18
    steps = 35 NFE), else 2 num_steps."""
    return _run(model_fn, schedule, x_T, key, True, num_steps, ts, step_to_zero, return_trajectory,
                dict(prediction=prediction, spacing=spacing, t_max=t_max, t_min=t_min, cond=cond,
                     sigma_max=sigma_max), dict(S_churn=S_churn, S_min=S_min, S_max=S_max, S_noise=S_noise))
