"""Blocks shared by the 2-D and 1-D U-Nets and the classifier (Ho et al. 2020; Dhariwal & Nichol 2021).

All blocks work on channels-last arrays of any spatial rank (``[B, H, W, C]`` or ``[B, L, C]``), so the
1-D U-Net reuses them unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def timestep_embedding(t, dim: int, max_period: float = 10000.0, freq_shift: float = 0.0,
                       flip_sin_to_cos: bool = True):
    """Sinusoidal embedding of (possibly fractional) timesteps ``t [B]`` -> ``[B, dim]``
    (Vaswani et al. 2017, as in DDPM): [cos(t f_k), sin(t f_k)], f_k = max_period^{-k/(dim/2 - freq_shift)}.

    ``freq_shift = 1`` with ``flip_sin_to_cos = False`` ([sin, cos]) is the original DDPM code's embedding
    (diffusers' ``freq_shift`` / ``flip_sin_to_cos``, as ``google/ddpm-*`` checkpoints use it). Computed in
    float32, or float64 when ``t`` is."""
    half = dim // 2
    dt = jnp.promote_types(jnp.asarray(t).dtype, jnp.float32)
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=dt) / (half - freq_shift))
    args = t.astype(dt)[:, None] * freqs[None]
    pair = [jnp.cos(args), jnp.sin(args)]
    emb = jnp.concatenate(pair if flip_sin_to_cos else pair[::-1], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar (NCSN++ / Song et al. 2021b): [sin(2 pi W t), cos(2 pi W t)],
    W ~ N(0, scale^2) fixed (a parameter behind stop_gradient, so it never trains)."""

    dim: int
    scale: float = 16.0

    @nn.compact
    def __call__(self, t):
        w = self.param("W", lambda k: self.scale * jax.random.normal(k, (self.dim // 2,)))
        w = jax.lax.stop_gradient(w)
        args = 2 * jnp.pi * t.astype(jnp.float32)[:, None] * w[None]
        return jnp.concatenate([jnp.sin(args), jnp.cos(args)], -1)


def group_norm(num_groups: int, channels: int, dtype: Dtype, param_dtype: Dtype, name=None, eps: float = 1e-5):
    groups = min(num_groups, channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(num_groups=groups, dtype=dtype, param_dtype=param_dtype, epsilon=eps, name=name)


def conv(features: int, nd: int, kernel: int = 3, stride: int = 1, dtype=jnp.float32,
         param_dtype=jnp.float32, zero_init: bool = False, name=None, padding="SAME"):
    kw = {"kernel_init": nn.initializers.zeros} if zero_init else {}
    return nn.Conv(features, (kernel,) * nd, strides=(stride,) * nd, padding=padding, dtype=dtype,
                   param_dtype=param_dtype, name=name, **kw)


DOWNSAMPLE_PADDINGS = ("same", "symmetric")


class Downsample(nn.Module):
    """Halve every spatial axis: strided 3x3 conv (DDPM) or average pooling. The conv pads ``"same"`` (one
    row / column after, as the original DDPM code and diffusers' ``downsample_padding=0``) or
    ``"symmetric"`` (one on each side, as ADM and diffusers' ``downsample_padding=1``)."""

    use_conv: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    padding: str = "same"

    @nn.compact
    def __call__(self, x):
        nd = x.ndim - 2
        if self.use_conv:
            pad = "SAME" if self.padding == "same" else ((1, 1),) * nd
            return conv(x.shape[-1], nd, 3, 2, self.dtype, self.param_dtype, padding=pad)(x)
        return nn.avg_pool(x, (2,) * nd, (2,) * nd)


class Upsample(nn.Module):
    """Double every spatial axis by nearest-neighbour repetition, then an optional 3x3 conv."""

    use_conv: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        nd = x.ndim - 2
        for ax in range(1, nd + 1):
            x = jnp.repeat(x, 2, axis=ax)
        if self.use_conv:
            x = conv(x.shape[-1], nd, 3, 1, self.dtype, self.param_dtype)(x)
        return x


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + time embedding (added, or FiLM scale-shift), GroupNorm-SiLU-dropout-conv,
    with an optional up/down-sampling inside (BigGAN-style, ``resample``) and a 1x1 skip when the channel
    count changes. The last conv is zero-initialised so the block starts as the identity."""

    out_ch: int
    dropout: float = 0.0
    scale_shift: bool = False
    resample: Optional[str] = None  # None | "up" | "down"
    num_groups: int = 32
    skip_rescale: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    eps: float = 1e-5  # GroupNorm epsilon

    @nn.compact
    def __call__(self, x, emb, train: bool = False):
        nd = x.ndim - 2
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.silu(group_norm(self.num_groups, x.shape[-1], **kw, eps=self.eps)(x))
        if self.resample == "up":
            h, x = Upsample(False, **kw)(h), Upsample(False, **kw)(x)
        elif self.resample == "down":
            h, x = Downsample(False, **kw)(h), Downsample(False, **kw)(x)
        h = conv(self.out_ch, nd, **kw)(h)
        e = nn.Dense(2 * self.out_ch if self.scale_shift else self.out_ch, **kw)(nn.silu(emb))
        e = e.reshape(e.shape[:1] + (1,) * nd + e.shape[1:])
        norm = group_norm(self.num_groups, self.out_ch, **kw, eps=self.eps)
        if self.scale_shift:
            scale, shift = jnp.split(e, 2, axis=-1)
            h = norm(h) * (1 + scale) + shift
        else:
            h = norm(h + e)
        h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h))
        h = conv(self.out_ch, nd, zero_init=True, **kw)(h)
        if x.shape[-1] != self.out_ch:
            x = conv(self.out_ch, nd, 1, **kw)(x)
        out = x + h
        return out / math.sqrt(2.0) if self.skip_rescale else out


def attention(q, k, v):
    """Softmax attention ``[B, N, H, D]``: ``jax.nn.dot_product_attention`` (fused kernels where available),
    which takes the softmax in float32; float64 inputs (parity tests) take an exact float64 path instead."""
    if q.dtype != jnp.float64:
        return jax.nn.dot_product_attention(q, k, v)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions (and optional cross-attention to a context
    sequence ``[B, N, D]``) with ``jax.nn.dot_product_attention``; zero-initialised output projection."""

    num_heads: int = 1
    head_channels: Optional[int] = None  # overrides num_heads when set
    num_groups: int = 32
    skip_rescale: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    eps: float = 1e-5  # GroupNorm epsilon

    @nn.compact
    def __call__(self, x, context=None):
        B, C = x.shape[0], x.shape[-1]
        heads = C // self.head_channels if self.head_channels else self.num_heads
        if C % heads:
            raise ValueError(f"attention: {C} channels are not divisible into {heads} heads")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = group_norm(self.num_groups, C, **kw, eps=self.eps)(x).reshape(B, -1, C)
        qkv = nn.Dense(3 * C, **kw)(h).reshape(B, -1, 3, heads, C // heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        a = attention(q, k, v).reshape(B, -1, C)
        if context is not None:
            hc = nn.LayerNorm(**kw)(a + h)
            q = nn.Dense(C, **kw)(hc).reshape(B, -1, heads, C // heads)
            kv = nn.Dense(2 * C, **kw)(context.astype(self.dtype)).reshape(B, -1, 2, heads, C // heads)
            a = a + attention(q, kv[:, :, 0], kv[:, :, 1]).reshape(B, -1, C)
        out = nn.Dense(C, kernel_init=nn.initializers.zeros, **kw)(a).reshape(x.shape)
        out = x + out
        return out / math.sqrt(2.0) if self.skip_rescale else out
