"""Samplers: pure functions ``sample_<name>(model_fn, schedule, x_T, key, *, num_steps | ts, prediction, ...)``.

Each runs a ``lax.scan`` over an explicit decreasing time grid: built by :mod:`jaxdiff.samplers.timegrids`
from ``num_steps`` and a spacing, or passed in as ``ts`` (imputation's segments, SDEdit, a consistency
sampler's chosen times). Each calls one denoiser (:func:`denoiser`) made once from the model function, the
schedule and the parameterization. ``sample`` dispatches by name through the registry ``SAMPLERS`` of
:class:`Sampler` records (function, NFE rule; the default spacing is the function's own): a new solver is one
module here plus one record, and nothing switches on a sampler's name.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

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
from jaxdiff.samplers.state import StatefulModel
from jaxdiff.samplers.timegrids import SPACINGS, check_grid, default_t_min, karras_sigmas, time_grid, zero_noise_at_zero
from jaxdiff.samplers.unipc import sample_unipc, unipc_update


@dataclass(frozen=True)
class Sampler:
    """A registry record: the sampler's function and its NFE rule. Its default spacing and option defaults are
    the function's own keyword defaults (one place), so the registry and the signatures cannot disagree.

    ``nfe(n, to_zero, options) -> int``: network evaluations on a grid of ``n`` steps whose last step ends at
    sigma = 0 when ``to_zero`` (there the step returns x0_hat), ``options`` the call's options over the
    function's defaults; None where the count depends on the solve (the adaptive ODE reports its own).
    ``full_steps``: ``num_steps`` defaults to a discrete schedule's T (DDPM's ancestral sampling).
    ``stochastic``: it draws noise with its default options (it then refuses to run without a key); the
    deterministic ones follow the probability-flow ODE (reflow's pairs, likelihoods need one)."""

    fn: Callable
    nfe: Callable[[int, bool, dict], int] | None = None
    full_steps: bool = False
    stochastic: bool = False

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    @property
    def __name__(self) -> str:
        return self.fn.__name__

    @property
    def defaults(self) -> dict:
        return {k: p.default for k, p in inspect.signature(self.fn).parameters.items()
                if p.default is not inspect.Parameter.empty}

    @property
    def spacing(self) -> str:
        """The spacing of the grid the sampler builds from ``num_steps`` (imputation and SDEdit take it too)."""
        return self.defaults.get("spacing", "uniform")


def _per_step(k: int = 1):  # k evaluations a step, one on the step to sigma = 0 (it returns x0_hat)
    return lambda n, to_zero, o: k * n - (k - 1) * int(to_zero)


#: Every sampler by name: its :class:`Sampler` record (function, NFE rule, whether it draws noise).
SAMPLERS = {
    "ddpm": Sampler(sample_ddpm, _per_step(), full_steps=True, stochastic=True),
    "ddim": Sampler(sample_ddim, _per_step()),
    "euler": Sampler(sample_euler, _per_step()),
    "heun": Sampler(sample_heun, _per_step(2)),
    "dpm_solver": Sampler(sample_dpm_solver, lambda n, z, o: _per_step(o["order"])(n, z, o)),
    "dpmpp_2m": Sampler(sample_dpmpp_2m, _per_step()),
    "dpmpp_3m": Sampler(sample_dpmpp_3m, lambda n, z, o: n + int(o["high_order_warmup"] and n > 1)),
    "dpmpp_2m_sde": Sampler(sample_dpmpp_2m_sde, _per_step(), stochastic=True),
    "dpmpp_2s": Sampler(sample_dpmpp_2s, _per_step(2)),
    "dpmpp_2s_ancestral": Sampler(sample_dpmpp_2s_ancestral, _per_step(2), stochastic=True),
    "unipc": Sampler(sample_unipc, lambda n, z, o: n + int(o["final_corrector"] and o["corrector"] and not z)),
    "ipndm": Sampler(sample_ipndm, _per_step()),
    "deis": Sampler(sample_deis, _per_step()),
    "lms": Sampler(sample_lms, _per_step()),
    "pc": Sampler(sample_pc, lambda n, z, o: n * (1 + o["n_corrector_steps"]), stochastic=True),
    "annealed_langevin": Sampler(sample_annealed_langevin,
                                 lambda n, z, o: n * o["n_steps_each"] + int(o["denoise_final"]), stochastic=True),
    "ode": Sampler(sample_ode),
    "flow_sde": Sampler(sample_flow_sde, _per_step(), stochastic=True),
    "consistency": Sampler(sample_consistency, lambda n, z, o: n, stochastic=True),  # evaluations at t_0 .. t_{N-1}
}


def get_sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; allowed: {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def default_spacing(name: str) -> str:
    """The spacing sampler ``name`` builds its grid with from ``num_steps`` (its ``spacing`` default)."""
    return get_sampler(name).spacing


def sample(name: str, model_fn, schedule, x_T, key, **options):
    """Run sampler ``name`` (one of ``SAMPLERS``) with its options (``num_steps=...`` or ``ts=...``)."""
    return get_sampler(name)(model_fn, schedule, x_T, key, **options)


def nfe(name: str, schedule, *, num_steps: int | None = None, ts=None, **options) -> int:
    """Network evaluations of one run of sampler ``name`` on its grid (``num_steps`` or ``ts``) with its
    ``options``: the record's rule on the grid the sampler would build. The adaptive ``ode`` sampler reports
    its own (``sample_ode(..., return_nfe=True)``)."""
    rec = get_sampler(name)
    if rec.nfe is None:
        raise ValueError(f"the {name} sampler's NFE depends on the solve: run it with return_nfe=True")
    o = {**rec.defaults, **options}
    # Euler / Heun's step_to_zero: the grid's last level, then one Euler step to sigma = 0 (one evaluation)
    tail = int(bool(o.get("step_to_zero")) and not zero_noise_at_zero(schedule))
    if o.get("sigmas") is not None:  # consistency's re-noising levels: t_max, each level, then the end
        ts = jnp.zeros(int(jnp.asarray(o["sigmas"]).reshape(-1).shape[0]) + 2)
    elif ts is None:
        if num_steps is None and rec.full_steps:
            num_steps = getattr(schedule, "num_steps", None)
        if num_steps is None:
            raise ValueError(f"nfe({name!r}): give num_steps or the grid ts")
        ts = time_grid(schedule, num_steps - tail, o["spacing"], o.get("t_max", 1.0), o.get("t_min"),
                       o.get("sigma_max"))
    ts = jnp.asarray(ts)
    to_zero = bool(schedule.sigma(ts[-1]) == 0)
    return rec.nfe(int(ts.shape[0]) - 1, to_zero, o) + tail


def prior_sample(schedule, key, shape, dtype=jnp.float32, t_max: float = 1.0):
    """x_T ~ N(0, sigma_marginal(t_max)^2 I): the prior the samplers start from (``sqrt(alpha^2 c + sigma^2)``
    with unit data scale c = 1 folded in: prior_std for VE/EDM, 1 for VP schedules)."""
    a, s = schedule.alpha(t_max), schedule.sigma(t_max)
    std = jnp.sqrt(a**2 + s**2)
    return std * jax.random.normal(key, shape, dtype)


__all__ = ["SAMPLERS", "SPACINGS", "Sampler", "StatefulModel", "default_spacing", "sample", "get_sampler", "nfe",
           "prior_sample", "denoiser", "grid", "check_grid", "time_grid", "karras_sigmas", "default_t_min", "ddim_step",
           "dpm_solver_step", "dpmpp_2m_update", "dpmpp_multistep_update", "unipc_update", "langevin_corrector"] + \
    [r.fn.__name__ for r in SAMPLERS.values()]
