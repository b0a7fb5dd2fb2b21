"""Preconditioning around any backbone network (Karras et al. 2022, "Elucidating the design space of
diffusion-based generative models", Sec. 5 and Table 1).

:class:`Preconditioned` wraps a backbone ``F(x, t, cond, train)`` (the U-Net, the text U-Net, a DiT) so that
the training loop and the samplers see a plain ``model_fn(x_t, t, cond)`` while the backbone sees inputs
and targets of unit variance at every noise level:

* ``kind="edm"``: on any schedule, with x_hat = x_t / alpha_t and sigma = sigma_t / alpha_t,
  D(x_hat; sigma) = c_skip(sigma) x_hat + c_out(sigma) F(c_in(sigma) x_hat; c_noise(sigma)), the denoiser of
  EDM's Table 1 (:func:`jaxdiff.parameterization.edm_precond`): the output is an x0-prediction, and the
  loss weighting ``edm`` (lambda = 1 / c_out^2 on the x0 error) makes the backbone's own error unit-weighted.
* ``kind="consistency"``: the same inputs with Song et al. (2023)'s c_skip / c_out
  (:func:`jaxdiff.consistency.consistency_coefs`), so that f(x, sigma_min) = x exactly at the schedule's t = 0.
* ``kind="sigma_scaled"``: NCSNv2's noise conditioning (Song & Ermon 2020, Technique 3): an unconditional
  network (its time input held at 0) whose output is divided by sigma_t, s(x, t) = F(x) / sigma_t, a
  score-prediction (-F is the network's eps).
* ``kind="input"``: only the input is scaled, c_in = 1 / sqrt(alpha_t^2 + sigma_t^2) (EDM's c_in with
  sigma_data = 1; the identity on VP schedules), and t passes through; the output keeps the config's
  parameterization. VE / NCSN models, whose x_t reaches sigma_max ~ 10-50, keep their first layers in range.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdiff.consistency import consistency_coefs
from jaxdiff.parameterization import edm_precond

PRECONDITIONINGS = ("none", "input", "edm", "sigma_scaled", "consistency")


def check_preconditioning(kind: str, prediction: str, sigma_data: float = 0.5):
    """ValueError naming the field when a preconditioning cannot train with this parameterization."""
    if kind not in PRECONDITIONINGS:
        raise ValueError(f"unknown diffusion.preconditioning {kind!r}; allowed: {list(PRECONDITIONINGS)}")
    if kind in ("edm", "consistency") and prediction != "x0":
        raise ValueError(f"diffusion.preconditioning={kind!r} makes the network a denoiser D(x; sigma), an x0-"
                         f"prediction: set diffusion.prediction='x0' (got {prediction!r})")
    if kind == "sigma_scaled" and prediction != "score":
        raise ValueError(f"diffusion.preconditioning='sigma_scaled' outputs F(x) / sigma, a score: set "
                         f"diffusion.prediction='score' (got {prediction!r})")
    if not sigma_data > 0:
        raise ValueError(f"diffusion.sigma_data={sigma_data}; allowed: the data's standard deviation, > 0")


class Preconditioned(nn.Module):
    """A backbone with EDM's preconditioning (``kind="edm"``) or input scaling only (``kind="input"``).

    Same call signature as the backbone, ``(x, t, cond=None, train=False)``; its params live under
    ``backbone``. ``config`` is the backbone's config (shapes, dropout)."""

    backbone: nn.Module
    schedule: Any
    kind: str = "edm"
    sigma_data: float = 0.5

    @property
    def config(self):
        return self.backbone.config

    def __call__(self, x, t, cond=None, train: bool = False):
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
        shape = (-1,) + (1,) * (x.ndim - 1)
        alpha, sigma_t = self.schedule.alpha(t), self.schedule.sigma(t)
        if self.kind == "input":
            c_in = 1.0 / jnp.sqrt(alpha**2 + sigma_t**2)
            return self.backbone(x * c_in.reshape(shape), t, cond, train)
        if self.kind == "sigma_scaled":
            f = self.backbone(x, jnp.zeros_like(t), cond, train).astype(jnp.float32)
            return f / sigma_t.reshape(shape)
        if self.kind not in ("edm", "consistency"):
            raise ValueError(f"unknown preconditioning kind {self.kind!r}; allowed: {list(PRECONDITIONINGS[1:])}")
        sigma = sigma_t / alpha
        # sigma = 0 (a grid's last point on VP schedules) is the identity D = x_hat; c_noise stays finite there.
        c_skip, c_out, c_in, c_noise = edm_precond(jnp.maximum(sigma, 1e-12), self.sigma_data)
        if self.kind == "consistency":  # f(x, sigma_min) = x exactly, sigma_min = the schedule's sigma at t = 0
            s_min = self.schedule.sigma(jnp.zeros(())) / self.schedule.alpha(jnp.zeros(()))
            c_skip, c_out = consistency_coefs(sigma, s_min, self.sigma_data)
        x_hat = x / alpha.reshape(shape)
        f = self.backbone((c_in.reshape(shape) * x_hat).astype(x.dtype), c_noise, cond, train)
        return c_skip.reshape(shape) * x_hat + c_out.reshape(shape) * f.astype(jnp.float32)
