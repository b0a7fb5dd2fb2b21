"""UniPC (Zhao et al. 2023): the unified predictor UniP-p and corrector UniC-p on data predictions, with
B(h) = e^h - 1 ("bh2"). The corrector refines x_t with the model evaluation the next step makes anyway,
so it costs no extra NFE and raises the order by one. Orders that change with the step (warm-up) are
chosen by ``lax.switch``: each step runs one predictor and one corrector formula.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxdiff.samplers.common import check_order, finish, lam, prepare, safe_where_zero, scan_steps, step_order

VARIANTS = ("bh1", "bh2")


def _unipc_b(hh, order: int, variant: str = "bh2"):
    """b_k = h_phi_k * k! / B(h), k = 1..order (Zhao et al. 2023 eq. 8 with h -> -h): B(h) = h ("bh1") or
    e^h - 1 ("bh2")."""
    h_phi_1 = jnp.expm1(hh)
    B_h = hh if variant == "bh1" else h_phi_1
    h_phi_k = h_phi_1 / hh - 1.0
    b, fact = [], 1.0
    for k in range(1, order + 1):
        b.append(h_phi_k * fact / B_h)
        fact *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    return b, h_phi_1, B_h


def _solve_rhos(rks, b):
    """Solve R rho = b with R[k, j] = rks[j]^k for the 1-3 unknowns UniPC needs (closed forms)."""
    n = len(rks)
    if n == 1:
        return [b[0] / 1.0]
    if n == 2:
        r0, r1 = rks
        det = r1 - r0
        return [(b[0] * r1 - b[1]) / det, (b[1] - b[0] * r0) / det]
    R = jnp.stack([jnp.stack([r**k for r in rks]) for k in range(n)])
    return list(jnp.linalg.solve(R, jnp.stack(b)))


def unipc_update(schedule, x, s0, t, ms, lams, order: int, model_t=None, variant: str = "bh2"):
    """UniP (``model_t`` None) or UniC (``model_t`` = data prediction at t) update s0 -> t of order
    ``order`` (static) with history ``ms = (m_s0, m_prev1, m_prev2)`` at ``lams`` (Zhao et al. 2023,
    Algorithms 2 and 3, as in the reference implementation)."""
    m0 = ms[0]
    lt = lam(schedule, t)
    h = lt - lams[0]
    rks, D1s = [], []
    for k in range(1, order):
        rk = (lams[k] - lams[0]) / h
        rks.append(rk)
        D1s.append((ms[k] - m0) / rk)
    rks.append(jnp.ones_like(h))
    b, h_phi_1, B_h = _unipc_b(-h, order, variant)
    x_lin = schedule.sigma(t) / schedule.sigma(s0) * x - schedule.alpha(t) * h_phi_1 * m0
    if model_t is None:  # predictor
        if order == 1:
            return x_lin
        rhos = [jnp.asarray(0.5, x.dtype)] if order == 2 else _solve_rhos(rks[:-1], b[:-1])
        res = sum(r * d for r, d in zip(rhos, D1s))
        return x_lin - schedule.alpha(t) * B_h * res
    rhos = [jnp.asarray(0.5, x.dtype)] if order == 1 else _solve_rhos(rks, b)
    res = sum(r * d for r, d in zip(rhos[:-1], D1s)) + rhos[-1] * (model_t - m0)
    return x_lin - schedule.alpha(t) * B_h * res


def unipc_sample(den, schedule, x_T, ts, order: int, corrector: bool = True, *, variant: str = "bh2",
                 lower_order_final: bool = False, final_corrector: bool = False, return_trajectory=False):
    """UniP-``order`` (+ UniC) over the grid ``ts``; step i predicts with order
    :func:`~jaxdiff.samplers.common.step_order` and corrects with the previous step's order. With
    ``final_corrector`` one more evaluation at the last time corrects the last step too (unless it ends at
    sigma = 0, where the result is x0_hat)."""
    z, zero = jnp.zeros_like(x_T), jnp.zeros((), x_T.dtype)
    orders = range(1, order + 1)
    n = ts.shape[0] - 1
    upd = functools.partial(unipc_update, schedule, variant=variant)

    def step(carry, t, s, i):
        x, x_prev, t_prev, m1, m2, m3, l1, l2, l3 = carry
        m0, _ = den(x, t)
        l0 = lam(schedule, t)
        if corrector:  # UniC: correct x_t with the new evaluation (no correction before the first step)
            correct = [lambda: x] + [lambda k=k: upd(x_prev, t_prev, t, (m1, m2, m3), (l1, l2, l3), k, model_t=m0)
                                     for k in orders]
            x = jax.lax.switch(jnp.where(i > 0, step_order(order, i - 1, n, lower_order_final), 0), correct)
        s_safe = jnp.where(jnp.isinf(lam(schedule, s)), t, s)
        predict = [lambda k=k: upd(x, t, s_safe, (m0, m1, m2), (l0, l1, l2), k) for k in orders]
        k = step_order(order, i, n, lower_order_final)
        xp = safe_where_zero(schedule.sigma(s), m0, jax.lax.switch(k - 1, predict))
        return (xp, x, t, m0, m1, m2, l0, l1, l2)

    init = (x_T, x_T, ts[0], z, z, z, zero - 1, zero - 2, zero - 3)
    (x, x_prev, t_prev, m1, m2, m3, l1, l2, l3), traj = scan_steps(step, init, ts, return_trajectory, den=den)
    if final_corrector and corrector:
        t_last = ts[-1]
        k_last = step_order(order, n - 1, n, lower_order_final)

        def correct_last(x):
            m_last, _ = den(x, t_last)
            return jax.lax.switch(k_last - 1, [lambda k=k: upd(x_prev, t_prev, t_last, (m1, m2, m3), (l1, l2, l3),
                                                                k, model_t=m_last) for k in orders])

        x = jax.lax.cond(schedule.sigma(t_last) > 0, correct_last, lambda x: x, x)
        if return_trajectory:
            traj = traj.at[-1].set(x)
    return finish(x, traj, return_trajectory)


def sample_unipc(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None, prediction: str = "eps",
                 order: int = 2, corrector: bool = True, variant: str = "bh2", lower_order_final: bool = True,
                 final_corrector: bool = False, spacing: str = "logsnr", t_max: float = 1.0, t_min=None, cond=None,
                 return_trajectory: bool = False):
    """UniPC (Zhao et al. 2023): UniP-``order`` predictor + UniC corrector (order + 1 accurate), multistep
    on data predictions, warmed up with lower orders.

    ``variant``: B(h) = h ("bh1", for few steps on unconditional models in the paper) or e^h - 1 ("bh2",
    diffusers' default). ``lower_order_final``: on grids of fewer than 10 steps the last steps use at most
    the steps left as their order (diffusers' default, there below 15 steps). ``final_corrector``: correct
    the last step as well (one more evaluation; nothing to correct when the grid ends at sigma = 0).
    NFE = num_steps (+1 with ``final_corrector`` on a grid ending above sigma = 0)."""
    if variant not in VARIANTS:
        raise ValueError(f"unipc variant must be one of {list(VARIANTS)}, got {variant!r}")
    den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction, spacing=spacing,
                      t_max=t_max, t_min=t_min, cond=cond)
    check_order("unipc", order, (1, 2, 3), ts.shape[0] - 1)
    return unipc_sample(den, schedule, x_T, ts, order, corrector, variant=variant,
                        lower_order_final=lower_order_final, final_corrector=final_corrector,
                        return_trajectory=return_trajectory)
