"""Samplers: pure functions ``sample_<name>(model_fn, schedule, x_T, key, *, num_steps | ts, prediction, ...)``.

Each runs a ``lax.scan`` over an explicit decreasing time grid: built by :mod:`jaxdiff.samplers.timegrids`
from ``num_steps`` and a spacing, or passed in as ``ts`` (imputation's segments, SDEdit, a consistency
sampler's chosen times). Each calls one denoiser (:func:`denoiser`) made once from the model function, the
schedule and the parameterization. ``sample`` dispatches by name through the one dict ``SAMPLERS``; a new
solver is one module here plus one line in it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.samplers.adaptive import sample_ode
from jaxdiff.samplers.common import denoiser, grid
from jaxdiff.samplers.consistency import sample_consistency
from jaxdiff.samplers.ddim import ddim_step, sample_ddim, sample_ddpm
from jaxdiff.samplers.dpm_solver import dpm_solver_step, sample_dpm_solver
from jaxdiff.samplers.dpmpp import (
    dpmpp_2m_update,
    dpmpp_multistep_update,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m,
)
from jaxdiff.samplers.edm import sample_euler, sample_heun
from jaxdiff.samplers.flow import sample_flow_sde
from jaxdiff.samplers.multistep import sample_deis, sample_ipndm, sample_lms
from jaxdiff.samplers.sde import langevin_corrector, sample_annealed_langevin, sample_pc
from jaxdiff.samplers.singlestep import sample_dpmpp_2s, sample_dpmpp_2s_ancestral
from jaxdiff.samplers.timegrids import SPACINGS, check_grid, default_t_min, karras_sigmas, time_grid, zero_noise_at_zero
from jaxdiff.samplers.unipc import sample_unipc, unipc_update

SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpm_solver": sample_dpm_solver,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_3m": sample_dpmpp_3m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_2s": sample_dpmpp_2s,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "unipc": sample_unipc,
    "ipndm": sample_ipndm,
    "deis": sample_deis,
    "lms": sample_lms,
    "pc": sample_pc,
    "annealed_langevin": sample_annealed_langevin,
    "ode": sample_ode,
    "flow_sde": sample_flow_sde,
    "consistency": sample_consistency,
}
# The spacing each sampler's grid takes by default (imputation and SDEdit build their grids with it).
DEFAULT_SPACING = {"euler": "karras", "heun": "karras", "dpm_solver": "logsnr", "dpmpp_2m": "logsnr",
                   "dpmpp_3m": "logsnr", "dpmpp_2m_sde": "logsnr", "dpmpp_2s": "logsnr",
                   "dpmpp_2s_ancestral": "logsnr", "unipc": "logsnr", "ipndm": "trailing", "deis": "trailing",
                   "lms": "trailing"}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; allowed: {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def sample(name: str, model_fn, schedule, x_T, key, **options):
    """Run sampler ``name`` (one of ``SAMPLERS``) with its options (``num_steps=...`` or ``ts=...``)."""
    return get_sampler(name)(model_fn, schedule, x_T, key, **options)


def nfe(name: str, schedule, *, num_steps: int | None = None, ts=None, order: int = 3,
        n_corrector_steps: int = 1, n_steps_each: int = 100, high_order_warmup: bool = False,
        denoise_final: bool = True, final_corrector: bool = False, corrector: bool = True,
        step_to_zero: bool = False, **grid_options) -> int:
    """Network evaluations of one run of sampler ``name`` on its grid (``num_steps`` or ``ts``); the
    adaptive ``ode`` sampler reports its own (``return_nfe=True``)."""
    get_sampler(name)
    if name == "ode":
        raise ValueError("the adaptive ode sampler's NFE depends on the solve: use sample_ode(..., return_nfe=True)")
    tail = int(step_to_zero and name in ("euler", "heun") and not zero_noise_at_zero(schedule))
    if name == "consistency" and grid_options.get("sigmas") is not None:
        return 1 + int(jnp.asarray(grid_options["sigmas"]).reshape(-1).shape[0])  # t_max, then each level
    if ts is None:
        num_steps = num_steps - tail if num_steps is not None else None
        spacing = grid_options.pop("spacing", DEFAULT_SPACING.get(name, "uniform"))
        if name == "ddpm" and num_steps is None:
            num_steps = schedule.num_steps
        grid_options = {k: v for k, v in grid_options.items() if k in ("t_max", "t_min", "sigma_max")}
        ts = time_grid(schedule, num_steps, spacing, **grid_options)
    ts = jnp.asarray(ts)
    n = int(ts.shape[0]) - 1
    to_zero = bool(schedule.sigma(ts[-1]) == 0)  # the last step returns x0_hat: one evaluation
    if name in ("heun", "dpmpp_2s", "dpmpp_2s_ancestral"):
        return 2 * n - int(to_zero) + tail
    if name == "unipc":
        return n + int(final_corrector and corrector and not to_zero)
    if name == "dpm_solver":
        return order * n - (order - 1) * int(to_zero)
    if name == "dpmpp_3m":
        return n + int(high_order_warmup and n > 1)
    if name == "pc":
        return n * (1 + n_corrector_steps)
    if name == "annealed_langevin":
        return n * n_steps_each + int(denoise_final)
    if name == "consistency":
        return n  # evaluations at t_0 .. t_{N-1}
    return n + tail


def prior_sample(schedule, key, shape, dtype=jnp.float32, t_max: float = 1.0):
    """x_T ~ N(0, sigma_marginal(t_max)^2 I): the prior the samplers start from (``sqrt(alpha^2 c + sigma^2)``
    with unit data scale c = 1 folded in: prior_std for VE/EDM, 1 for VP schedules)."""
    a, s = schedule.alpha(t_max), schedule.sigma(t_max)
    std = jnp.sqrt(a**2 + s**2)
    return std * jax.random.normal(key, shape, dtype)


__all__ = ["SAMPLERS", "SPACINGS", "DEFAULT_SPACING", "sample", "get_sampler", "nfe", "prior_sample", "denoiser",
           "grid", "check_grid", "time_grid", "karras_sigmas", "default_t_min", "ddim_step", "dpm_solver_step",
           "dpmpp_2m_update", "dpmpp_multistep_update", "unipc_update", "langevin_corrector"] + \
    [f.__name__ for f in SAMPLERS.values()]
