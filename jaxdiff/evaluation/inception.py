"""The FID Inception-v3 in Flax: the network of TensorFlow's 2015-12-05 Inception graph as pytorch-fid rebuilds
it (Heusel et al. 2017's FID; Seitzer, pytorch-fid ``inception.py``), so that features, and so FIDs, compare
with published numbers.

It is torchvision's Inception-v3 with FID's patches: average pools that leave the zero padding out of the
mean (TensorFlow's), and a max pool in the last block's pool branch. Inputs are NHWC images in [0, 1], resized
to 299x299 bilinearly (align_corners=False, no antialiasing: PyTorch's ``F.interpolate``) and scaled to
[-1, 1]; the output is the 2048-d final average pool (``features="pool"``) or the 64 / 192 / 768-d blocks
pytorch-fid also exposes.

The weights come from pytorch-fid's file (``pt_inception-2015-12-05-6726825d.pth``, downloaded by the user)
through :func:`jaxdiff.interop.inception.load_fid_inception`. Parameter names mirror PyTorch's module
names (``Mixed_5b/branch1x1/conv``), so the converter is a rename and a transpose.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

BN_EPS = 1e-3  # torchvision's BasicConv2d
FEATURE_DIMS = {"pool1": 64, "pool2": 192, "mixed_6e": 768, "pool": 2048}


class BasicConv(nn.Module):
    """Conv (no bias) + BatchNorm (inference statistics, eps 1e-3) + ReLU: torchvision's BasicConv2d."""

    features: int
    kernel: Sequence[int]
    stride: int = 1
    padding: Sequence[int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        w = self.param("kernel", nn.initializers.lecun_normal(), (*self.kernel, c_in, self.features))
        scale = self.param("bn_scale", nn.initializers.ones, (self.features,))
        bias = self.param("bn_bias", nn.initializers.zeros, (self.features,))
        mean = self.param("bn_mean", nn.initializers.zeros, (self.features,))
        var = self.param("bn_var", nn.initializers.ones, (self.features,))
        ph, pw = self.padding
        y = jax.lax.conv_general_dilated(x, w, (self.stride, self.stride), ((ph, ph), (pw, pw)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=jax.lax.Precision.HIGHEST)
        y = (y - mean) * (scale / jnp.sqrt(var + BN_EPS)) + bias
        return nn.relu(y)


def avg_pool_3x3(x):
    """3x3 stride-1 average pool over the unpadded neighbours (TensorFlow's; count_include_pad=False)."""
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def max_pool_3x3_s2(x):
    return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), stride=2, name="branch3x3")(x)
        bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, max_pool_3x3_s2(x)], -1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c = self.channels_7x7
        b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv(c, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, (1, 1), name="branch_pool")(avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), stride=2, name="branch3x3_2")(b3)
        b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, max_pool_3x3_s2(x)], -1)


class InceptionE(nn.Module):
    """``max_pool=True``: FID's last block (Mixed_7c) pools its pool branch by max, not average."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
        bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
        pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1))) if self.max_pool else avg_pool_3x3(x)
        bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], -1)


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` bilinear interpolation weights of PyTorch's ``F.interpolate(mode="bilinear",
    align_corners=False)`` along one axis (source index (i + 0.5) n_in / n_out - 0.5, clamped at 0)."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1 - frac)
    np.add.at(m, (np.arange(n_out), i1), frac)
    return m


def resize_bilinear(x, size: int = 299):
    """NHWC images resized to ``size`` x ``size`` as PyTorch's bilinear ``F.interpolate`` (no antialiasing)."""
    h, w = x.shape[1:3]
    if (h, w) == (size, size):
        return x
    mh, mw = (jnp.asarray(resize_matrix(n, size), x.dtype) for n in (h, w))
    return jnp.einsum("oh,nhwc,pw->nopc", mh, x, mw, precision=jax.lax.Precision.HIGHEST)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's ``InceptionV3`` (``use_fid_inception=True``) on NHWC images in [0, 1] with 3 channels.

    ``features``: ``pool`` (2048, the FID features), ``mixed_6e`` (768), ``pool2`` (192) or ``pool1`` (64),
    each spatially averaged to a vector except ``pool``, which is the network's own final average pool; ``all``:
    a dict of the four."""

    features: str = "pool"
    resize_input: bool = True
    normalize_input: bool = True

    @nn.compact
    def __call__(self, x):
        if self.features not in FEATURE_DIMS and self.features != "all":
            raise ValueError(f"unknown features {self.features!r}; allowed: {list(FEATURE_DIMS) + ['all']}")
        out = {}

        def done(name, h):  # True when the requested output is complete
            out[name] = h.mean((1, 2))
            return self.features == name
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"FID Inception takes NHWC images with 3 channels in [0, 1], got shape {x.shape}")
        x = x.astype(jnp.float32)
        if self.resize_input:
            x = resize_bilinear(x, 299)
        if self.normalize_input:
            x = 2 * x - 1
        x = BasicConv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = max_pool_3x3_s2(x)
        if done("pool1", x):
            return out["pool1"]
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = max_pool_3x3_s2(x)
        if done("pool2", x):
            return out["pool2"]
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        if done("mixed_6e", x):
            return out["mixed_6e"]
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        return out["pool"] if done("pool", x) else out


def to_inception_input(images, num_levels: int = 256):
    """Images as the FID network takes them: NHWC float in [0, 1] with 3 channels, from uint8 (or integer
    levels 0..num_levels - 1) or floats in [-1, 1] (jaxdiff's samples); grayscale is repeated to RGB."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [N, H, W, 1 or 3], got shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / (num_levels - 1)
    else:
        x = (x.astype(np.float32) + 1) / 2
    x = np.clip(x, 0.0, 1.0)
    return np.repeat(x, 3, -1) if x.shape[-1] == 1 else x
