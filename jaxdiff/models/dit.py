"""DiT: the diffusion transformer with adaLN-Zero conditioning (Peebles & Xie 2023) in flax.linen.

``DiT(config)(x [B, H, W, C], t [B] in [0, 1], cond=None, train=False)`` -> ``[B, H, W, C_out]``, the same call
as :class:`jaxdiff.models.unet.UNet`, so the backbone is a config switch (``model.backbone = "dit"``). ``cond``
is None or integer class labels ``[B]``; ``num_classes`` is the null label of classifier-free guidance (an
unconditional call uses it), as in the reference's ``LabelEmbedder`` with dropout.

Layout (the reference ``models.py`` of facebookresearch/DiT): patchify by a p x p stride-p conv, plus a fixed
2-D sine-cosine position embedding (MAE's; a constant here, not a parameter); timestep embedding
(256 sinusoids of ``time_scale * t``, [cos, sin], then Linear-SiLU-Linear) plus the class embedding gives c;
``depth`` blocks x += gate * Attn(modulate(LN(x), shift, scale)), x += gate * MLP(...), the six vectors from
Linear(SiLU(c)) zero-initialised (adaLN-Zero: each block starts as the identity); a final adaLN layer and a
zero-initialised linear back to patches. ``remat`` recomputes each block's activations in the backward pass
(``nn.remat``); ``param_dtype = "bfloat16"`` stores bfloat16 parameters (train them with
:func:`jaxdiff.training.state.master_weights`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.models.layers import attention, timestep_embedding
from jaxdiff.models.unet import DTYPES

PRESETS = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}  # depth, width, heads


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    image_size: int = 32
    in_channels: int = 4
    patch_size: int = 2
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: Optional[int] = None  # class embedding with a null label at index num_classes
    learned_variance: bool = False
    out_channels: Optional[int] = None  # default: in_channels (x2 with learned_variance)
    time_scale: float = 1000.0
    frequency_dim: int = 256
    remat: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"
    dims: int = 2

    @property
    def c_out(self) -> int:
        c = self.out_channels or self.in_channels
        return 2 * c if self.learned_variance else c

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def validate(self):
        """Raise ValueError naming the bad field before anything is traced."""
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(f"patch_size={self.patch_size} does not divide image_size={self.image_size}; allowed: "
                             f"{[p for p in range(1, self.image_size + 1) if self.image_size % p == 0]}")
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size={self.hidden_size}: the 2-D sine-cosine position embedding needs a "
                             "multiple of 4")
        if self.depth < 1:
            raise ValueError(f"depth={self.depth}; allowed: >= 1")
        for f in ("dtype", "param_dtype"):
            if getattr(self, f) not in DTYPES:
                raise ValueError(f"{f}={getattr(self, f)!r}; allowed: {sorted(DTYPES)}")
        if self.dims != 2:
            raise ValueError(f"DiT takes images (dims=2), got dims={self.dims}")
        return self

    def check_input(self, shape):
        if tuple(shape[1:]) != (self.image_size, self.image_size, self.in_channels):
            raise ValueError(f"data of shape {tuple(shape[1:])} does not fit the DiT, which expects "
                             f"{(self.image_size, self.image_size, self.in_channels)}")


def dit_config(name: str = "XL/2", **overrides) -> DiTConfig:
    """A preset of the paper's Table 1: ``"S/2"``, ``"B/4"``, ``"XL/8"``, ... (size / patch), e.g.
    ``dit_config("XL/2", image_size=32, in_channels=4, num_classes=1000, learned_variance=True)`` is DiT-XL/2
    on 256x256 images' latents."""
    size, _, patch = name.removeprefix("DiT-").partition("/")
    if size not in PRESETS or patch not in ("2", "4", "8"):
        raise ValueError(f"unknown DiT preset {name!r}; allowed: {[f'{s}/{p}' for s in PRESETS for p in (2, 4, 8)]}")
    depth, width, heads = PRESETS[size]
    fields = dict(depth=depth, hidden_size=width, num_heads=heads, patch_size=int(patch))
    fields.update(overrides)
    return DiTConfig(**fields).validate()


