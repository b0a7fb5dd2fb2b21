"""The LDM / Stable Diffusion KL autoencoder (Rombach et al. 2022; diffusers' ``AutoencoderKL``) in
flax.linen, and the import of PyTorch state dicts in the diffusers layout.

Encoder: conv_in -> per level ``layers_per_block`` ResNet blocks (+ a stride-2 downsample except at the
last level) -> mid block (ResNet, single-head self-attention, ResNet) -> GroupNorm, SiLU, conv_out to
2 x latent channels -> 1x1 quant_conv: the mean and log-variance of a diagonal Gaussian posterior
(log-variance clipped to [-30, 20]). Decoder: 1x1 post_quant_conv -> conv_in -> mid block -> per level
(reversed) ``layers_per_block + 1`` ResNet blocks (+ nearest x2 upsample and conv except at the last)
-> GroupNorm, SiLU, conv_out. The downsampling factor is f = 2^(levels - 1) (4 or 8 in LDM).

Submodule names mirror diffusers' (``down_blocks_0/resnets_1/conv1``), so a state dict maps onto the
params by rule (:func:`params_from_torch`); channels-last (NHWC) here, NCHW there.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: Sequence[int] = (128, 256, 512, 512)  # Stable Diffusion's (f = 8)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215  # latents are multiplied by it before diffusion (1 / their std)
    mid_block_add_attention: bool = True

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def validate(self):
        if not self.block_out_channels or self.layers_per_block < 1 or self.latent_channels < 1:
            raise ValueError("block_out_channels must be non-empty, layers_per_block and latent_channels >= 1")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} are not divisible by norm_num_groups={self.norm_num_groups}")
        return self


def _norm(groups, name=None):
    return nn.GroupNorm(num_groups=groups, epsilon=1e-6, name=name)


def _conv(ch, k=3, stride=1, padding="SAME", name=None):
    return nn.Conv(ch, (k, k), (stride, stride), padding=padding, name=name)


class ResnetBlock(nn.Module):
    out_ch: int
    groups: int

    @nn.compact
    def __call__(self, x):
        h = _conv(self.out_ch, name="conv1")(nn.silu(_norm(self.groups, "norm1")(x)))
        h = _conv(self.out_ch, name="conv2")(nn.silu(_norm(self.groups, "norm2")(h)))
        if x.shape[-1] != self.out_ch:
            x = _conv(self.out_ch, 1, name="conv_shortcut")(x)
        return x + h


class Attention(nn.Module):
    """Single-head self-attention over positions with a GroupNorm in front and a residual (diffusers'
    VAE mid-block attention)."""

    groups: int

    @nn.compact
    def __call__(self, x):
        B, H, W, C = x.shape
        h = _norm(self.groups, "group_norm")(x).reshape(B, H * W, C)
        q, k, v = (nn.Dense(C, name=n)(h) for n in ("to_q", "to_k", "to_v"))
        w = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", q, k) / np.sqrt(C), axis=-1)
        out = nn.Dense(C, name="to_out_0")(jnp.einsum("bqk,bkc->bqc", w, v))
        return x + out.reshape(B, H, W, C)


class MidBlock(nn.Module):
    ch: int
    groups: int
    attention: bool = True

    @nn.compact
    def __call__(self, x):
        x = ResnetBlock(self.ch, self.groups, name="resnets_0")(x)
        if self.attention:
            x = Attention(self.groups, name="attentions_0")(x)
        return ResnetBlock(self.ch, self.groups, name="resnets_1")(x)


class Downsample(nn.Module):
    ch: int

    @nn.compact
    def __call__(self, x):  # pad right/bottom by one, 3x3 stride 2 (diffusers' padding=0 path)
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return _conv(self.ch, 3, 2, "VALID", name="conv")(x)


class Upsample(nn.Module):
    ch: int

    @nn.compact
    def __call__(self, x):
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return _conv(self.ch, name="conv")(x)


class Encoder(nn.Module):
    cfg: AutoencoderConfig

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        h = _conv(c.block_out_channels[0], name="conv_in")(x)
        for i, ch in enumerate(c.block_out_channels):
            for j in range(c.layers_per_block):
                h = ResnetBlock(ch, c.norm_num_groups, name=f"down_blocks_{i}_resnets_{j}")(h)
            if i != len(c.block_out_channels) - 1:
                h = Downsample(ch, name=f"down_blocks_{i}_downsamplers_0")(h)
        h = MidBlock(c.block_out_channels[-1], c.norm_num_groups, c.mid_block_add_attention, name="mid_block")(h)
        h = nn.silu(_norm(c.norm_num_groups, "conv_norm_out")(h))
        return _conv(2 * c.latent_channels, name="conv_out")(h)


class Decoder(nn.Module):
    cfg: AutoencoderConfig

    @nn.compact
    def __call__(self, z):
        c = self.cfg
        chans = list(reversed(c.block_out_channels))
        h = _conv(chans[0], name="conv_in")(z)
        h = MidBlock(chans[0], c.norm_num_groups, c.mid_block_add_attention, name="mid_block")(h)
        for i, ch in enumerate(chans):
            for j in range(c.layers_per_block + 1):
                h = ResnetBlock(ch, c.norm_num_groups, name=f"up_blocks_{i}_resnets_{j}")(h)
            if i != len(chans) - 1:
                h = Upsample(ch, name=f"up_blocks_{i}_upsamplers_0")(h)
        h = nn.silu(_norm(c.norm_num_groups, "conv_norm_out")(h))
        return _conv(c.out_channels, name="conv_out")(h)


class AutoencoderKL(nn.Module):
    """``encode(x) -> (mean, logvar)`` of q(z|x) (unscaled latents), ``decode(z) -> x``; ``__call__(x, key)``
    samples z ~ q(z|x) and returns ``(x_rec, mean, logvar)``. Images NHWC in [-1, 1]."""

    config: AutoencoderConfig

    def setup(self):
        c = self.config
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.quant_conv = nn.Conv(2 * c.latent_channels, (1, 1))
        self.post_quant_conv = nn.Conv(c.latent_channels, (1, 1))

    def encode(self, x):
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))

    def __call__(self, x, key=None):
        mean, logvar = self.encode(x)
        z = mean if key is None else mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
        return self.decode(z), mean, logvar


def kl_to_standard_normal(mean, logvar):
    """KL(N(mean, e^logvar) || N(0, 1)) summed over all but the batch axis (LDM's posterior.kl())."""
    return 0.5 * jnp.sum(mean**2 + jnp.exp(logvar) - 1.0 - logvar, axis=tuple(range(1, mean.ndim)))


# ---------------------------------------------------------------------------------------------------
# PyTorch (diffusers) state dicts
# ---------------------------------------------------------------------------------------------------


def _flax_path(torch_key: str) -> tuple[tuple[str, ...], str]:
    """``encoder.down_blocks.0.resnets.1.conv1.weight`` -> (("encoder", "down_blocks_0_resnets_1", "conv1"),
    "weight"); numeric parts join the name before them, and down/up block parts are merged into one
    module name as in :class:`Encoder` / :class:`Decoder`."""
    parts = torch_key.split(".")
    names: list[str] = []
    for p in parts[:-1]:
        if p.isdigit():
            names[-1] = f"{names[-1]}_{p}"
        else:
            names.append(p)
    merged: list[str] = []
    for n in names:
        if merged and re.match(r"(down|up)_blocks_\d+$", merged[-1]) \
                and re.match(r"(resnets|downsamplers|upsamplers)_\d+$", n):
            merged[-1] = f"{merged[-1]}_{n}"
        else:
            merged.append(n)
    return tuple(merged), parts[-1]


def params_from_torch(state_dict: dict, params: Any) -> Any:
    """jaxdiff AutoencoderKL params from a diffusers ``AutoencoderKL`` state dict (tensors or arrays).

    Conv weights [O, I, kh, kw] -> [kh, kw, I, O]; linear [O, I] -> [I, O]; GroupNorm weight -> scale.
    Every parameter of ``params`` must be matched, with its shape: a missing or mis-shaped tensor raises
    ValueError naming it (the first one, in the model's order); extra tensors in the state dict are
    reported the same way.
    """
    flat = {jax.tree_util.keystr(p, simple=True, separator="/"): v
            for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        path, leaf = _flax_path(key)
        base = "/".join(path)
        if leaf == "weight":
            if f"{base}/kernel" in flat:
                name = f"{base}/kernel"
                arr = arr.transpose(2, 3, 1, 0) if arr.ndim == 4 else arr.T
            else:
                name = f"{base}/scale"
        elif leaf == "bias":
            name = f"{base}/bias"
        else:
            raise ValueError(f"state dict entry {key!r} is not a weight or bias")
        if name not in flat:
            raise ValueError(f"state dict entry {key!r} has no counterpart in the model (looked for {name}); "
                             "is it a diffusers AutoencoderKL of the same config?")
        if tuple(arr.shape) != tuple(flat[name].shape):
            raise ValueError(f"state dict entry {key!r} has shape {tuple(value.shape)}, which does not fit the "
                             f"model's {name} of shape {tuple(flat[name].shape)}")
        out[name] = arr.astype(np.asarray(flat[name]).dtype)
    missing = [n for n in flat if n not in out]
    if missing:
        raise ValueError(f"state dict is missing {len(missing)} tensors the model needs, first {missing[0]!r}")
    leaves = [jnp.asarray(out[jax.tree_util.keystr(p, simple=True, separator="/")])
              for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), leaves)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017; LDM's ``NLayerDiscriminator``): a 4x4 stride-2 conv with
    LeakyReLU(0.2), ``n_layers - 1`` more doubling the width (capped at 8x) with a norm, a stride-1 conv, and
    a 1-channel conv: one real/fake logit per overlapping patch ``[B, h, w, 1]``. GroupNorm replaces LDM's
    ActNorm/BatchNorm so that the train step stays a pure function (no running statistics)."""

    base_channels: int = 64
    n_layers: int = 3
    norm_groups: int = 32

    @nn.compact
    def __call__(self, x):
        h = nn.leaky_relu(nn.Conv(self.base_channels, (4, 4), (2, 2), padding=1)(x), 0.2)
        for i in range(1, self.n_layers + 1):
            ch = self.base_channels * min(2**i, 8)
            stride = 2 if i < self.n_layers else 1
            h = nn.Conv(ch, (4, 4), (stride, stride), padding=1, use_bias=False)(h)
            h = nn.leaky_relu(nn.GroupNorm(num_groups=min(self.norm_groups, ch))(h), 0.2)
        out = nn.Conv(1, (4, 4), padding=1)(h)
        if out.shape[1] < 1 or out.shape[2] < 1:
            raise ValueError(f"images of {x.shape[1]}x{x.shape[2]} are too small for a patch discriminator with "
                             f"n_layers={self.n_layers} (no patch left); use fewer layers")
        return out
