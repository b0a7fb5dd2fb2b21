"""Latent diffusion (Rombach et al. 2022): the KL autoencoder's training loss, its latent scale factor,
the cached encoded dataset, and the composition sampler -> decoder as one pure function.

The pieces are functions of params and arrays, so that a researcher can jit ``decode_after(sample_fn,
decode_fn, scale)`` whole, or train a U-Net on ``encode_dataset``'s latents with any schedule and loss.
Training, checkpointing and resuming an autoencoder go through the same machinery as a diffusion model
(:func:`jaxdiff.training.loop.train_and_evaluate` with ``config.kind = "autoencoder"``).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.models.autoencoder import AutoencoderKL, kl_to_standard_normal


def hinge_d_loss(logits_real, logits_fake):
    """The discriminator's hinge loss per example: (mean relu(1 - D(x)) + mean relu(1 + D(x_rec))) / 2."""
    axes = tuple(range(1, logits_real.ndim))
    return 0.5 * (jax.nn.relu(1.0 - logits_real).mean(axes) + jax.nn.relu(1.0 + logits_fake).mean(axes))


def make_autoencoder_loss(model: AutoencoderKL, kl_weight: float = 1e-6, discriminator=None,
                          disc_weight: float = 0.1, disc_start: int = 0) -> Callable:
    """``loss_fn(params, batch, keys, *, step=0) -> (loss, metrics)`` of the LDM autoencoder: per example, the
    L1 reconstruction error of z ~ q(z|x) summed over pixels plus
    ``kl_weight`` times KL(q(z|x) || N(0, I)) (LDM's ``LPIPSWithDiscriminator`` without the perceptual
    term), divided by the number of pixels so that the loss is the mean absolute error plus a KL per pixel.
    ``keys [B]`` draw each example's posterior sample (``example_keys``).

    With a ``discriminator`` (e.g. :class:`PatchDiscriminator`), ``params`` is ``{"autoencoder": ...,
    "discriminator": ...}`` and, from optimizer ``step >= disc_start`` on, two adversarial terms are added:
    ``disc_weight * (-mean D(x_rec))`` with D's params held fixed (the autoencoder's generator loss) and
    the hinge loss of D on x vs x_rec with the reconstruction held fixed. Each parameter group receives
    only its own term's gradient (``stop_gradient``), so one optimizer over both groups makes LDM's two
    updates simultaneously."""
    if kl_weight < 0 or disc_weight < 0:
        raise ValueError(f"kl_weight and disc_weight must be >= 0, got {kl_weight}, {disc_weight}")

    def loss_fn(params, batch, keys, *, step=0):
        ae = params["autoencoder"] if discriminator is not None else params
        x = batch["x"]
        mean, logvar = model.apply({"params": ae}, x, method=AutoencoderKL.encode)
        eps = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:], mean.dtype))(keys)
        z = mean + jnp.exp(0.5 * logvar) * eps
        x_rec = model.apply({"params": ae}, z, method=AutoencoderKL.decode)
        d = np.prod(x.shape[1:])
        l1 = jnp.abs(x_rec - x).reshape(x.shape[0], -1).sum(-1)
        kl = kl_to_standard_normal(mean, logvar)
        per = (l1 + kl_weight * kl) / d
        metrics = {"l1": l1 / d, "kl": kl}
        if discriminator is not None:
            disc = lambda p, im: discriminator.apply({"params": p}, im)
            on = (jnp.full(per.shape, step) >= disc_start).astype(per.dtype)  # per example, as the loss
            fake_fixed_d = disc(jax.lax.stop_gradient(params["discriminator"]), x_rec)
            g_loss = -fake_fixed_d.reshape(x.shape[0], -1).mean(-1)
            d_loss = hinge_d_loss(disc(params["discriminator"], x),
                                  disc(params["discriminator"], jax.lax.stop_gradient(x_rec)))
            per = per + on * (disc_weight * g_loss + d_loss)
            metrics.update(g_loss=g_loss, d_loss=d_loss)
        metrics["loss"] = per
        return per.mean(), metrics

    return loss_fn


