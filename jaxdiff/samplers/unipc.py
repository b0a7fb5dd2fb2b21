"""UniPC (Zhao et al. 2023): the unified predictor UniP-p and corrector UniC-p on data predictions, with
B(h) = e^h - 1 ("bh2"). The corrector refines x_t with the model evaluation the next step makes anyway,
so it costs no extra NFE and raises the order by one. Orders that change with the step (warm-up) are
chosen by ``lax.switch``: each step runs one predictor and one corrector formula.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.samplers.common import finish, lam, prepare, safe_where_zero, scan_steps


def _unipc_b(hh, order: int):
    """b_k = h_phi_k * k! / B(h), k = 1..order (Zhao et al. 2023 eq. 8, B(h) = e^{h} - 1 with h -> -h)."""
    h_phi_1 = jnp.expm1(hh)
    B_h = h_phi_1
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


def unipc_update(schedule, x, s0, t, ms, lams, order: int, model_t=None):
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
    b, h_phi_1, B_h = _unipc_b(-h, order)
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


def unipc_sample(den, schedule, x_T, ts, order: int, corrector: bool = True, return_trajectory=False):
    """UniP-``order`` (+ UniC) over the grid ``ts``; step i predicts with order min(order, i + 1) and
    corrects with the previous step's order."""
    z, zero = jnp.zeros_like(x_T), jnp.zeros((), x_T.dtype)
    orders = range(1, order + 1)

    def step(carry, t, s, i):
        x, x_prev, t_prev, m1, m2, m3, l1, l2, l3 = carry
        m0, _ = den(x, t)
        l0 = lam(schedule, t)
        if corrector:  # UniC: correct x_t with the new evaluation (no correction before the first step)
            correct = [lambda: x] + [lambda k=k: unipc_update(schedule, x_prev, t_prev, t, (m1, m2, m3),
                                                               (l1, l2, l3), k, model_t=m0) for k in orders]
            x = jax.lax.switch(jnp.minimum(order, i), correct)
        s_safe = jnp.where(jnp.isinf(lam(schedule, s)), t, s)
        predict = [lambda k=k: unipc_update(schedule, x, t, s_safe, (m0, m1, m2), (l0, l1, l2), k) for k in orders]
        xp = safe_where_zero(schedule.sigma(s), m0, jax.lax.switch(jnp.minimum(order, i + 1) - 1, predict))
        return (xp, x, t, m0, m1, m2, l0, l1, l2)

    init = (x_T, x_T, ts[0], z, z, z, zero - 1, zero - 2, zero - 3)
    (x, *_), traj = scan_steps(step, init, ts, return_trajectory)
    return finish(x, traj, return_trajectory)


def sample_unipc(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None, prediction: str = "eps",
                 order: int = 2, corrector: bool = True, spacing: str = "logsnr", t_max: float = 1.0,
                 t_min=None, cond=None, return_trajectory: bool = False):
    """UniPC (Zhao et al. 2023): UniP-``order`` predictor + UniC corrector (order + 1 accurate), multistep
    on data predictions, warmed up with lower orders. NFE = num_steps."""
    if order not in (1, 2, 3):
        raise ValueError(f"unipc order must be 1, 2 or 3, got {order}")
    den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction, spacing=spacing,
                      t_max=t_max, t_min=t_min, cond=cond)
    return unipc_sample(den, schedule, x_T, ts, order, corrector, return_trajectory)
