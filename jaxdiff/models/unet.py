"""The DDPM / ADM U-Net (Ho et al. 2020; Nichol & Dhariwal 2021; Dhariwal & Nichol 2021) in flax.linen.

``UNet(config)(x [B, H, W, C], t [B] in [0, 1], cond=None, train=False)`` -> ``[B, H, W, C_out]``.
``cond`` is None, integer class labels ``[B]`` (``num_classes`` is the null label for classifier-free
guidance), or a dict with ``"label"`` and/or ``"context"`` (``[B, N, D]`` for cross-attention).
The same module handles 1-D data (``[B, L, C]``) when ``config.dims = 1`` (see ``unet1d.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxdiff.models.layers import (
    DOWNSAMPLE_PADDINGS,
    AttentionBlock,
    Downsample,
    FourierFeatures,
    ResBlock,
    Upsample,
    conv,
    group_norm,
    timestep_embedding,
)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16, "float64": jnp.float64}


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Architecture of the U-Net. ``attention_resolutions`` are spatial sizes (e.g. 16 for 16x16)."""

    image_size: int = 32
    in_channels: int = 3
    out_channels: Optional[int] = None  # default: in_channels (x2 with learned_variance)
    base_channels: int = 128
    channel_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: Sequence[int] = (16,)
    num_heads: int = 1
    head_channels: Optional[int] = None
    dropout: float = 0.0
    scale_shift: bool = False
    resblock_updown: bool = False
    conv_resample: bool = True
    learned_variance: bool = False
    num_classes: Optional[int] = None  # class embedding with a null label at index num_classes
    context_dim: Optional[int] = None  # cross-attention to a [B, N, context_dim] context
    time_embedding: str = "sinusoidal"  # "sinusoidal" (of time_scale * t) | "fourier" (of log sigma-like t)
    time_scale: float = 1000.0
    # The sinusoidal embedding takes time_scale * t + time_offset, frequencies max_period^(-k / (half -
    # time_freq_shift)), [cos, sin] (time_flip_sin_to_cos) or [sin, cos]. Imported diffusers / original-DDPM
    # checkpoints set offset -1 (their step index j is jaxdiff's t = (j + 1) / T), shift 1, no flip.
    time_offset: float = 0.0
    time_freq_shift: float = 0.0
    time_flip_sin_to_cos: bool = True
    skip_rescale: bool = False
    num_groups: int = 32
    norm_eps: float = 1e-5  # GroupNorm epsilon (diffusers' DDPM checkpoints: 1e-6)
    downsample_padding: str = "same"  # "same" (DDPM: one after) | "symmetric" (ADM: one on each side)
    dims: int = 2
    dtype: str = "float32"
    param_dtype: str = "float32"

    @property
    def resolutions(self) -> list[int]:
        return [self.image_size // 2**i for i in range(len(self.channel_mult))]

    @property
    def c_out(self) -> int:
        c = self.out_channels or self.in_channels
        return 2 * c if self.learned_variance else c

    def validate(self):
        """Raise ValueError naming the bad field before anything is traced."""
        levels = len(self.channel_mult)
        if levels < 1 or self.base_channels < 1 or self.num_res_blocks < 1:
            raise ValueError("channel_mult must be non-empty, base_channels and num_res_blocks >= 1")
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size={self.image_size} is not divisible by 2^(levels-1) = "
                             f"{2 ** (levels - 1)} for channel_mult={tuple(self.channel_mult)}")
        bad = [r for r in self.attention_resolutions if r not in self.resolutions]
        if bad:
            raise ValueError(f"attention_resolutions {bad} are not among the U-Net's resolutions "
                             f"{self.resolutions}")
        for f in ("dtype", "param_dtype"):
            if getattr(self, f) not in DTYPES:
                raise ValueError(f"{f}={getattr(self, f)!r}; allowed: {sorted(DTYPES)}")
        if self.time_embedding not in ("sinusoidal", "fourier"):
            raise ValueError(f"time_embedding={self.time_embedding!r}; allowed: ['fourier', 'sinusoidal']")
        if self.dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {self.dims}")
        if self.downsample_padding not in DOWNSAMPLE_PADDINGS:
            raise ValueError(f"downsample_padding={self.downsample_padding!r}; allowed: {list(DOWNSAMPLE_PADDINGS)}")
        if not 0 <= self.time_freq_shift < self.base_channels // 2:
            raise ValueError(f"time_freq_shift={self.time_freq_shift}; allowed: 0 <= shift < base_channels / 2")
        return self

    def check_input(self, shape):
        """Check a data shape ``[B, *spatial, C]`` against the config."""
        spatial = tuple(shape[1:-1])
        if len(spatial) != self.dims or any(s != self.image_size for s in spatial) \
                or shape[-1] != self.in_channels:
            want = (self.image_size,) * self.dims + (self.in_channels,)
            raise ValueError(f"data of shape {tuple(shape[1:])} does not fit the U-Net, which expects "
                             f"{want} (image_size={self.image_size}, in_channels={self.in_channels})")


