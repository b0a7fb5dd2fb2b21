"""Likelihoods in bits/dim: the exact log-likelihood of the probability-flow ODE (Song et al. 2021b,
Sec. 4.3 and App. D.2; Chen et al. 2018 / Grathwohl et al. 2019 for the instantaneous change of
variables with Hutchinson's trace estimator) and the discrete variational bound of DDPM models
(Ho et al. 2020 eq. 5).

The ODE is integrated with diffrax in the same variables as :func:`jaxdiff.samplers.adaptive.sample_ode`:
u = log(sigma_hat) and x_hat = x / alpha, where dx_hat/du = sigma_hat * eps_hat (smooth for every
schedule). Along the flow ``d log p(x_hat(u)) / du = -div v``, so

    log p_{t_min}(x) = log pi(x(1)) + int_{u(t_min)}^{u(1)} div_{x_hat} v du + D log(alpha_1 / alpha_{t_min})

with pi = N(0, (alpha_1^2 + sigma_1^2) I) the prior the samplers start from. The step-size controller
sees only the x component: the divergence accumulator must not steer the steps, or a Hutchinson estimate
(whose noise depends on the probe) would no longer be unbiased.

On the flow interpolants (alpha_1 = 0, where x_hat is infinite) it integrates in t instead, with flow
matching's field dx/dt = alpha' x0_hat + sigma' eps_hat: log p_{t_min}(x) = log N(x(1); 0, I) +
int_{t_min}^1 div_x u dt.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxdiff.forward import prior_kl, q_sample
from jaxdiff.parameterization import to_x0_eps_at
from jaxdiff.reverse import LN2, p_variance, vdm_decoder_nll, vlb_term
from jaxdiff.samplers.adaptive import diffrax_solver, nfe_of, ode_variables
from jaxdiff.samplers.common import check_inputs, denoiser
from jaxdiff.samplers.timegrids import default_t_min, zero_noise_at_zero
from jaxdiff.schedules import DiscreteSchedule, Schedule, alpha_vanishes

DIVERGENCES = ("hutchinson", "exact")
PROBES = ("rademacher", "gaussian")


def _probe(key, shape, dtype, kind):
    if kind == "rademacher":
        return jax.random.rademacher(key, shape, dtype)
    return jax.random.normal(key, shape, dtype)


def divergence_fn(field: Callable, divergence: str = "hutchinson", probe: str = "rademacher",
                  num_probes: int = 1):
    """``fn(u, x, probes) -> (v, div)``: the field and its per-example divergence ``[B]``.

    ``exact`` takes one JVP per dimension (the trace of the Jacobian; for small D); ``hutchinson`` takes
    ``E[z^T J z]`` over the given probes ``[P, B, ...]`` (Hutchinson 1989), one JVP each. Examples must be
    independent in ``field`` (no batch statistics), which holds for every jaxdiff model."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; allowed: {list(DIVERGENCES)}")
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; allowed: {list(PROBES)}")

    def flat_sum(a):
        return a.reshape(a.shape[0], -1).sum(-1)

    if divergence == "exact":
        def fn(u, x, probes):
            del probes
            D = x[0].size
            basis = jnp.eye(D, dtype=x.dtype).reshape((D, 1) + x.shape[1:])
            basis = jnp.broadcast_to(basis, (D,) + x.shape)
            v, jv = jax.vmap(lambda e: jax.jvp(lambda y: field(u, y), (x,), (e,)))(basis)
            diag = jnp.sum(jv * basis, axis=tuple(range(2, jv.ndim)))  # [D, B]: (J e_i)_i
            return v[0], diag.sum(0)
        return fn

    def fn(u, x, probes):
        v, jv = jax.vmap(lambda z: jax.jvp(lambda y: field(u, y), (x,), (z,)))(probes)
        return v[0], jax.vmap(flat_sum)(jv * probes).mean(0)
    return fn


