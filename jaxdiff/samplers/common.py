"""What every sampler shares: the denoiser made once from a model function, the time grid (built from
``num_steps`` and a spacing, or passed in), input checks, and the ``lax.scan`` loop over the grid."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.forward import bcast
from jaxdiff.parameterization import check_prediction, x0_eps_fn
from jaxdiff.samplers.state import refuse_state, scan_carrying_state, with_state_cell
from jaxdiff.samplers.timegrids import check_grid, time_grid


def check_inputs(x_T, cond=None):
    """x_T must be a float array ``[B, ...]`` of rank >= 2; cond (if an array) must share its batch."""
    if not hasattr(x_T, "shape") or len(x_T.shape) < 2:
        raise ValueError(f"x_T must be an array [batch, ...] of rank >= 2, got shape "
                         f"{getattr(x_T, 'shape', type(x_T))}")
    if not jnp.issubdtype(x_T.dtype, jnp.floating):
        raise ValueError(f"x_T must be floating point, got dtype {x_T.dtype}")
    for leaf in jax.tree_util.tree_leaves(cond):
        if hasattr(leaf, "shape") and len(leaf.shape) >= 1 and leaf.shape[0] != x_T.shape[0]:
            raise ValueError(f"cond has batch size {leaf.shape[0]}, x_T has {x_T.shape[0]}")


def denoiser(model_fn: Callable, schedule, prediction: str = "eps", cond: Any = None) -> Callable:
    """``den(x, t) -> (x0_hat, eps_hat)``: the model's output in any parameterization converted once
    (``jaxdiff.parameterization``), so sampler bodies never branch on it. ``t`` is a scalar or ``[B]``. For a
    :class:`~jaxdiff.samplers.state.StatefulModel`, ``den.cell`` holds its state (set by :func:`prepare`, carried by
    :func:`scan_steps`); else ``den.cell`` is None."""
    check_prediction(prediction)
    model_fn, cell = with_state_cell(model_fn)
    f = x0_eps_fn(model_fn, schedule, prediction)

    def den(x, t):
        return f(x, t, cond)

    den.cell = cell
    return den


def grid(schedule, *, ts=None, num_steps=None, spacing="uniform", t_max=1.0, t_min=None, sigma_max=None,
         min_steps: int = 1, dtype=jnp.float32, finite_start: str | None = None):
    """The sampler's decreasing grid: ``ts`` as given (checked), else ``time_grid(schedule, num_steps, ...)``.

    Under ``jit`` the grid stays part of the compiled program (its values bit for bit as before) and its checks
    run on the same grid computed at trace time, where the schedule and the bounds are constants: a bad grid is
    refused before compiling on every path that samples. ``finite_start``: the sampler's name, for samplers
    that step in x / alpha (:func:`check_finite_start`)."""
    if ts is None:
        if num_steps is None:
            raise ValueError("give num_steps (and a spacing) or an explicit decreasing grid ts")
        ts = checked = time_grid(schedule, num_steps, spacing, t_max, t_min, sigma_max)
        if isinstance(ts, jax.core.Tracer):
            with jax.ensure_compile_time_eval():  # stays a tracer where the schedule itself is traced
                checked = time_grid(schedule, num_steps, spacing, t_max, t_min, sigma_max)
    else:
        ts = checked = jnp.asarray(ts)
    check_grid(checked, min_steps)
    if finite_start:
        check_finite_start(schedule, checked, finite_start)
    return ts.astype(dtype)


def prepare(model_fn, schedule, x_T, *, ts=None, num_steps=None, prediction="eps", spacing="uniform",
            t_max=1.0, t_min=None, cond=None, sigma_max=None, min_steps: int = 1, finite_start: str | None = None,
            stateless: str | None = None):
    """Validate the inputs; return ``(den, ts)`` (see :func:`denoiser`, :func:`grid`). ``stateless``: the name
    of a sampler that cannot carry a :class:`~jaxdiff.samplers.state.StatefulModel`'s state (refused by name)."""
    if stateless:
        refuse_state(model_fn, stateless)
    den = denoiser(model_fn, schedule, prediction, cond)
    check_inputs(x_T, cond)
    if den.cell is not None:
        den.cell.state = model_fn.init(x_T)
    return den, grid(schedule, ts=ts, num_steps=num_steps, spacing=spacing, t_max=t_max, t_min=t_min,
                     sigma_max=sigma_max, min_steps=min_steps, dtype=x_T.dtype, finite_start=finite_start)


