"""Noise-aware classifier for classifier guidance (Dhariwal & Nichol 2021, Sec. 4): the U-Net's
encoder half, conditioned on t, pooled to class logits. ``NoisyClassifier(config)(x_t, t) -> [B, K]``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdiff.forward import q_sample
from jaxdiff.models.layers import AttentionBlock, Downsample, ResBlock, conv, group_norm, timestep_embedding
from jaxdiff.models.unet import DTYPES, UNetConfig
from jaxdiff.rng import Stream, per_example_keys, stream


class NoisyClassifier(nn.Module):
    """Encoder of the U-Net of ``config`` (same resolutions, res blocks, attention), then GroupNorm-SiLU,
    global average pooling and a dense layer to ``num_classes`` logits."""

    config: UNetConfig
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, t, train: bool = False):
        cfg = self.config
        kw = dict(dtype=DTYPES[cfg.dtype], param_dtype=DTYPES[cfg.param_dtype])
        ch = cfg.base_channels
        t = jnp.broadcast_to(jnp.asarray(t), (x.shape[0],))
        emb = nn.Dense(4 * ch, **kw)(timestep_embedding(t * cfg.time_scale, ch))
        emb = nn.Dense(4 * ch, **kw)(nn.silu(emb))
        h = conv(ch, cfg.dims, **kw)(x)
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                h = ResBlock(ch * mult, cfg.dropout, cfg.scale_shift, None, cfg.num_groups, **kw)(h, emb, train)
                if cfg.image_size // 2**level in cfg.attention_resolutions:
                    h = AttentionBlock(cfg.num_heads, cfg.head_channels, cfg.num_groups, **kw)(h)
            if level != len(cfg.channel_mult) - 1:
                h = Downsample(cfg.conv_resample, **kw)(h)
        h = nn.silu(group_norm(cfg.num_groups, h.shape[-1], **kw)(h))
        h = h.mean(axis=tuple(range(1, h.ndim - 1)))
        return nn.Dense(self.num_classes, **kw)(h).astype(jnp.float32)


def make_classifier_loss(apply_fn, schedule, t_min: float = 0.0):
    """``loss_fn(params, batch, key) -> (loss, metrics)``: cross-entropy of ``apply_fn(params, x_t, t)``
    on x_t ~ q(x_t | x0), t ~ U(t_min, 1), labels ``batch["label"]``; ``key`` is one key or per-example keys
    ``[B]`` (the training step's, folded from each example's global index: t from the ``TIME`` stream, eps
    from ``NOISE``, as in the diffusion loss)."""

    def loss_fn(params, batch, key):
        x0, y = batch["x"], batch["label"]
        keys = per_example_keys(key, x0.shape[0])
        t = jax.vmap(lambda k: jax.random.uniform(stream(k, Stream.TIME), minval=t_min, maxval=1.0))(keys)
        eps = jax.vmap(lambda k, x: jax.random.normal(stream(k, Stream.NOISE), x.shape, x.dtype))(keys, x0)
        logits = apply_fn(params, q_sample(schedule, x0, t, eps), t)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return ce.mean(), {"loss": ce, "accuracy": (logits.argmax(-1) == y).astype(jnp.float32), "t": t}

    return loss_fn
