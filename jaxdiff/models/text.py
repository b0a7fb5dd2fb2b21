"""A small trainable text encoder (byte tokens -> Transformer) and the text-conditioned U-Net.

Tokens are UTF-8 bytes + 1 (0 is padding), so the empty string (all padding) is the null condition for
classifier-free guidance. Precomputed external embeddings (CLIP, T5, ...) can instead go straight to the
U-Net as ``cond={"context": [B, N, D]}`` with ``UNetConfig.context_dim = D``.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxdiff.models.unet import UNet, UNetConfig


def tokenize(texts, max_len: int = 32) -> np.ndarray:
    """UTF-8 bytes + 1, truncated / zero-padded to ``max_len``: ``[N, max_len]`` int32."""
    out = np.zeros((len(texts), max_len), np.int32)
    for i, s in enumerate(texts):
        b = np.frombuffer(s.encode("utf-8")[:max_len], np.uint8).astype(np.int32) + 1
        out[i, : len(b)] = b
    return out


class TextEncoder(nn.Module):
    """Byte embedding + learned positions + pre-LN Transformer layers -> ``[B, L, dim]`` (padding masked)."""

    dim: int = 64
    num_layers: int = 2
    num_heads: int = 4
    max_len: int = 32

    @nn.compact
    def __call__(self, tokens):
        mask = tokens > 0  # [B, L]
        h = nn.Embed(257, self.dim)(tokens) + self.param(
            "pos", nn.initializers.normal(0.02), (self.max_len, self.dim))[: tokens.shape[1]]
        attn_mask = mask[:, None, None, :] | ~mask.any(-1)[:, None, None, None]  # empty text: attend all
        for _ in range(self.num_layers):
            y = nn.LayerNorm()(h)
            h = h + nn.MultiHeadDotProductAttention(self.num_heads)(y, y, mask=attn_mask)
            y = nn.LayerNorm()(h)
            h = h + nn.Dense(self.dim)(nn.gelu(nn.Dense(4 * self.dim)(y)))
        return nn.LayerNorm()(h) * mask[..., None]


class TextUNet(nn.Module):
    """``TextEncoder`` feeding the U-Net's cross-attention: ``cond = {"tokens": [B, L]}`` (or a
    ``"context"`` of precomputed embeddings, which bypasses the encoder)."""

    config: UNetConfig
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_len: int = 32

    @nn.compact
    def __call__(self, x, t, cond=None, train: bool = False):
        if cond is None:
            cond = {"tokens": jnp.zeros((x.shape[0], self.max_len), jnp.int32)}
        ctx = cond.get("context")
        if ctx is None:
            ctx = TextEncoder(self.text_dim, self.text_layers, self.text_heads, self.max_len)(cond["tokens"])
        return UNet(self.config)(x, t, {"context": ctx, "label": cond.get("label")}, train)


NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CAPTION_TEMPLATES = ["a handwritten {w}", "the number {d}", "digit {d}", "{w}", "a {w}", "an image of a {w}"]


def digit_caption(label: int, variant: int) -> str:
    """Generated caption ``variant`` for a digit label ("a handwritten seven", "the number 7", ...)."""
    return CAPTION_TEMPLATES[variant % len(CAPTION_TEMPLATES)].format(w=NUMBER_WORDS[label], d=label)


def caption_transform(max_len: int):
    """A data transform (``Pipeline(transform=...)``) adding ``tokens [B, max_len]``: each example's caption
    ``digit_caption(label, index)`` (variant by its index in the global batch), looked up in a table
    tokenized once."""
    table = np.stack([tokenize([digit_caption(y, v) for v in range(len(CAPTION_TEMPLATES))], max_len)
                      for y in range(len(NUMBER_WORDS))])  # [10, V, L]

    def transform(batch):
        y, i = np.asarray(batch["label"]), np.asarray(batch["index"])
        return {**batch, "tokens": table[y, i % len(CAPTION_TEMPLATES)]}

    return transform
