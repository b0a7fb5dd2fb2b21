"""Consistency models (Song et al. 2023) and the improved consistency training recipe (iCT, Song & Dhariwal 2023).

Noise levels are EDM's sigma (x_sigma = x0 + sigma z; jaxdiff's ``EDMSchedule``, where uniform t is Karras' grid).
A consistency model maps any point of a probability-flow trajectory to the trajectory's point at sigma_min:

    f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(x, sigma),
    c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2),
    c_out = sigma_data (sigma - sigma_min) / sqrt(sigma_data^2 + sigma^2),

so f(x, sigma_min) = x exactly (the boundary condition). Training compares f at adjacent levels sigma_i <
sigma_{i+1} of a discretisation: consistency distillation (CD) moves x_{i+1} to sigma_i with one ODE step of a
teacher; consistency training (CT) uses the same noise z at both levels (x_i = x0 + sigma_i z). The target is
f at sigma_i with a target network (CD: an EMA of the student; iCT: the student itself behind stop-gradient).

iCT: the pseudo-Huber distance sqrt(||a - b||^2 + c^2) - c with c = 0.00054 sqrt(d), the weight 1 / (sigma_{i+1} -
sigma_i), the discretisation index drawn with probability proportional to the log-normal mass (P_mean = -1.1,
P_std = 2.0) between adjacent levels, Karras' grid (rho = 7), and the number of levels doubling from s0 = 10 to
s1 = 1280 over training.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from jaxdiff.forward import bcast
from jaxdiff.rng import Stream, per_example_keys, stream
from jaxdiff.samplers.edm import pf_ode_step
from jaxdiff.samplers.timegrids import karras_sigmas


def consistency_coefs(sigma, sigma_min: float = 0.002, sigma_data: float = 0.5):
    """``(c_skip, c_out)`` of the consistency parameterization (Song et al. 2023, appendix C)."""
    sd2 = sigma_data**2
    c_skip = sd2 / ((sigma - sigma_min) ** 2 + sd2)
    c_out = sigma_data * (sigma - sigma_min) / jnp.sqrt(sd2 + sigma**2)
    return c_skip, c_out


def consistency_fn(net_fn: Callable, sigma_min: float = 0.002, sigma_data: float = 0.5) -> Callable:
    """``f(x, sigma) = c_skip x + c_out net_fn(x, sigma)`` from any ``net_fn(x, sigma [B]) -> F``."""

    def f(x, sigma):
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:1])
        c_skip, c_out = consistency_coefs(sigma, sigma_min, sigma_data)
        return bcast(c_skip, x) * x + bcast(c_out, x) * net_fn(x, sigma)

    return f


def karras_levels(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
    """The n increasing levels sigma_1 = sigma_min < ... < sigma_n = sigma_max of Karras' grid (the paper's
    index order): :func:`jaxdiff.samplers.timegrids.karras_sigmas` with its ends exchanged, so the ramp runs
    from sigma_min up (the same levels as reversing it, and bitwise those consistency runs were trained on)."""
    return karras_sigmas(n, sigma_max, sigma_min, rho)


def ict_num_levels(step, total_steps: int, s0: int = 10, s1: int = 1280):
    """iCT's curriculum: N(k) = min(s0 2^floor(k / K'), s1) + 1 levels at step k, K' = floor(K / (log2(s1/s0) + 1))."""
    k_prime = math.floor(total_steps / (math.log2(s1 // s0) + 1))
    doublings = jnp.floor(jnp.asarray(step) / max(k_prime, 1))
    return (jnp.minimum(s0 * 2.0**doublings, s1) + 1).astype(jnp.int32)


def lognormal_index_probs(sigmas, p_mean: float = -1.1, p_std: float = 2.0):
    """p(i) for the pairs (sigma_i, sigma_{i+1}), i = 1..N-1: proportional to the log-normal mass between them,
    erf((log sigma_{i+1} - P_mean) / (sqrt 2 P_std)) - erf((log sigma_i - P_mean) / (sqrt 2 P_std))."""
    cdf = erf((jnp.log(sigmas) - p_mean) / (math.sqrt(2.0) * p_std))
    mass = cdf[1:] - cdf[:-1]
    return mass / mass.sum()


def pseudo_huber(a, b, c):
    """sqrt(||a - b||^2 + c^2) - c per example (iCT's distance; ~ the L2 distance for large errors, ~ L2^2 / 2c
    near zero)."""
    d2 = jnp.sum((a - b) ** 2, axis=tuple(range(1, a.ndim)))
    return jnp.sqrt(d2 + c**2) - c


def ict_c(dim: int) -> float:
    """iCT's pseudo-Huber constant c = 0.00054 sqrt(d) (d: the data's dimension; 0.03 for CIFAR-10)."""
    return 0.00054 * math.sqrt(dim)


def ict_weight(sigma_i, sigma_next):
    """iCT's weighting lambda(sigma_i) = 1 / (sigma_{i+1} - sigma_i)."""
    return 1.0 / (sigma_next - sigma_i)


def make_ct_loss(f_apply: Callable, total_steps: int, *, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 rho: float = 7.0, s0: int = 10, s1: int = 1280, p_mean: float = -1.1, p_std: float = 2.0,
                 distance: str = "pseudo_huber") -> Callable:
    """iCT's loss ``loss_fn(params, batch, key, step) -> (loss, metrics)``: ``f_apply(params, x, sigma [B]) -> f``.
    The target f(x_i, sigma_i) is the student itself behind stop-gradient (no EMA teacher)."""

    def loss_fn(params, batch, key, step):
        x0 = jnp.asarray(batch["x"])
        B = x0.shape[0]
        keys = per_example_keys(key, B)
        n = ict_num_levels(step, total_steps, s0, s1)
        sig = _levels_dynamic(n, s1 + 1, sigma_min, sigma_max, rho)  # a static shape: the first n are the levels
        probs = jnp.where(jnp.arange(s1) < n - 1, lognormal_index_probs(sig, p_mean, p_std), 0.0)
        probs = probs / probs.sum()
        i = jax.vmap(lambda k: jax.random.choice(stream(k, Stream.TIME), s1, p=probs))(keys)
        s_i, s_next = sig[i], sig[i + 1]
        z = jax.vmap(lambda k, x: jax.random.normal(stream(k, Stream.NOISE), x.shape, x.dtype))(keys, x0)
        pred = f_apply(params, x0 + bcast(s_next, x0) * z, s_next)
        target = jax.lax.stop_gradient(f_apply(params, x0 + bcast(s_i, x0) * z, s_i))
        d = pseudo_huber(pred, target, ict_c(x0[0].size)) if distance == "pseudo_huber" else \
            jnp.sum((pred - target) ** 2, axis=tuple(range(1, x0.ndim)))
        loss = ict_weight(s_i, s_next) * d
        return loss.mean(), {"loss": loss, "num_levels": n, "sigma": s_next}

    return loss_fn


def _levels_dynamic(n, size: int, sigma_min, sigma_max, rho):
    """Karras' n levels, increasing, padded to ``size`` entries with sigma_max (n traced)."""
    j = jnp.minimum(jnp.arange(size) / jnp.maximum(n - 1, 1), 1.0)
    return karras_sigmas(size, sigma_max, sigma_min, rho, ramp=j)


def cd_pair(teacher_step: Callable, x0, z, s_i, s_next):
    """CD's pair: x_{i+1} = x0 + sigma_{i+1} z and the teacher's one ODE step of it down to sigma_i."""
    x_next = x0 + bcast(s_next, x0) * z
    return x_next, teacher_step(x_next, s_next, s_i)


def make_cd_loss(f_apply: Callable, teacher_step: Callable, levels, *, distance: str = "l2") -> Callable:
    """Consistency distillation ``loss_fn(params, target_params, batch, key) -> (loss, metrics)``:
    d(f_theta(x_{i+1}, sigma_{i+1}), f_target(x_hat_i, sigma_i)) with i uniform over the fixed ``levels`` and
    x_hat_i the teacher's ODE step (``teacher_step(x, sigma_from, sigma_to)``: any jaxdiff ODE solver step)."""
    levels = jnp.asarray(levels)

    def loss_fn(params, target_params, batch, key):
        x0 = jnp.asarray(batch["x"])
        keys = per_example_keys(key, x0.shape[0])
        i = jax.vmap(lambda k: jax.random.randint(stream(k, Stream.TIME), (), 0, len(levels) - 1))(keys)
        s_i, s_next = levels[i], levels[i + 1]
        z = jax.vmap(lambda k, x: jax.random.normal(stream(k, Stream.NOISE), x.shape, x.dtype))(keys, x0)
        x_next, x_hat = cd_pair(teacher_step, x0, z, s_i, s_next)
        pred = f_apply(params, x_next, s_next)
        target = jax.lax.stop_gradient(f_apply(target_params, jax.lax.stop_gradient(x_hat), s_i))
        d = pseudo_huber(pred, target, ict_c(x0[0].size)) if distance == "pseudo_huber" else \
            jnp.sum((pred - target) ** 2, axis=tuple(range(1, x0.ndim)))
        return d.mean(), {"loss": d, "sigma": s_next}

    return loss_fn


def euler_step(denoiser: Callable):
    """The PF-ODE's Euler step sigma -> sigma' (dx/dsigma = (x - D(x, sigma)) / sigma) from a denoiser
    ``D(x, sigma [B])``: the samplers' :func:`~jaxdiff.samplers.edm.pf_ode_step`."""
    return lambda x, s, s_to: pf_ode_step(denoiser, x, s, s_to, second_order=False)


def heun_step(denoiser: Callable):
    """Heun's second-order step of the PF-ODE (EDM's Algorithm 1 without churn), the samplers' step."""
    return lambda x, s, s_to: pf_ode_step(denoiser, x, s, s_to, second_order=True)
