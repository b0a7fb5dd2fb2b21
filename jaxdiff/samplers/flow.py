"""Stochastic sampling with the probability-flow ODE's marginals, in flow matching's variables (SiT, Ma et
al. 2024, Sec. 3): for any diffusion coefficient w(t) >= 0 the reverse-time SDE

    dx = [u(x, t) - w(t) / 2 * score(x, t)] dt + sqrt(w(t)) dW_bar,   u = alpha' x0_hat + sigma' eps_hat,
    score = -eps_hat / sigma,

has the marginals of x_t = alpha_t x0 + sigma_t eps; w = 0 is the ODE. It needs only the schedule's rates, so
it starts at a flow path's t = 1 (alpha = 0) and works on every schedule. Euler-Maruyama over the grid; the
step to sigma = 0 returns x0_hat.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.forward import bcast
from jaxdiff.samplers.common import finish, prepare, require_key, safe_where_zero, scan_steps, step_key

DIFFUSIONS = ("sigma", "constant", "linear", "sin2")


def diffusion_coefficient(kind: str, schedule, t, norm: float = 1.0):
    """SiT's choices of w(t) (``norm`` scales each): ``sigma`` (w = sigma_t, SiT's default: w / sigma stays
    finite as t -> 0), ``constant`` (w = 1), ``linear`` (w = 1 - t), ``sin2`` (w = sin^2(pi t))."""
    if kind == "sigma":
        w = schedule.sigma(t)
    elif kind == "constant":
        w = jnp.ones_like(t)
    elif kind == "linear":
        w = 1.0 - t
    elif kind == "sin2":
        w = jnp.sin(jnp.pi * t) ** 2
    else:
        raise ValueError(f"unknown diffusion {kind!r}; allowed: {list(DIFFUSIONS)}")
    return norm * w


def sample_flow_sde(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None,
                    prediction: str = "velocity", diffusion: str = "sigma", diffusion_norm: float = 1.0,
                    spacing: str = "uniform", t_max: float = 1.0, t_min=None, cond=None,
                    return_trajectory: bool = False):
    """Euler-Maruyama on the SDE above from t_max to t_min (or over ``ts``); NFE = num_steps."""
    if diffusion not in DIFFUSIONS:
        raise ValueError(f"unknown diffusion {diffusion!r}; allowed: {list(DIFFUSIONS)}")
    if not diffusion_norm >= 0:
        raise ValueError(f"diffusion_norm must be >= 0, got {diffusion_norm}")
    require_key(key, "flow_sde")
    den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction,
                      spacing=spacing, t_max=t_max, t_min=t_min, cond=cond)

    def step(carry, t, s, i):
        (x,) = carry
        x0, eps = den(x, t)
        _, sig, da, ds = schedule.rates(t)
        w = diffusion_coefficient(diffusion, schedule, t, diffusion_norm)
        drift = da * x0 + ds * eps + 0.5 * w / sig * eps  # u - w/2 score
        dt = t - s
        z = jax.random.normal(step_key(key, i), x.shape, x.dtype)
        x_new = x - bcast(dt, x) * drift + jnp.sqrt(w * dt) * z
        return (safe_where_zero(schedule.sigma(s), x0, x_new),)

    (x,), traj = scan_steps(step, (x_T,), ts, return_trajectory, den=den)
    return finish(x, traj, return_trajectory)
