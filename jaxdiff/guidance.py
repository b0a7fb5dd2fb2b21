"""Guidance as transformers of model functions: every sampler takes the result as its ``model_fn``.

* :func:`cfg` -- classifier-free guidance (Ho & Salimans 2022): one batched forward pass on
  [conditional; unconditional] inputs, combined as ``uncond + scale * (cond - uncond)``; ``scale = 1`` is
  the plain conditional model, Ho & Salimans' ``w`` is ``scale - 1``. Optional guidance rescale
  (Lin et al. 2023) and a guidance interval in t (Kynkaanniemi et al. 2024).
* :func:`classifier_guidance` -- Dhariwal & Nichol 2021 (Algorithm 2, the score form):
  ``eps_hat = eps - sigma_t * scale * grad_x log p(y | x_t, t)``, the gradient by ``jax.grad``.

``scale`` may be a traced array: changing it does not recompile.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxdiff.forward import bcast
from jaxdiff.parameterization import check_prediction, from_x0_eps, rates_at, to_x0_eps
from jaxdiff.schedules import Schedule


def _null_like(cond, null_cond):
    if null_cond is not None:
        return jax.tree_util.tree_map(lambda c, n: jnp.broadcast_to(n, c.shape).astype(c.dtype), cond, null_cond)
    return jax.tree_util.tree_map(jnp.zeros_like, cond)


def cfg(model_fn: Callable, scale, *, null_cond: Any = None, rescale: float = 0.0,
        interval: tuple[float, float] | None = None, prediction: str = "eps",
        schedule: Schedule | None = None) -> Callable:
    """Classifier-free guidance of a conditional ``model_fn(x, t, cond)``.

    Args:
      model_fn: trained with condition dropout, so that ``null_cond`` gives the unconditional model.
      scale: guidance scale (1 = conditional; a traced array is fine).
      null_cond: the "no condition" value broadcast to ``cond`` (e.g. the null class index); zeros if None.
      rescale: guidance rescale phi of Lin et al. 2023 (needs ``schedule``; applied to x0-space std).
      interval: apply guidance only for t in [lo, hi], else return the conditional prediction.
      prediction: the model's output kind (rescale converts through x0).
    """
    check_prediction(prediction)
    if rescale and schedule is None:
        raise ValueError("cfg: rescale > 0 needs the schedule")

    def guided(x, t, cond=None):
        B = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (B,))
        both = jax.tree_util.tree_map(lambda c, n: jnp.concatenate([c, n]), cond, _null_like(cond, null_cond))
        out = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both)
        c, u = out[:B], out[B:]
        g = u + scale * (c - u)
        if rescale:
            r = rates_at(schedule, t, prediction)
            a, s = r[0], r[1]
            C = x.shape[-1]
            x0_g, _ = to_x0_eps(g[..., :C], prediction, x, *r)
            x0_c, _ = to_x0_eps(c[..., :C], prediction, x, *r)
            axes = tuple(range(1, x.ndim))
            std = lambda v: jnp.std(v, axis=axes, keepdims=True)
            x0_r = x0_g * std(x0_c) / jnp.maximum(std(x0_g), 1e-12)
            x0 = rescale * x0_r + (1 - rescale) * x0_g
            eps = (x - bcast(a, x) * x0) / bcast(s, x)
            g = g.at[..., :C].set(from_x0_eps(x0, eps, prediction, *r))
        if interval is not None:
            on = (t >= interval[0]) & (t <= interval[1])
            g = jnp.where(bcast(on, g), g, c)
        return g

    return guided


def classifier_log_prob_grad(classifier_fn: Callable, x, t, cond):
    """grad_x log p(y | x_t, t) of a noise-aware classifier ``classifier_fn(x_t, t) -> logits [B, K]`` at the
    labels y of ``cond`` (an int array ``[B]``, or a dict with ``"label"``): the one place jaxdiff takes this
    gradient, for :func:`classifier_guidance` (the score form) and the DDPM sampler's mean shift (Dhariwal
    & Nichol 2021, Algorithm 1). Each example's log-probability depends on its own x only, so the gradient
    of their sum is the per-example gradient."""
    y = cond["label"] if isinstance(cond, dict) else cond
    if y is None:
        raise ValueError("classifier guidance needs the class labels as cond")

    def log_p(x):
        return jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(classifier_fn(x, t), -1), y[:, None], -1))

    return jax.grad(log_p)(x)


def classifier_guidance(model_fn: Callable, classifier_fn: Callable, schedule: Schedule, scale,
                        *, prediction: str = "eps") -> Callable:
    """Noise-aware classifier guidance (Dhariwal & Nichol 2021, Algorithm 2 / the score form).

    Args:
      model_fn: the (unconditional or conditional) diffusion model, outputting ``prediction``.
      classifier_fn: ``classifier_fn(x_t, t) -> log-probabilities or logits [B, num_classes]``.
      schedule: the diffusion schedule (for sigma_t).
      scale: the classifier scale s (a traced array is fine).
    The label y is read from ``cond`` (an int array [B], or a dict with ``"label"``). The result outputs
    ``prediction`` with eps shifted by ``-sigma_t * s * grad_x log p(y | x_t, t)`` (score += s grad).
    """
    check_prediction(prediction)

    def guided(x, t, cond=None):
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
        out = model_fn(x, t, cond)
        C = x.shape[-1]
        r = rates_at(schedule, t, prediction)
        a, s = r[0], r[1]
        x0, eps = to_x0_eps(out[..., :C], prediction, x, *r)
        grad = classifier_log_prob_grad(classifier_fn, x, t, cond)
        eps = eps - bcast(s, x) * scale * grad
        x0 = (x - bcast(s, x) * eps) / bcast(a, x)
        new = from_x0_eps(x0, eps, prediction, *r)
        return jnp.concatenate([new, out[..., C:]], -1) if out.shape[-1] > C else new

    return guided
