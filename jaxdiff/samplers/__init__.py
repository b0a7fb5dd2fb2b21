"""Samplers: pure functions ``sample_<name>(model_fn, schedule, x_T, key, *, num_steps, prediction, ...)``.

Each is a ``lax.scan`` over a precomputed time grid (:mod:`jaxdiff.samplers.timegrids`); ``sample``
dispatches by name through the one dict ``SAMPLERS``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.samplers.ddim import ddim_step, sample_ddim, sample_ddpm
from jaxdiff.samplers.ode import (
    dpm_solver_step,
    dpmpp_multistep_update,
    sample_dpm_solver,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m,
    sample_euler,
    sample_heun,
    sample_ode,
    sample_unipc,
    unipc_update,
)
from jaxdiff.samplers.sde import langevin_corrector, sample_annealed_langevin, sample_pc
from jaxdiff.samplers.timegrids import SPACINGS, default_t_min, karras_sigmas, time_grid

SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpm_solver": sample_dpm_solver,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_3m": sample_dpmpp_3m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "unipc": sample_unipc,
    "pc": sample_pc,
    "annealed_langevin": sample_annealed_langevin,
    "ode": sample_ode,
}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; allowed: {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def sample(name: str, model_fn, schedule, x_T, key, **options):
    """Run sampler ``name`` (one of ``SAMPLERS``) with its options."""
    return get_sampler(name)(model_fn, schedule, x_T, key, **options)


def prior_sample(schedule, key, shape, dtype=jnp.float32, t_max: float = 1.0):
    """x_T ~ N(0, sigma_marginal(t_max)^2 I): the prior the samplers start from (``sqrt(alpha^2 c + sigma^2)``
    with unit data scale c = 1 folded in: prior_std for VE/EDM, 1 for VP schedules)."""
    a, s = schedule.alpha(t_max), schedule.sigma(t_max)
    std = jnp.sqrt(a**2 + s**2)
    return std * jax.random.normal(key, shape, dtype)


__all__ = ["SAMPLERS", "SPACINGS", "sample", "get_sampler", "prior_sample", "time_grid", "karras_sigmas",
           "default_t_min", "ddim_step", "dpm_solver_step", "dpmpp_multistep_update", "unipc_update",
           "langevin_corrector"] + [f.__name__ for f in SAMPLERS.values()]