def scale_factor(latents) -> float:
    """1 / std of the training latents (all entries): LDM's rescaling to unit variance before diffusion
    (Stable Diffusion's 0.18215 was computed so)."""
    z = np.asarray(latents, np.float64)
    s = z.std()
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"latents have std {s}; cannot compute a scale factor")
    return float(1.0 / s)


def psnr(x, y, data_range: float = 2.0):
    """Peak signal-to-noise ratio in dB per example of images in a range of width ``data_range``
    ([-1, 1] -> 2): 10 log10(range^2 / MSE)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(-1)
    return 10 * np.log10(data_range**2 / np.maximum(mse, 1e-20))


def ssim(x, y, data_range: float = 2.0, low: float = -1.0):
    """Structural similarity per example (scikit-image's SSIM, Wang et al. 2004, 7x7 windows), NHWC images
    with values in [low, low + data_range], computed on intensities shifted to start at 0 (SSIM's luminance
    term assumes non-negative intensities: on [-1, 1] values an image and its negative would score high)."""
    from skimage.metrics import structural_similarity

    x, y = np.asarray(x, np.float64) - low, np.asarray(y, np.float64) - low
    win = min(7, x.shape[1], x.shape[2])
    win -= 1 - win % 2  # odd
    return np.array([structural_similarity(a, b, data_range=data_range, channel_axis=-1, win_size=win)
                     for a, b in zip(x, y)])


def encode_dataset(encode_fn: Callable, images, cache_dir: str, *, batch_size: int = 256,
                   fingerprint: str = "") -> dict:
    """Encode ``images [N, ...]`` once with ``encode_fn(x) -> (mean, logvar)`` and cache the posterior
    means and standard deviations in ``cache_dir`` (chunk files written atomically, so an interrupted run
    resumes at the first missing chunk; the finished cache is ``latents.npz``).

    ``fingerprint`` names what produced the latents (the autoencoder's checkpoint and the data); a cache
    holding another fingerprint raises instead of being reused or overwritten. Returns
    ``{"mean": [N, ...], "std": [N, ...]}`` (unscaled)."""
    images = np.asarray(images)
    os.makedirs(cache_dir, exist_ok=True)
    fp = hashlib.sha1(f"{fingerprint}|{images.shape}|{images.dtype}".encode()
                      + np.ascontiguousarray(images[:: max(1, len(images) // 64)]).tobytes()).hexdigest()
    meta_path = os.path.join(cache_dir, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            old = json.load(f)
        if old.get("fingerprint") != fp:
            raise ValueError(f"{cache_dir} caches latents of another autoencoder or data ({old.get('what')}); "
                             "remove it or choose another cache directory")
    else:
        _write_atomic(meta_path, json.dumps({"fingerprint": fp, "what": fingerprint, "num": len(images)}).encode())
    final = os.path.join(cache_dir, "latents.npz")
    if os.path.exists(final):
        with np.load(final) as f:
            return {"mean": f["mean"], "std": f["std"]}
    parts = []
    for i in range(0, len(images), batch_size):
        path = os.path.join(cache_dir, f"chunk_{i // batch_size:05d}.npz")
        if not os.path.exists(path):
            mean, logvar = jax.device_get(encode_fn(images[i:i + batch_size]))
            buf = _npz_bytes(mean=np.asarray(mean, np.float32), std=np.exp(0.5 * np.asarray(logvar, np.float32)))
            _write_atomic(path, buf)
        with np.load(path) as f:
            parts.append((f["mean"], f["std"]))
    out = {"mean": np.concatenate([p[0] for p in parts]), "std": np.concatenate([p[1] for p in parts])}
    _write_atomic(final, _npz_bytes(**out))
    for i in range(0, len(images), batch_size):
        os.remove(os.path.join(cache_dir, f"chunk_{i // batch_size:05d}.npz"))
    return out


def _npz_bytes(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _write_atomic(path: str, data: bytes):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def decode_after(sample_fn: Callable, decode_fn: Callable, scale: float) -> Callable:
    """Compose a latent sampler with the decoder: ``fn(*args, **kwargs) = decode_fn(sample_fn(*args,
    **kwargs) / scale)``. Pure when both are, so ``jax.jit(decode_after(...))`` compiles sampling and
    decoding as one program."""

    def fn(*args, **kwargs):
        return decode_fn(sample_fn(*args, **kwargs) / scale)

    return fn
