"""Linear multistep solvers on noise predictions: iPNDM, DEIS (tAB) and k-diffusion's LMS.

In EDM's variables y = x / alpha and rho = sigma / alpha the probability-flow ODE of any schedule is
dy / drho = eps(x, t) (Song et al. 2021a eq. 14; Karras et al. 2022 eq. 4): no linear term, so an
explicit multistep method is y_s = y_t + sum_j c_j eps_{t_j} over the current and past noise predictions.
The three solvers differ only in the weights c_j:

* iPNDM (Zhang & Chen 2023, "improved PNDM"; zju-pi/diff-sampler's default few-step solver): the
  constant-step Adams-Bashforth weights times the step in rho, c = (rho_s - rho_t) * AB_k, orders 1-4;
* LMS (k-diffusion's ``sample_lms``): variable-step Adams-Bashforth in rho, c_j = int_{rho_t}^{rho_s}
  l_j(r) dr with the Lagrange basis l_j through the past rho_j (exact Gauss-Legendre quadrature);
* DEIS tAB (Zhang & Chen 2023, eq. 13-15): the exponential integrator with eps extrapolated by a
  polynomial in the schedule's own time t, c_j = int_t^s l_j(tau) rho'(tau) dtau (Gauss-Legendre in
  log rho). DEIS-1 is DDIM; on EDM's schedule (t = sigma) DEIS-k is LMS-k.

Warm-up steps use orders 1, 2, ... (``lax.switch`` on the step index: each step runs one formula); with
``lower_order_final`` on grids of fewer than 10 steps the last steps lower the order again to the steps
left (diffusers' ``lower_order_final``). A step that ends at sigma = 0 returns the data prediction x0_hat (the final
denoising step), as every multistep sampler here does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.forward import bcast
from jaxdiff.samplers.common import (
    check_finite_start,
    check_order,
    finish,
    prepare,
    rho,
    safe_where_zero,
    scan_steps,
    step_order,
)

# Adams-Bashforth weights for equal steps, newest evaluation first (iPNDM).
AB_WEIGHTS = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12),
              4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}
MAX_ORDER = {"ipndm": 4, "lms": 4, "deis": 3}


def _gauss_legendre(n: int):
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return jnp.asarray((nodes + 1) / 2), jnp.asarray(weights / 2)  # on [0, 1]


def lagrange_basis(nodes, k: int, u):
    """The k Lagrange basis polynomials through ``nodes[:k]`` evaluated at ``u`` (any shape): ``[k, *u.shape]``."""
    out = []
    for j in range(k):
        lj = jnp.ones_like(u)
        for m in range(k):
            if m != j:
                lj = lj * (u - nodes[m]) / (nodes[j] - nodes[m])
        out.append(lj)
    return jnp.stack(out)


def ipndm_weights(schedule, times, s, k: int):
    """iPNDM: (rho_s - rho_t) * AB_k (constant-step weights, whatever the grid's spacing)."""
    dr = rho(schedule, s) - rho(schedule, times[0])
    return [dr * w for w in AB_WEIGHTS[k]]


def lms_weights(schedule, times, s, k: int, quad: int = 4):
    """LMS: int_{rho_t}^{rho_s} l_j(r) dr over the Lagrange basis in rho (k-diffusion's
    ``linear_multistep_coeff``, there by scipy quad; here by Gauss-Legendre, exact for degree <= 2 quad - 1)."""
    r_nodes = [rho(schedule, t) for t in times[:k]]
    r0, r1 = r_nodes[0], rho(schedule, s)
    u, w = _gauss_legendre(quad)
    u, w = u.astype(r0.dtype), w.astype(r0.dtype)
    basis = lagrange_basis(r_nodes, k, r0 + u * (r1 - r0))
    return list((r1 - r0) * jnp.sum(basis * w, axis=-1))


def deis_weights(schedule, times, s, k: int, quad: int = 16):
    """DEIS tAB: int_t^s l_j(tau) rho'(tau) dtau over the Lagrange basis in the schedule's time t, computed
    as int l_j(tau(v)) e^v dv in v = log rho (Gauss-Legendre): smooth where rho spans decades within one
    step (a DDPM table's last steps), and exact for constant l_j (DEIS-1 is DDIM)."""
    t0 = times[0]
    dt = jnp.result_type(t0)
    v0, v1 = jnp.log(rho(schedule, t0)), jnp.log(rho(schedule, s))
    u, w = _gauss_legendre(quad)
    v = v0 + u.astype(dt) * (v1 - v0)
    tau = schedule.t_from_logsnr(-2 * v)
    basis = lagrange_basis(list(times[:k]), k, tau)
    return list((v1 - v0) * jnp.sum(basis * jnp.exp(v) * w.astype(dt), axis=-1))


WEIGHTS = {"ipndm": ipndm_weights, "lms": lms_weights, "deis": deis_weights}


def linear_multistep_sample(den, schedule, x_T, ts, method: str, order: int, *, lower_order_final: bool = False,
                            return_trajectory: bool = False):
    """y_s = y_t + sum_j c_j eps_j over the grid ``ts`` with the weights of ``method`` (``WEIGHTS``)."""
    check_finite_start(schedule, ts, method)
    n = ts.shape[0] - 1
    weights = WEIGHTS[method]
    z = jnp.zeros_like(x_T)

    def step(carry, t, s, i):
        x, eps_hist, t_hist = carry  # newest first: eps at t_{i-1}, t_{i-2}, t_{i-3}
        x0, e0 = den(x, t)
        eps = (e0,) + eps_hist
        times = (t,) + t_hist

        def branch(k):
            def f():
                c = weights(schedule, times, s, k)
                return sum(bcast(c[j], x) * eps[j] for j in range(k))
            return f

        k = step_order(order, i, n, lower_order_final)
        incr = jax.lax.switch(k - 1, [branch(k) for k in range(1, order + 1)])
        y = x / bcast(schedule.alpha(t), x) + incr
        x_new = safe_where_zero(schedule.sigma(s), x0, bcast(schedule.alpha(s), x) * y)
        return (x_new, eps[:-1], times[:-1])

    # Past times start at distinct dummy values (their weights are never used before the warm-up fills them).
    t_init = tuple(ts[0] + (j + 1) for j in range(order - 1))
    carry = (x_T, tuple(z for _ in range(order - 1)), t_init)
    (x, *_), traj = scan_steps(step, carry, ts, return_trajectory, den=den)
    return finish(x, traj, return_trajectory)


def _sampler(method: str, default_order: int, doc: str):
    def sample(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None, prediction: str = "eps",
               order: int = default_order, lower_order_final: bool = False, spacing: str = "trailing",
               t_max: float = 1.0, t_min=None, cond=None, sigma_max=None, return_trajectory: bool = False):
        den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction,
                          spacing=spacing, t_max=t_max, t_min=t_min, cond=cond, sigma_max=sigma_max,
                          finite_start=method)
        check_order(method, order, range(1, MAX_ORDER[method] + 1), ts.shape[0] - 1)
        return linear_multistep_sample(den, schedule, x_T, ts, method, order, lower_order_final=lower_order_final,
                                       return_trajectory=return_trajectory)

    sample.__name__ = sample.__qualname__ = f"sample_{method}"
    sample.__doc__ = doc + """

    Args: as :func:`jaxdiff.samplers.ddim.sample_ddim`, plus ``order`` (the number of noise predictions the step
    combines; warm-up steps use fewer), ``lower_order_final`` (on grids of fewer than 10 steps the last
    steps use at most as many as there are steps left; off by default: on the trailing grid it raised the
    error at 5 and 10 steps), ``sigma_max`` (karras grids). The default ``trailing`` grid ends with one step from
    t_max / N straight to t = 0 (benchmarks/results/samplers_peers.md and few_nfe_digits.md: at 5-10 NFE
    it beats the logSNR grid on the digits model and on 64-d mixtures). Starts where alpha > 0 (a flow
    path needs t_max < 1). NFE = num_steps."""
    return sample


sample_ipndm = _sampler("ipndm", 4, "iPNDM (Zhang & Chen 2023): Adams-Bashforth in rho = sigma / alpha with "
                                    "constant-step weights, orders 1-4 (default 4).")
sample_lms = _sampler("lms", 4, "Linear multistep (k-diffusion's sample_lms): variable-step Adams-Bashforth in "
                                "rho = sigma / alpha, orders 1-4 (default 4).")
sample_deis = _sampler("deis", 3, "DEIS tAB (Zhang & Chen 2023): exponential integrator with eps extrapolated "
                                  "in the schedule's time t, orders 1-3 (default 3; order 1 is DDIM).")