def _split_cond(cond):
    if cond is None:
        return None, None
    if isinstance(cond, dict):
        return cond.get("label"), cond.get("context")
    return cond, None


class UNet(nn.Module):
    config: UNetConfig

    @nn.compact
    def __call__(self, x, t, cond=None, train: bool = False):
        cfg = self.config
        dt, pdt = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
        kw = dict(dtype=dt, param_dtype=pdt)
        nd = cfg.dims
        label, context = _split_cond(cond)
        ch = cfg.base_channels
        emb_dim = 4 * ch

        # Time (and class) embedding.
        t = jnp.broadcast_to(jnp.asarray(t), (x.shape[0],))
        if cfg.time_embedding == "fourier":
            emb = FourierFeatures(ch)(t)
        else:
            emb = timestep_embedding(t * cfg.time_scale + cfg.time_offset, ch, freq_shift=cfg.time_freq_shift,
                                     flip_sin_to_cos=cfg.time_flip_sin_to_cos)
        emb = nn.Dense(emb_dim, **kw)(emb.astype(dt))
        emb = nn.Dense(emb_dim, **kw)(nn.silu(emb))
        if cfg.num_classes is not None:
            if label is None:  # unconditional call: the null label
                label = jnp.full((x.shape[0],), cfg.num_classes, jnp.int32)
            emb = emb + nn.Embed(cfg.num_classes + 1, emb_dim, param_dtype=pdt, dtype=dt)(label)
        if context is None and cfg.context_dim is not None:
            context = jnp.zeros((x.shape[0], 1, cfg.context_dim), dt)

        def res(h, out_ch, resample=None):
            return ResBlock(out_ch, cfg.dropout, cfg.scale_shift, resample, cfg.num_groups,
                            cfg.skip_rescale, eps=cfg.norm_eps, **kw)(h, emb, train)

        def attn(h):
            return AttentionBlock(cfg.num_heads, cfg.head_channels, cfg.num_groups, cfg.skip_rescale,
                                  eps=cfg.norm_eps, **kw)(h, context)

        # Downsampling path.
        h = conv(ch, nd, **kw)(x.astype(dt))
        skips = [h]
        for level, mult in enumerate(cfg.channel_mult):
            res_now = cfg.image_size // 2**level
            for _ in range(cfg.num_res_blocks):
                h = res(h, ch * mult)
                if res_now in cfg.attention_resolutions:
                    h = attn(h)
                skips.append(h)
            if level != len(cfg.channel_mult) - 1:
                h = res(h, h.shape[-1], "down") if cfg.resblock_updown else \
                    Downsample(cfg.conv_resample, padding=cfg.downsample_padding, **kw)(h)
                skips.append(h)

        # Middle.
        h = res(h, h.shape[-1])
        h = attn(h)
        h = res(h, h.shape[-1])

        # Upsampling path.
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            res_now = cfg.image_size // 2**level
            for _ in range(cfg.num_res_blocks + 1):
                h = res(jnp.concatenate([h, skips.pop()], axis=-1), ch * mult)
                if res_now in cfg.attention_resolutions:
                    h = attn(h)
            if level != 0:
                h = res(h, h.shape[-1], "up") if cfg.resblock_updown else \
                    Upsample(cfg.conv_resample, **kw)(h)
        assert not skips

        h = nn.silu(group_norm(cfg.num_groups, h.shape[-1], **kw, eps=cfg.norm_eps)(h))
        out = conv(cfg.c_out, nd, zero_init=True, **kw)(h)
        return out.astype(jnp.promote_types(dt, jnp.float32))  # float32 (float64 for a float64 network)


def ddpm_cifar10_config(**overrides) -> UNetConfig:
    """The DDPM CIFAR-10 network (Ho et al. 2020, Appendix B): 35.7M parameters."""
    base = dict(image_size=32, in_channels=3, base_channels=128, channel_mult=(1, 2, 2, 2),
                num_res_blocks=2, attention_resolutions=(16,), dropout=0.1)
    base.update(overrides)
    return UNetConfig(**base)


def count_params(params: Any) -> int:
    import jax

    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
