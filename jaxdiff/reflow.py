"""Rectified flow's reflow (Liu et al. 2023, "Flow straight and fast", Sec. 2.2-2.3): couple noise and data
through a trained model's probability-flow ODE, then train a new flow on the coupled pairs, whose paths are
straighter, so few-step sampling loses less.

* :func:`reflow_pairs` -- ``(z, x0)`` with ``x0`` the ODE solution from ``z`` at t = 1 (any deterministic
  jaxdiff sampler, or the adaptive ``ode``).
* :func:`straightness` -- Liu et al.'s S = int_0^1 E ||(z - x0) - u(x_t, t)||^2 dt along the model's own
  trajectories (per dimension; 0 for straight paths), by the trapezoidal rule over a sampler's grid.

Training on pairs is the ordinary flow-matching loss with the paired noise in place of fresh noise
(the ``noise`` argument of :func:`jaxdiff.losses.make_loss`'s loss, which the diffusion task passes from its
pairs data source); configs name a pairs file in ``data.pairs`` (written by ``python -m experiments.reflow``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxdiff import samplers
from jaxdiff.samplers.adaptive import velocity_field
from jaxdiff.samplers.common import denoiser


def reflow_pairs(model_fn: Callable, schedule, z, *, sampler: str = "dpmpp_2m", prediction: str = "velocity",
                 cond: Any = None, **options):
    """``x0`` = the model's ODE solution from ``z`` (noise at t = 1, ``[B, ...]``) by a deterministic
    ``sampler`` with its ``options`` (``num_steps=...``); returns ``(z, x0)``."""
    if samplers.get_sampler(sampler).stochastic:
        allowed = sorted(n for n, r in samplers.SAMPLERS.items() if not r.stochastic)
        raise ValueError(f"reflow pairs need a deterministic sampler (the ODE's coupling); got {sampler!r}; "
                         f"allowed: {', '.join(allowed)}")
    x0 = samplers.sample(sampler, model_fn, schedule, z, None, prediction=prediction, cond=cond, **options)
    return z, x0


def straightness(model_fn: Callable, schedule, z, *, num_steps: int = 50, prediction: str = "velocity",
                 cond: Any = None):
    """Liu et al.'s straightness of the model's flow from noise ``z`` (lower is straighter; 0 = straight):
    the ODE is followed by DDIM (Euler on the velocity) over ``num_steps`` uniform steps from t = 1 to 0, and
    ``||(z - x0) - u(x_t, t)||^2`` (mean over dimensions, u = alpha' x0_hat + sigma' eps_hat) is integrated
    over t by the trapezoidal rule at the grid points before the last. Returns ``[B]``."""
    ts = samplers.time_grid(schedule, num_steps, "uniform", 1.0, 0.0)
    x0, traj = samplers.sample_ddim(model_fn, schedule, z, None, ts=ts, prediction=prediction, cond=cond,
                                    return_trajectory=True)
    xs = jnp.concatenate([z[None], traj[:-1]])  # x at ts[0..N-1]
    chord = z - x0
    field = velocity_field(denoiser(model_fn, schedule, prediction, cond), schedule)

    def dev(x, t):
        return jnp.mean((chord - field(t, x)).reshape(x.shape[0], -1) ** 2, -1)

    d = jax.lax.map(lambda a: dev(*a), (xs, ts[:-1]))  # [N, B], one network call per grid point
    w = -jnp.diff(ts)  # step lengths; trapezoid over [ts[N-1], ts[0]] plus the last step at its left value
    inner = 0.5 * (d[1:] + d[:-1]) * w[:-1, None]
    return inner.sum(0) + d[-1] * w[-1]
