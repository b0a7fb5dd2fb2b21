"""A network that sees what is observed: the conditional imputation model of CSDI (Tashiro et al. 2021).

:class:`ImputationNet` wraps any backbone (U-Net, 1-D U-Net, DiT) whose input has three times the data's
channels: the noisy values where nothing is observed, ``(1 - m) x_t``, the observed values ``m x_obs`` (zero
where unobserved) and the mask ``m`` (1 = observed), concatenated on the channel axis
(:func:`conditional_input`); it outputs the data's channels. The condition is the dict
``{"obs": x_obs, "mask": m}`` (optionally ``"label"`` for a class-conditional backbone), so every sampler runs
it unchanged by passing that dict as its ``cond``; ``cond=None`` means nothing observed (unconditional
samples, as the training loop's sample grids draw).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp


def conditional_input(x_t, x_obs, mask):
    """``concat([(1 - m) x_t, m x_obs, m], -1)``: CSDI's input, where the network never sees noisy values at
    observed entries nor observed values at unobserved ones. ``mask`` broadcasts to ``x_t``."""
    m = jnp.broadcast_to(jnp.asarray(mask, x_t.dtype), x_t.shape)
    return jnp.concatenate([(1 - m) * x_t, m * jnp.asarray(x_obs, x_t.dtype), m], axis=-1)


def split_condition(cond, x):
    """``(x_obs, mask, label)`` of an imputation condition: a dict ``{"obs", "mask"[, "label"]}``; ``None`` or
    a bare label (class-conditional sample grids) is nothing observed."""
    if cond is None or not isinstance(cond, dict):
        z = jnp.zeros_like(x)
        return z, z, cond
    if not {"obs", "mask"} <= set(cond):
        raise ValueError(f"a conditional imputation model takes cond={{'obs': x_obs, 'mask': m[, 'label': y]}}; "
                         f"got a dict with keys {sorted(cond)}")
    return cond["obs"], cond["mask"], cond.get("label")


class ImputationNet(nn.Module):
    """``backbone`` (input channels 3 C, output C) applied to :func:`conditional_input`. ``config`` is the
    backbone's config with the data's ``in_channels = C`` (shapes for samplers and grids)."""

    backbone: nn.Module
    data_channels: int

    @property
    def config(self):
        return dataclasses.replace(self.backbone.config, in_channels=self.data_channels, out_channels=None)

    def __call__(self, x, t, cond=None, train: bool = False):
        x_obs, mask, label = split_condition(cond, x)
        return self.backbone(conditional_input(x, x_obs, mask), t, label, train)


def takes_observations(model) -> bool:
    """Whether ``model`` (possibly inside wrappers with a ``backbone``, such as
    :class:`~jaxdiff.models.precond.Preconditioned`) is an :class:`ImputationNet`: a conditional imputation
    model, which takes the observed values and mask as its condition."""
    while model is not None:
        if isinstance(model, ImputationNet):
            return True
        model = getattr(model, "backbone", None)
    return False