def ode_log_likelihood(model_fn: Callable, schedule: Schedule, x, key, *, prediction: str = "eps",
                       cond: Any = None, t_min: float | None = None, t_max: float = 1.0,
                       divergence: str = "hutchinson", probe: str = "rademacher", num_probes: int = 1,
                       rtol: float = 1e-5, atol: float = 1e-5, solver: str = "tsit5",
                       max_steps: int = 4096) -> dict:
    """log p_{t_min}(x) of the model's probability-flow ODE, in nats per example.

    Args:
      model_fn: ``model_fn(x, t, cond) -> prediction``.
      x: ``[B, ...]`` points (data scale); their density is that of the model's x_{t_min} (the data
        convolved with N(0, sigma(t_min)^2), scaled by alpha(t_min)).
      key: draws the Hutchinson probes (fixed over the whole solve, one set per example).
      divergence: ``hutchinson`` (unbiased, ``num_probes`` JVPs per evaluation) or ``exact`` (D JVPs).
      probe: ``rademacher`` (lower variance) or ``gaussian``.
      t_min: default ``default_t_min(schedule)`` (1e-3 for VP/sub-VP and the flow paths; 0 where sigma(0) > 0).
    Returns:
      dict with ``logp`` (``[B]``), ``prior_logp`` (``[B]``: log pi of the ODE's endpoint),
      ``delta_logp`` (``[B]``: the integral of the divergence and the alpha Jacobian), ``z``
      (the endpoint x(t_max), data space) and ``nfe`` (model evaluations, each with its JVPs).
    """
    import diffrax

    ode_solver = diffrax_solver(solver)
    if t_min is None:  # a flow path's sigma(0) = 0 is singular as the VP SDE's: start at 1e-3 as there
        t_min = 1e-3 if alpha_vanishes(schedule) else default_t_min(schedule)
    check_inputs(x, cond)
    den = denoiser(model_fn, schedule, prediction, cond)
    if not 0 <= t_min < t_max <= 1:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    if (zero_noise_at_zero(schedule) or alpha_vanishes(schedule)) and t_min <= 0:  # (class-based: the
        # schedule's numbers may be traced under jit)
        raise ValueError(f"sigma(t_min={t_min}) = 0: the ODE's density is singular there; use t_min > 0")
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    dt = x.dtype
    t_lo, t_hi = jnp.asarray(t_min, dt), jnp.asarray(t_max, dt)
    field, u0, u1, scale0, scale1 = ode_variables(den, schedule, t_lo, t_hi, dt)
    div_fn = divergence_fn(field, divergence, probe, num_probes)
    if divergence == "exact":
        probes = jnp.zeros((1,) + x.shape, dt)  # unused
    elif key is None:
        raise ValueError("divergence='hutchinson' needs a key for its probes")
    else:
        probes = _probe(key, (num_probes,) + x.shape, dt, probe)

    def rhs(u, y, args):
        v, div = div_fn(u, y[0], probes)
        return v, div

    def norm(err):  # step control on x only (see the module docstring)
        return jnp.sqrt(jnp.mean(err[0] ** 2))

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(rhs), ode_solver, t0=u0, t1=u1, dt0=(u1 - u0) / 32,
        y0=(x / scale0, jnp.zeros((x.shape[0],), dt)),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, norm=norm),
        saveat=diffrax.SaveAt(t1=True), max_steps=max_steps)
    xh1, integral = sol.ys[0][-1], sol.ys[1][-1]
    D = x[0].size
    z = xh1 * scale1
    std = jnp.sqrt(schedule.alpha(t_hi) ** 2 + schedule.sigma(t_hi) ** 2)
    zf = z.reshape(z.shape[0], -1)
    prior_logp = -0.5 * jnp.sum((zf / std) ** 2, -1) - D * (jnp.log(std) + 0.5 * math.log(2 * math.pi))
    delta = integral + D * (jnp.log(scale1) - jnp.log(scale0))
    return {"logp": prior_logp + delta, "prior_logp": prior_logp, "delta_logp": delta, "z": z,
            "nfe": nfe_of(sol, solver)}


def dequantize(x, key, num_levels: int):
    """Uniform dequantization: x on ``num_levels`` levels in [-1, 1] plus U(-1/(K-1), 1/(K-1)) noise (each
    level's bin, width 2/(K-1), the bins of the discretized decoder)."""
    half = 1.0 / (num_levels - 1)
    return x + jax.random.uniform(key, x.shape, x.dtype, -half, half)


