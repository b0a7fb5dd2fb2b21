"""The probability-flow ODE solved adaptively by diffrax (error-controlled steps: the NFE is an output)."""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiff.forward import bcast
from jaxdiff.samplers.common import check_inputs, denoiser, lam
from jaxdiff.samplers.state import refuse_state
from jaxdiff.samplers.timegrids import default_t_min
from jaxdiff.schedules import alpha_vanishes

ODE_SOLVERS = ("tsit5", "dopri5", "dopri8", "heun", "bosh3")
STAGES = {"tsit5": 6, "dopri5": 6, "dopri8": 12, "heun": 2, "bosh3": 3}


def diffrax_solver(name: str):
    import diffrax

    solvers = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8,
               "heun": diffrax.Heun, "bosh3": diffrax.Bosh3}
    if name not in solvers:
        raise ValueError(f"unknown ode solver {name!r}; allowed: {sorted(solvers)}")
    return solvers[name]()


def pf_ode_field(den, schedule):
    """The probability-flow ODE as ``v(u, x_hat) = dx_hat/du = sigma_hat * eps_hat(alpha x_hat, t)`` in
    u = log(sigma_hat), x_hat = x / alpha (sigma_hat = sigma / alpha): Song et al. 2021b eq. 13 after a
    change of variables that makes it smooth for every schedule (DDIM is its Euler method)."""

    def field(u, xh):
        t = jnp.clip(schedule.t_from_logsnr(-2 * u), 0.0, 1.0)
        _, eps = den(xh * schedule.alpha(t), t)
        return jnp.exp(u) * eps

    return field


def velocity_field(den, schedule):
    """The probability-flow ODE in t as flow matching writes it: dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat
    (the flow interpolants, where x / alpha is infinite at t = 1)."""

    def field(t, x):
        _, _, da, ds = schedule.rates(t)
        x0, eps = den(x, t)
        return bcast(da, x) * x0 + bcast(ds, x) * eps

    return field


def ode_variables(den, schedule, t_from, t_to, dtype):
    """How the probability-flow ODE is integrated from ``t_from`` to ``t_to``: ``(field, s_from, s_to, scale_from,
    scale_to)``, the state being x / scale. In u = log(sigma_hat) on x_hat = x / alpha (scale = alpha) for every
    schedule, except the flow interpolants (alpha = 0 at t = 1, x_hat infinite): in t on x itself with the
    velocity field."""
    t0, t1 = jnp.asarray(t_from, dtype), jnp.asarray(t_to, dtype)
    if alpha_vanishes(schedule):
        return velocity_field(den, schedule), t0, t1, 1.0, 1.0
    return pf_ode_field(den, schedule), -lam(schedule, t0), -lam(schedule, t1), schedule.alpha(t0), schedule.alpha(t1)


def nfe_of(sol, solver: str):
    """Model evaluations of a diffrax solve: stages x (accepted + rejected) steps (+1 for the first FSAL
    evaluation)."""
    return (sol.stats["num_accepted_steps"] + sol.stats["num_rejected_steps"]) * STAGES[solver] + 1


def sample_ode(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None, prediction: str = "eps",
               rtol: float = 1e-5, atol: float = 1e-5, solver: str = "tsit5", t_max: float = 1.0,
               t_min=None, cond=None, max_steps: int = 4096, return_nfe: bool = False):
    """The probability-flow ODE (Song et al. 2021b eq. 13) solved adaptively by diffrax from t_max to t_min
    (or from ``ts[0]`` to ``ts[-1]``), integrated in u = log(sigma_hat) where it reads dx_hat/du = sigma_hat
    eps (x_hat = x / alpha): smooth for every schedule, tabulated ones included. ``rtol`` / ``atol`` replace
    ``num_steps``. With ``return_nfe`` also returns the number of model evaluations. On the flow
    interpolants (alpha = 0 at t = 1) it integrates dx/dt = alpha' x0_hat + sigma' eps_hat in t instead."""
    import diffrax

    ode_solver = diffrax_solver(solver)
    check_inputs(x_T, cond)
    refuse_state(model_fn, "ode")  # an adaptive solver: its evaluations are not steps of a grid
    den = denoiser(model_fn, schedule, prediction, cond)
    if ts is not None:
        t_max, t_min = ts[0], ts[-1]
    t_min = default_t_min(schedule) if t_min is None else t_min
    field, u0, u1, scale0, scale1 = ode_variables(den, schedule, t_max, t_min, x_T.dtype)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda u, xh, args: field(u, xh)), ode_solver, t0=u0, t1=u1, dt0=(u1 - u0) / 32,
        y0=x_T / scale0, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        saveat=diffrax.SaveAt(t1=True), max_steps=max_steps)
    x = sol.ys[-1] * scale1
    return (x, nfe_of(sol, solver)) if return_nfe else x