def sincos_pos_embed_2d(dim: int, grid: int) -> np.ndarray:
    """``[grid * grid, dim]`` fixed position embedding (MAE / DiT): half the channels encode the column, half
    the row, each as [sin(pos w_k), cos(pos w_k)] with w_k = 10000^(-k / (dim / 4))."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))

    def one_d(pos):
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    cols, rows = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
    return np.concatenate([one_d(cols), one_d(rows)], axis=1)


def patchify(x, p: int):
    """``[B, H, W, C]`` -> ``[B, (H/p)(W/p), p*p*C]`` (row-major patches, each p x p x C flattened)."""
    B, H, W, C = x.shape
    x = x.reshape(B, H // p, p, W // p, p, C).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(x, p: int, channels: int):
    """Inverse of :func:`patchify` for square images: ``[B, T, p*p*C]`` -> ``[B, H, W, C]``."""
    B, T, _ = x.shape
    h = int(round(math.sqrt(T)))
    x = x.reshape(B, h, h, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, h * p, h * p, channels)


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    hidden_size: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, c):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        D, H = self.hidden_size, self.num_heads
        dense = lambda n, **k: nn.Dense(n, kernel_init=nn.initializers.xavier_uniform(), **kw, **k)
        mod = nn.Dense(6 * D, kernel_init=nn.initializers.zeros, name="adaLN_modulation", **kw)(nn.silu(c))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mod, 6, axis=-1)
        norm = lambda name: nn.LayerNorm(1e-6, use_bias=False, use_scale=False, name=name, **kw)
        h = modulate(norm("norm1")(x), shift_msa, scale_msa)
        B, T, _ = h.shape
        qkv = dense(3 * D, name="qkv")(h).reshape(B, T, 3, H, D // H)
        a = attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]).reshape(B, T, D)
        x = x + gate_msa[:, None] * dense(D, name="proj")(a)
        h = modulate(norm("norm2")(x), shift_mlp, scale_mlp)
        h = nn.gelu(dense(int(D * self.mlp_ratio), name="fc1")(h), approximate=True)
        return x + gate_mlp[:, None] * dense(D, name="fc2")(h)


class DiT(nn.Module):
    config: DiTConfig

    @nn.compact
    def __call__(self, x, t, cond=None, train: bool = False):
        cfg = self.config
        dt, pdt = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
        kw = dict(dtype=dt, param_dtype=pdt)
        D, p = cfg.hidden_size, cfg.patch_size
        label = cond.get("label") if isinstance(cond, dict) else cond

        # Patch embedding (a stride-p conv, initialised like a Linear) plus the fixed position embedding.
        h = nn.Conv(D, (p, p), strides=(p, p), padding="VALID", name="x_embedder",
                    kernel_init=nn.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=3), **kw)(x.astype(dt))
        h = h.reshape(h.shape[0], -1, D)
        h = h + jnp.asarray(sincos_pos_embed_2d(D, cfg.image_size // p), dt)[None]

        # Conditioning c = timestep embedding + class embedding.
        t = jnp.broadcast_to(jnp.asarray(t), (x.shape[0],))
        temb = timestep_embedding(t * cfg.time_scale, cfg.frequency_dim)
        init = nn.initializers.normal(0.02)
        temb = nn.Dense(D, kernel_init=init, name="t_embedder_0", **kw)(temb.astype(dt))
        c = nn.Dense(D, kernel_init=init, name="t_embedder_2", **kw)(nn.silu(temb))
        if cfg.num_classes is not None:
            if label is None:  # unconditional call: the null label
                label = jnp.full((x.shape[0],), cfg.num_classes, jnp.int32)
            c = c + nn.Embed(cfg.num_classes + 1, D, embedding_init=init, name="y_embedder", **kw)(label)

        block = nn.remat(DiTBlock) if cfg.remat else DiTBlock
        for i in range(cfg.depth):
            h = block(D, cfg.num_heads, cfg.mlp_ratio, dt, pdt, name=f"blocks_{i}")(h, c)

        shift, scale = jnp.split(nn.Dense(2 * D, kernel_init=nn.initializers.zeros, name="final_adaLN_modulation",
                                          **kw)(nn.silu(c)), 2, axis=-1)
        h = modulate(nn.LayerNorm(1e-6, use_bias=False, use_scale=False, name="norm_final", **kw)(h), shift, scale)
        h = nn.Dense(p * p * cfg.c_out, kernel_init=nn.initializers.zeros, name="final_linear", **kw)(h)
        return unpatchify(h, p, cfg.c_out).astype(jnp.promote_types(dt, jnp.float32))


def reference_param_count(config: DiTConfig, count_pos_embed: bool = True) -> int:
    """The parameter count of facebookresearch/DiT's ``models.py`` for this config, layer by layer (its
    fixed ``pos_embed`` is an ``nn.Parameter`` that ``parameters()`` counts, with ``requires_grad=False``)."""
    D, p, C, oc = config.hidden_size, config.patch_size, config.in_channels, config.c_out
    mlp = int(D * config.mlp_ratio)
    block = (3 * D * D + 3 * D) + (D * D + D) + (D * mlp + mlp) + (mlp * D + D) + (6 * D * D + 6 * D)
    n = (C * p * p * D + D) + (config.frequency_dim * D + D) + (D * D + D) + config.depth * block
    n += (D * p * p * oc + p * p * oc) + (2 * D * D + 2 * D)
    if config.num_classes is not None:
        n += (config.num_classes + 1) * D
    return n + (config.num_patches * D if count_pos_embed else 0)


def flops_per_forward(config: DiTConfig, batch: int = 1) -> float:
    """XLA's FLOP count (a multiply-add is 2) of one forward pass, from the lowered HLO's cost analysis."""
    x = jax.ShapeDtypeStruct((batch, config.image_size, config.image_size, config.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((batch,), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32) if config.num_classes is not None else None
    model = DiT(config)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), jnp.zeros(t.shape)))
    cost = jax.jit(lambda p, x, t, y: model.apply(p, x, t, y)).lower(params, x, t, y).cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"])