def check_finite_start(schedule, ts, sampler: str):
    """Samplers that step in x / alpha (EDM's Euler / Heun, the noise-prediction DPM-Solver) cannot start
    where alpha = 0 (a flow path's t = 1); a named error before compiling (a traced grid is not checked)."""
    with jax.ensure_compile_time_eval():
        t0 = ts[0]
        alpha = schedule.alpha(t0)
    if not isinstance(alpha, jax.core.Tracer) and float(alpha) == 0.0:
        raise ValueError(f"{sampler} steps in x / alpha, infinite at t = {float(t0):g} where alpha = 0 (a flow "
                         "path's start): pass t_max < 1 (or sigma_max for karras grids; EDM uses 80), or use "
                         "ddim, dpmpp_2m, dpmpp_3m or unipc, which start there")


def scan_steps(step: Callable, carry: Any, ts, return_trajectory: bool, start: int = 0, den=None):
    """Run ``carry = step(carry, t_cur, t_next, i)`` over consecutive grid pairs with ``lax.scan`` (``i``
    counts from ``start``: steps peeled off before the scan keep their indices).

    The carry's first element is the state x; the trajectory stacks x after every step ``[N, B, ...]``. With
    the sampler's ``den``, a stateful model's state rides in the scan's carry beside the sampler's own
    (:class:`~jaxdiff.samplers.state.StatefulModel`): the sampler's step never sees it.
    """
    n = ts.shape[0] - 1
    cell = getattr(den, "cell", None)
    xs = (ts[:-1], ts[1:], start + jnp.arange(n))
    if cell is None:
        def body(c, inp):
            c = step(c, *inp)
            return c, (c[0] if return_trajectory else None)

        return jax.lax.scan(body, carry, xs)

    return scan_carrying_state(cell, step, carry, xs, return_trajectory)


def finish(x, traj, return_trajectory):
    return (x, traj) if return_trajectory else x


LAM_MIN = -50.0  # stands for lambda = -inf (alpha = 0): e^-50 ~ 2e-22 is below float64's resolution of 1


def lam(schedule, t):
    """lambda_t = logsnr_t / 2 = log(alpha_t / sigma_t) (DPM-Solver's half log-SNR), floored at ``LAM_MIN``:
    where alpha = 0 (a flow path's t = 1) every e^{-h} of a step from there is 0 in floating point, as it
    is exactly, while step ratios and history terms stay finite (a multistep solver's term from such a
    point gets weight ~ 1 / h -> 0 instead of inf / inf)."""
    return jnp.maximum(0.5 * schedule.logsnr(t), LAM_MIN)


def rho(schedule, t):
    """rho_t = sigma_t / alpha_t: EDM's sigma (sigma_hat), the noise level of x_hat = x / alpha."""
    return schedule.sigma(t) / schedule.alpha(t)


def safe_where_zero(sigma_next, x0, x_update):
    """The update, or x0 itself where the step ends at sigma = 0 (the final denoising step)."""
    return jnp.where(bcast(sigma_next == 0, x0), x0, x_update)


def require_key(key, sampler: str, why: str = "draws noise at every step"):
    """A sampler that draws noise refuses ``key=None`` (it never falls back to a fixed key)."""
    if key is None:
        raise ValueError(f"{sampler} {why} and needs a PRNG key (jax.random.key(seed) or run_key(seed, "
                         "Stream.SAMPLE)); got key=None")


def nonzero(v) -> bool:
    """Whether an option such as eta or S_churn is a concrete nonzero value (a traced one counts as nonzero)."""
    return isinstance(v, jax.core.Tracer) or bool(np.any(np.asarray(v) != 0))


def step_key(key, i):
    return jax.random.fold_in(key, i)


LOWER_ORDER_FINAL_BELOW = 10  # lower the final orders only on grids of fewer steps (diffusers: 15)


def step_order(order: int, i, n: int, lower_order_final: bool):
    """The order of step i of a multistep solver on an n-step grid: min(order, i + 1) (the warm-up), and with
    ``lower_order_final`` on a grid of fewer than 10 steps also min(.., n - i) (diffusers'
    ``lower_order_final``, which it applies below 15 steps: the last step first order, the one before at most
    second, ...). On the exact-mixture benchmark it cuts DPM-Solver++(3M)'s and UniPC-3's error at 5 steps
    by up to 1.4x and raises it at 10 steps by up to 1.6x (benchmarks/results/lower_order_final.md);
    above the threshold it would also cost the global order."""
    k = jnp.minimum(order, i + 1)
    return jnp.minimum(k, n - i) if lower_order_final and n < LOWER_ORDER_FINAL_BELOW else k


def check_order(sampler: str, order, allowed, num_steps: int):
    """A named error for an order outside ``allowed`` or a grid with fewer steps than the order needs."""
    if order not in allowed:
        raise ValueError(f"{sampler} order must be one of {list(allowed)}, got {order!r}")
    if num_steps < order:
        raise ValueError(f"{sampler} of order {order} needs at least {order} steps (its warm-up takes orders "
                         f"1..{order}), got {num_steps}; lower the order or take more steps")