def ode_bpd(model_fn: Callable, schedule: Schedule, x, key, *, num_levels: int, dequantize_data: bool = True,
            **options) -> dict:
    """Bits/dim of discrete data under the probability-flow ODE: with uniform dequantization over the K
    bins, ``-log2 P(x) <= E_u[-log2 p(x + u)] - D log2(2/(K-1))`` (Theis et al. 2016), so

        bpd = -log p(x + u) / (D ln 2) + log2((K - 1) / 2)

    (one u per example; average over examples). Without dequantization it is the continuous density's
    -log2 p / D. ``options`` go to :func:`ode_log_likelihood`. Returns its dict plus ``bpd [B]``."""
    if num_levels < 2:
        raise ValueError(f"num_levels must be >= 2, got {num_levels}")
    k_deq, k_ode = jax.random.split(key)
    if dequantize_data:
        x = dequantize(x, k_deq, num_levels)
    out = ode_log_likelihood(model_fn, schedule, x, k_ode, **options)
    D = x[0].size
    offset = math.log2((num_levels - 1) / 2) if dequantize_data else 0.0
    out["bpd"] = -out["logp"] / (D * LN2) + offset
    return out


def full_vlb_bpd(model_fn: Callable, schedule: Schedule, x0, key, *, num_steps: int | None = None,
                 prediction: str = "eps", num_levels: int = 256, variance: str = "fixed_small",
                 cond: Any = None):
    """The variational bound of every example in bits/dim, summing all T terms (one noise draw per term).

    ``-ELBO = KL(q(x_1|x0)||p(x_1)) + sum_{i} KL(q(x_{s_i}|x_{t_i},x0) || p(x_{s_i}|x_{t_i})) + decoder``
    on the grid t_i = i/T (Ho et al. 2020 eq. 5; Kingma et al. 2021 eq. 11 for sigma(0) > 0).

    Args:
      model_fn: ``model_fn(x, t, cond) -> prediction`` (plus variance channels for ``learned_range``).
      x0: ``[B, ...]`` data on ``num_levels`` levels in [-1, 1].
    Returns:
      dict with ``"total"``, ``"prior"``, ``"diffusion"``, ``"decoder"``, each ``[B]`` bits/dim.
    """
    if num_steps is None:
        if not isinstance(schedule, DiscreteSchedule):
            raise ValueError("full_vlb_bpd: a continuous schedule needs num_steps")
        num_steps = schedule.num_steps
    B, C, D = x0.shape[0], x0.shape[-1], x0[0].size
    dec_first = schedule.sigma(jnp.zeros(())) <= 0

    def step_term(i):
        k = jax.random.fold_in(key, i)
        t = jnp.full((B,), i / num_steps, x0.dtype)
        s = jnp.full((B,), (i - 1) / num_steps, x0.dtype)
        eps = jax.random.normal(k, x0.shape, x0.dtype)
        x_t = q_sample(schedule, x0, t, eps)
        out = model_fn(x_t, t, cond)
        pred, var_values = out[..., :C], (out[..., C:] if out.shape[-1] > C else None)
        x0_hat, _ = to_x0_eps_at(pred, prediction, x_t, schedule, t)
        log_var = p_variance(schedule, s, t, var_values, variance)
        term = vlb_term(schedule, x0, x_t, x0_hat, s, t, num_levels=num_levels, log_var=log_var,
                        decoder=jnp.logical_and(dec_first, i == 1))
        return term

    terms = jax.lax.map(step_term, jnp.arange(1, num_steps + 1))  # [T, B]
    eps0 = jax.random.normal(jax.random.fold_in(key, num_steps + 1), x0.shape, x0.dtype)
    decoder = jnp.where(dec_first, terms[0], vdm_decoder_nll(schedule, x0, eps0, num_levels))
    diffusion = terms.sum(0) - jnp.where(dec_first, terms[0], 0.0)
    prior = prior_kl(schedule, x0)
    to_bpd = 1.0 / (D * LN2)
    return {"total": (prior + diffusion + decoder) * to_bpd, "prior": prior * to_bpd,
            "diffusion": diffusion * to_bpd, "decoder": decoder * to_bpd}
