"""Consistency sampling (Song et al. 2023, Algorithm 1): one evaluation maps the prior to data; more steps
re-noise the estimate to later grid times and map back."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.forward import bcast
from jaxdiff.samplers.common import finish, grid, prepare, require_key, scan_steps, step_key


def renoise_grid(schedule, sigmas, *, spacing: str = "uniform", t_max: float = 1.0, t_min=None):
    """The grid of multistep consistency sampling that re-noises to the given noise-to-signal levels
    ``sigmas`` (sigma / alpha, EDM's sigma; decreasing): ``[t_max, t(sigmas[0]), ..., t(sigmas[-1]), t_end]``,
    with t(s) = ``schedule.t_from_logsnr(-2 log s)`` and t_end the end of the one-step grid (the level f maps to).
    ``len(sigmas) + 1`` evaluations; Song et al. (2023) and iCT choose these levels by a search on FID."""
    s = jnp.asarray(sigmas, jnp.float32).reshape(-1)
    ends = grid(schedule, num_steps=1, spacing=spacing, t_max=t_max, t_min=t_min)
    if not isinstance(s, jax.core.Tracer):
        lo = float(schedule.sigma(ends[1]) / schedule.alpha(ends[1]))
        hi = float(schedule.sigma(ends[0]) / jnp.maximum(schedule.alpha(ends[0]), 1e-30))
        bad = [float(v) for v in s if not lo < float(v) < hi]
        if s.shape[0] == 0 or bad or bool(jnp.any(jnp.diff(s) >= 0)):
            raise ValueError(f"consistency sigmas={[float(v) for v in s]}: give a non-empty decreasing sequence of "
                             f"noise levels strictly between the grid's ends ({lo:g}, {hi:g})")
    mid = schedule.t_from_logsnr(-2.0 * jnp.log(s))
    return jnp.concatenate([ends[:1], mid.astype(ends.dtype), ends[1:]])


def sample_consistency(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None, sigmas=None,
                       prediction: str = "x0", spacing: str = "uniform", t_max: float = 1.0, t_min=None, cond=None,
                       return_trajectory: bool = False):
    """Evaluate the model (a consistency function f, or any x0 estimate) at t_0, ..., t_{N-1} of the grid:
    x0 = f(x_T, t_0); for k >= 1, x = alpha_k x0 + sqrt(sigma_k^2 - alpha_k^2 sigma_min^2) z, x0 = f(x, t_k), with
    sigma_min = sigma / alpha at the grid's end (the level f maps to). ``num_steps`` evaluations (1: one-step
    generation). The last grid time is not evaluated; on EDM's schedule a uniform grid is Karras' levels.
    ``sigmas`` (instead of ``num_steps`` / ``ts``): the re-noising levels themselves (:func:`renoise_grid`)."""
    if sigmas is not None:
        if ts is not None:
            raise ValueError("consistency sampling: pass the re-noising levels sigmas or a grid ts, not both")
        ts, num_steps = renoise_grid(schedule, sigmas, spacing=spacing, t_max=t_max, t_min=t_min), None
    den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction, spacing=spacing,
                      t_max=t_max, t_min=t_min, cond=cond)
    if ts.shape[0] > 2:
        require_key(key, "consistency", "re-noises between its evaluations (num_steps > 1)")
    end = ts[-1]
    s_min = schedule.sigma(end) / schedule.alpha(end)
    x0, _ = den(x_T, ts[0])
    if ts.shape[0] == 2:  # one-step generation: nothing re-noises (the trajectory of no steps is empty)
        return finish(x0, jnp.zeros((0,) + x0.shape, x0.dtype), return_trajectory)

    def step(carry, t, s, i):
        (x0,) = carry
        a, sig = schedule.alpha(t), schedule.sigma(t)
        z = jax.random.normal(step_key(key, i), x0.shape, x0.dtype)
        x = bcast(a, x0) * x0 + bcast(jnp.sqrt(jnp.maximum(sig**2 - (a * s_min) ** 2, 0.0)), x0) * z
        return (den(x, t)[0],)

    (x0,), traj = scan_steps(step, (x0,), ts[1:], return_trajectory, start=1, den=den)
    return finish(x0, traj, return_trajectory)
