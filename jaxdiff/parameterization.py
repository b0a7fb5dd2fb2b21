"""Conversions between the eps, x0, v, score and velocity parameterizations, and EDM preconditioning.

With ``x_t = alpha x0 + sigma eps``::

  eps   = (x_t - alpha x0) / sigma                       x0 = (x_t - sigma eps) / alpha
  v     = alpha eps - sigma x0  (Salimans & Ho 2022)     score = grad log p(x_t) = -eps / sigma

For non-VP schedules v keeps that definition and x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2),
eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2), so v stays finite where alpha = 0 (zero terminal SNR).

``velocity`` is flow matching's u = dx_t/dt = alpha' x0 + sigma' eps (u = eps - x0 on the linear path;
Lipman et al. 2023, Liu et al. 2023, SiT). Its conversions need the schedule's time derivatives, so they
take ``rates = (alpha, sigma, alpha', sigma')`` from ``schedule.rates(t)`` (the helpers ``*_at`` take the
schedule and t): with D = alpha sigma' - sigma alpha' (= 1 on the linear path)::

  x0 = (sigma' x_t - sigma u) / D,    eps = (alpha u - alpha' x_t) / D,

finite at both ends of a flow path (D > 0 there), so a velocity model samples from t = 1 exactly.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from jaxdiff.forward import bcast
from jaxdiff.schedules import Schedule

PREDICTIONS = ("eps", "x0", "v", "score", "velocity")


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; allowed: {list(PREDICTIONS)}")
    return prediction


def _derivatives(prediction, dalpha, dsigma):
    if prediction == "velocity" and (dalpha is None or dsigma is None):
        raise ValueError("prediction 'velocity' needs the schedule's time derivatives: pass dalpha and dsigma "
                         "(schedule.rates(t)) or use the *_at helpers with the schedule and t")


def to_x0_eps(pred, prediction: str, x_t, alpha, sigma, dalpha=None, dsigma=None):
    """Convert a model output of kind ``prediction`` to ``(x0_hat, eps_hat)``.

    Args:
      pred, x_t: ``[B, ...]``; alpha, sigma (and for ``velocity`` their time derivatives dalpha, dsigma):
        ``[B]`` or scalars.
    """
    check_prediction(prediction)
    _derivatives(prediction, dalpha, dsigma)
    a, s = bcast(alpha, x_t), bcast(sigma, x_t)
    if prediction == "velocity":
        da, ds = bcast(dalpha, x_t), bcast(dsigma, x_t)
        det = a * ds - s * da
        return (ds * x_t - s * pred) / det, (a * pred - da * x_t) / det
    if prediction == "eps":
        eps = pred
        x0 = (x_t - s * eps) / a
    elif prediction == "x0":
        x0 = pred
        eps = (x_t - a * x0) / s
    elif prediction == "v":
        n = a**2 + s**2
        x0 = (a * x_t - s * pred) / n
        eps = (s * x_t + a * pred) / n
    else:  # score
        eps = -s * pred
        x0 = (x_t - s * eps) / a
    return x0, eps


def from_x0_eps(x0, eps, prediction: str, alpha, sigma, dalpha=None, dsigma=None):
    """The target of kind ``prediction`` given the true ``x0`` and ``eps``."""
    check_prediction(prediction)
    _derivatives(prediction, dalpha, dsigma)
    ref = eps if x0 is None else x0
    a, s = bcast(alpha, ref), bcast(sigma, ref)
    return {"eps": lambda: eps, "x0": lambda: x0, "v": lambda: a * eps - s * x0,
            "score": lambda: -eps / s,
            "velocity": lambda: bcast(dalpha, ref) * x0 + bcast(dsigma, ref) * eps}[prediction]()


def convert(pred, src: str, dst: str, x_t, alpha, sigma, dalpha=None, dsigma=None):
    """Convert a prediction of kind ``src`` into kind ``dst`` at ``(x_t, alpha, sigma)`` (and the derivatives
    for ``velocity``)."""
    if src == dst:
        check_prediction(src)
        return pred
    x0, eps = to_x0_eps(pred, src, x_t, alpha, sigma, dalpha, dsigma)
    return from_x0_eps(x0, eps, dst, alpha, sigma, dalpha, dsigma)


def rates_at(schedule: Schedule, t, prediction: str):
    """``(alpha, sigma, dalpha, dsigma)`` at t; the derivatives only where ``prediction`` needs them."""
    if prediction == "velocity":
        return schedule.rates(t)
    return schedule.alpha(t), schedule.sigma(t), None, None


def to_x0_eps_at(pred, prediction: str, x_t, schedule: Schedule, t):
    """:func:`to_x0_eps` at time ``t`` of ``schedule``."""
    return to_x0_eps(pred, prediction, x_t, *rates_at(schedule, t, prediction))


def from_x0_eps_at(x0, eps, prediction: str, schedule: Schedule, t):
    """:func:`from_x0_eps` at time ``t`` of ``schedule``."""
    return from_x0_eps(x0, eps, prediction, *rates_at(schedule, t, prediction))


def x0_eps_fn(model_fn: Callable, schedule: Schedule, prediction: str = "eps") -> Callable:
    """Wrap ``model_fn(x, t, cond)`` (outputting ``prediction``) into ``f(x, t, cond) -> (x0, eps)``.

    Extra output channels (learned variance) are dropped: only the first ``x.shape[-1]`` are used.
    """
    check_prediction(prediction)

    def fn(x, t, cond=None):
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
        out = model_fn(x, t, cond)[..., : x.shape[-1]]
        return to_x0_eps_at(out, prediction, x, schedule, t)

    return fn


def clip_x0_model_fn(model_fn: Callable, schedule: Schedule, prediction: str = "eps",
                     clip: float = 1.0) -> Callable:
    """A model_fn of the same ``prediction`` whose implied x0 is clipped to [-clip, clip] ("clip_denoised",
    Ho et al. 2020): data live in [-1, 1], and near t = 1, where alpha_t -> 0, an eps-model's x0 =
    (x - sigma eps)/alpha amplifies any eps error by 1/alpha. Works with every sampler; extra (variance)
    channels pass through."""
    check_prediction(prediction)

    def fn(x, t, cond=None):
        out = model_fn(x, t, cond)
        C = x.shape[-1]
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
        r = rates_at(schedule, t, prediction)
        x0, eps = to_x0_eps(out[..., :C], prediction, x, *r)
        x0 = jnp.clip(x0, -clip, clip)
        eps = jnp.where(bcast(r[1] > 0, x), (x - bcast(r[0], x) * x0) / bcast(r[1], x), eps)
        new = from_x0_eps(x0, eps, prediction, *r)
        return jnp.concatenate([new, out[..., C:]], -1) if out.shape[-1] > C else new

    return fn


def edm_precond(sigma, sigma_data: float = 0.5):
    """EDM preconditioning (Karras et al. 2022, Table 1): ``(c_skip, c_out, c_in, c_noise)`` for
    D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)."""
    s2, sd2 = sigma**2, sigma_data**2
    c_skip = sd2 / (s2 + sd2)
    c_out = sigma * sigma_data / jnp.sqrt(s2 + sd2)
    c_in = 1 / jnp.sqrt(s2 + sd2)
    c_noise = jnp.log(sigma) / 4
    return c_skip, c_out, c_in, c_noise


def edm_model_fn(net_fn: Callable, schedule: Schedule, sigma_data: float = 0.5) -> Callable:
    """An x0-prediction ``model_fn(x_t, t, cond)`` from a raw network ``net_fn(x, c_noise, cond)`` with
    EDM preconditioning on any schedule: x_hat = x_t / alpha_t has noise level sigma = sigma_t / alpha_t."""

    def model_fn(x_t, t, cond=None):
        alpha, sigma_t = schedule.alpha(t), schedule.sigma(t)
        sigma = sigma_t / alpha
        c_skip, c_out, c_in, c_noise = edm_precond(sigma, sigma_data)
        x_hat = x_t / bcast(alpha, x_t)
        return bcast(c_skip, x_t) * x_hat + bcast(c_out, x_t) * net_fn(bcast(c_in, x_t) * x_hat,
                                                                         c_noise, cond)

    return model_fn
