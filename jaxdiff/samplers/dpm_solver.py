"""Single-step DPM-Solver of order 1, 2 or 3 (Lu et al. 2022, Algorithms 1 and 2 / eq. 3.7-3.9), in the
noise-prediction form with lambda = log(alpha / sigma): the linear part of the probability-flow ODE is
solved exactly, the nonlinear part by a Taylor expansion of eps in lambda."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.samplers.common import finish, lam, prepare, safe_where_zero, scan_steps


def dpm_solver_step(den, schedule, x, t, s, order: int):
    """One DPM-Solver-{1,2,3} step t -> s (r1 = 1/2 for order 2, (1/3, 2/3) for order 3).

    Returns the new x; on a step to sigma = 0 it returns x0_hat(x, t)."""
    lt, ls = lam(schedule, t), lam(schedule, s)
    final = jnp.isinf(ls)
    h = jnp.where(final, 1.0, ls - lt)
    s_ = jnp.where(final, t, s)
    at_s = lambda u: schedule.t_from_logsnr(2 * (lt + u * h))  # time at lambda_t + u h
    x0_t, e_t = den(x, t)

    def lin(r_time, r):  # x_r = (alpha_r / alpha_t) x - sigma_r expm1(r h) eps_t
        return schedule.alpha(r_time) / schedule.alpha(t) * x - schedule.sigma(r_time) * jnp.expm1(r * h) * e_t

    def second():
        r1 = 0.5
        s1 = at_s(r1)
        e_1 = den(lin(s1, r1), s1)[1]
        return lin(s_, 1.0) - schedule.sigma(s_) / (2 * r1) * jnp.expm1(h) * (e_1 - e_t)

    def third():
        r1, r2 = 1 / 3, 2 / 3
        s1, s2 = at_s(r1), at_s(r2)
        e_1 = den(lin(s1, r1), s1)[1]
        phi_22 = jnp.expm1(r2 * h) / (r2 * h) - 1
        u2 = lin(s2, r2) - schedule.sigma(s2) * (r2 / r1) * phi_22 * (e_1 - e_t)
        e_2 = den(u2, s2)[1]
        phi_2 = jnp.expm1(h) / h - 1
        return lin(s_, 1.0) - schedule.sigma(s_) / r2 * phi_2 * (e_2 - e_t)

    if order not in (1, 2, 3):
        raise ValueError(f"dpm_solver order must be 1, 2 or 3, got {order}")
    if order == 1:  # DDIM
        return safe_where_zero(schedule.sigma(s), x0_t, lin(s_, 1.0))
    # The step to sigma = 0 returns x0_hat and makes no intermediate evaluations.
    return jax.lax.cond(final, lambda: x0_t, second if order == 2 else third)


def sample_dpm_solver(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None,
                      prediction: str = "eps", order: int = 3, spacing: str = "logsnr", t_max: float = 1.0,
                      t_min=None, cond=None, return_trajectory: bool = False):
    """Single-step DPM-Solver of order 1, 2 or 3: NFE = order x num_steps (the step to sigma = 0, if any,
    costs 1). Order 1 is DDIM."""
    if order not in (1, 2, 3):
        raise ValueError(f"dpm_solver order must be 1, 2 or 3, got {order}")
    den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction, spacing=spacing,
                      t_max=t_max, t_min=t_min, cond=cond, finite_start="dpm_solver (noise-prediction form)")
    step = lambda c, t, s, i: (dpm_solver_step(den, schedule, c[0], t, s, order),)
    (x,), traj = scan_steps(step, (x_T,), ts, return_trajectory, den=den)
    return finish(x, traj, return_trajectory)
