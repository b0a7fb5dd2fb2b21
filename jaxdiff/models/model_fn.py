"""The DESIGN's ``model_fn(x, t, cond)`` contract from a Flax network and its params."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def model_fn_for(model, params, *, train: bool = False, dropout_keys=None):
    """``model_fn(x, t, cond)`` from a network and its params (the DESIGN's model_fn contract).

    In training with dropout, ``dropout_keys [B]`` give each example its own dropout key: the network is
    applied per example under ``vmap``, so dropout does not depend on how the batch is split over devices.
    """
    per_example = train and dropout_keys is not None and getattr(getattr(model, "config", None), "dropout", 0)

    def model_fn(x, t, cond=None):
        if not per_example:
            return model.apply({"params": params}, x, t, cond, train=train)

        def one(x, t, c, k):
            c = jax.tree_util.tree_map(lambda a: a[None], c)
            return model.apply({"params": params}, x[None], t[None], c, train=True, rngs={"dropout": k})[0]

        return jax.vmap(one)(x, jnp.broadcast_to(t, x.shape[:1]), cond, dropout_keys)

    return model_fn
