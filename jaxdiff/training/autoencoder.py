"""The autoencoder task's pieces (the LDM's KL autoencoder, ``config.task = "autoencoder"``): input checks,
init, loss, reconstruction grids, the latents' scale factor. Restoring a trained autoencoder and the latent
data of a latent-diffusion config are in :mod:`jaxdiff.training.latent`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.latent import scale_factor
from jaxdiff.models.autoencoder import AutoencoderKL
from jaxdiff.rng import Stream, run_key
from jaxdiff.training.build import autoencoder_config, build_discriminator, example_input, init_key


def check_autoencoder_input(config, shape):
    """Clear errors before compiling: image size divisible by f, channels as configured."""
    acfg = autoencoder_config(config)
    f = acfg.downsampling_factor
    h, w, c = shape[1:]
    if h % f or w % f:
        raise ValueError(f"image size {h}x{w} is not divisible by the autoencoder's downsampling factor f={f} "
                         f"(2^(len(block_out_channels) - 1), block_out_channels={acfg.block_out_channels})")
    if c != acfg.in_channels:
        raise ValueError(f"data has {c} channels, model.in_channels={acfg.in_channels}")
    if h != config.model.image_size:
        raise ValueError(f"data images are {h}x{w}, model.image_size={config.model.image_size}")


def init_params(config, model: AutoencoderKL):
    """The trained params: the autoencoder's, or ``{"autoencoder", "discriminator"}`` with a discriminator."""
    params = jax.jit(model.init)(init_key(config), example_input(config))["params"]
    disc = build_discriminator(config)
    if disc is None:
        return params
    d = jax.jit(disc.init)(run_key(config.seed, Stream.DISC_INIT), example_input(config))["params"]
    return {"autoencoder": params, "discriminator": d}


def autoencoder_params(params):
    """The autoencoder's part of trained params (drops a discriminator)."""
    return params["autoencoder"] if "discriminator" in params else params


def build_loss(config, model: AutoencoderKL):
    from jaxdiff.latent import make_autoencoder_loss

    lo = config.loss
    return make_autoencoder_loss(model, lo.kl_weight, build_discriminator(config), lo.disc_weight, lo.disc_start)


_COMPILED: dict = {}  # (what, AutoencoderConfig) -> jitted function: compiled once per process and shape


def clear_cache():
    _COMPILED.clear()


def reconstruct_fn(model: AutoencoderKL):
    """jitted ``fn(params, x) -> decode(mean of q(z|x))`` (one per autoencoder config in a process)."""
    key = ("reconstruct", model.config)
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(lambda p, x: model.apply({"params": p}, x)[0])
    return _COMPILED[key]


def encode_fn(model: AutoencoderKL, params):
    """``fn(x) -> (mean, logvar)`` of q(z|x); the params are an argument of the jitted function (one per
    autoencoder config in a process), not constants compiled into it."""
    key = ("encode", model.config)
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(lambda p, x: model.apply({"params": p}, x, method=AutoencoderKL.encode))
    enc = _COMPILED[key]
    return lambda x: enc(params, x)


def grid_fn(model: AutoencoderKL, images):
    """``fn(params, key) -> [2N, H, W, C]``: each fixed test image followed by its reconstruction (the grid
    the loop writes at sample time for an autoencoder: pairs side by side in an even number of columns)."""
    rec = reconstruct_fn(model)
    x = jnp.asarray(images)
    return lambda params, key: jnp.stack([x, jnp.clip(rec(autoencoder_params(params), x), -1, 1)],
                                         1).reshape((-1,) + x.shape[1:])


def latent_scale(model: AutoencoderKL, params, images, batch_size: int = 256) -> float:
    """1 / std of the posterior means of ``images`` (the latents a latent-diffusion model trains on)."""
    enc = encode_fn(model, autoencoder_params(params))
    z = np.concatenate([np.asarray(enc(images[i:i + batch_size])[0]) for i in range(0, len(images), batch_size)])
    return scale_factor(z)
