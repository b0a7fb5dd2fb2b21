"""What every sampler shares: input checks, the model wrapper, and the lax.scan loop over a time grid."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxdiff.forward import bcast
from jaxdiff.parameterization import check_prediction, x0_eps_fn
from jaxdiff.samplers.timegrids import time_grid


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


def setup(model_fn, schedule, x_T, num_steps, prediction, spacing, t_max, t_min, cond, sigma_max=None):
    """Validate and return ``(denoise(x, t) -> (x0, eps), grid [N + 1])``."""
    check_prediction(prediction)
    check_inputs(x_T, cond)
    ts = time_grid(schedule, num_steps, spacing, t_max, t_min, sigma_max)
    f = x0_eps_fn(model_fn, schedule, prediction)
    return (lambda x, t: f(x, t, cond)), ts.astype(x_T.dtype)


def scan_steps(step: Callable, carry: Any, ts, return_trajectory: bool):
    """Run ``carry = step(carry, t_cur, t_next, i)`` over consecutive grid pairs with ``lax.scan``.

    The carry's first element is the state x; the trajectory stacks x after every step ``[N, B, ...]``.
    """
    n = ts.shape[0] - 1

    def body(c, inp):
        c = step(c, *inp)
        return c, (c[0] if return_trajectory else None)

    carry, traj = jax.lax.scan(body, carry, (ts[:-1], ts[1:], jnp.arange(n)))
    return carry, traj


def finish(x, traj, return_trajectory):
    return (x, traj) if return_trajectory else x


def lam(schedule, t):
    """lambda_t = logsnr_t / 2 = log(alpha_t / sigma_t) (DPM-Solver's half log-SNR)."""
    return 0.5 * schedule.logsnr(t)


def safe_where_zero(sigma_next, x0, x_update):
    """The update, or x0 itself where the step ends at sigma = 0 (the final denoising step)."""
    return jnp.where(bcast(sigma_next == 0, x0), x0, x_update)


def step_key(key, i):
    return jax.random.fold_in(key, i)
