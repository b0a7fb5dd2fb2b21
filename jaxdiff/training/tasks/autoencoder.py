"""The autoencoder task (LDM's KL autoencoder, ``config.task = "autoencoder"``; its loss settings are the
``loss`` section): the typed config, input checks, init, loss, reconstruction grids, the latents' scale factor
stored with the final checkpoint, and :func:`restore_autoencoder`, which the latent data of a latent-diffusion
config reads (:mod:`jaxdiff.training.latent`).
"""

from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.data import to_float
from jaxdiff.latent import make_autoencoder_loss, scale_factor
from jaxdiff.models.autoencoder import AutoencoderConfig, AutoencoderKL, PatchDiscriminator
from jaxdiff.rng import Stream, run_key
from jaxdiff.training.build import build_optimizer, build_pipeline, example_input, init_key
from jaxdiff.training.state import create_train_state
from jaxdiff.training.tasks.base import Task, inputs
from jaxdiff.training.workdir import load_config, restore_state

log = logging.getLogger("jaxdiff.train")


def autoencoder_config(config) -> AutoencoderConfig:
    """The autoencoder's typed config from ``config.model`` (``out_channels`` defaults to ``in_channels``)."""
    m = config.model.to_dict()
    out = {f: tuple(m[f]) if isinstance(m[f], list) else m[f] for f in AutoencoderConfig.__dataclass_fields__
           if f in m}
    if out.get("out_channels") is None:
        out["out_channels"] = out["in_channels"]
    return AutoencoderConfig(**out).validate()


def build_autoencoder(config) -> AutoencoderKL:
    return AutoencoderKL(autoencoder_config(config))


def build_discriminator(config):
    """The patch discriminator of ``config.loss`` (``discriminator=True``), else None."""
    lo = config.loss
    return PatchDiscriminator(lo.disc_channels, lo.disc_layers, lo.disc_groups) if lo.discriminator else None


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


def loss(config, model: AutoencoderKL, teacher):
    """LDM's loss (:func:`jaxdiff.latent.make_autoencoder_loss`); the discriminator starts at ``loss.disc_start``
    optimizer steps."""
    del teacher
    lo = config.loss
    ae_loss = make_autoencoder_loss(model, lo.kl_weight, build_discriminator(config), lo.disc_weight, lo.disc_start)

    def loss_fn(params, batch, keys, *, step, target_params=None):
        del target_params
        return ae_loss(params, batch, keys, step=step)

    return loss_fn


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct(model: AutoencoderKL, params, x):
    return model.apply({"params": params}, x)[0]


@functools.partial(jax.jit, static_argnums=0)
def _encode(model: AutoencoderKL, params, x):
    return model.apply({"params": params}, x, method=AutoencoderKL.encode)


def reconstruct_fn(model: AutoencoderKL):
    """jitted ``fn(params, x) -> decode(mean of q(z|x))``: one compiled program per autoencoder (a static
    argument of JAX's own jit cache, keyed by the module's config) and input shape."""
    return functools.partial(_reconstruct, model)


def encode_fn(model: AutoencoderKL, params):
    """``fn(x) -> (mean, logvar)`` of q(z|x); the params are an argument of the jitted function (one program per
    autoencoder and input shape), not constants compiled into it."""
    return functools.partial(_encode, model, params)


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


def restore_autoencoder(workdir: str, step: int | None = None):
    """``(model, ema_params, scale_factor, step, config)`` of a trained autoencoder. The scale factor is the
    one stored with its final checkpoint (computed from its training latents when the checkpoint holds
    none, e.g. a run stopped early). Read from disk at every call: a caller that needs it often keeps it."""
    workdir = os.path.abspath(workdir)
    config = load_config(workdir)
    if config.task != "autoencoder":
        raise ValueError(f"{workdir} holds a {config.task} run, not an autoencoder (config.task)")
    model = build_autoencoder(config)
    template = jax.eval_shape(lambda: create_train_state(init_params(config, model), build_optimizer(config),
                                                         config.seed))  # shapes only: nothing is initialised
    state, meta, step = restore_state(workdir, template, step)
    params = autoencoder_params(state.ema_params)
    scale = meta.get("scale_factor")
    if scale is None:
        pipe = build_pipeline(config, "train", 1)
        scale = latent_scale(model, params, to_float(pipe.all_images(), config.data.num_levels))
        log.info("checkpoint %d of %s holds no scale factor; computed %.5f from its training latents",
                 step, workdir, scale)
    return model, params, float(scale), step, config


def _prepare(config):
    return lambda batch, step: inputs(batch)


def _grid(config, model):
    n = config.train.num_grid_samples
    return grid_fn(model, build_pipeline(config, "test", n).batch(0)["x"]) if n else None


def _final_meta(config, model, pipeline, params):
    scale = latent_scale(model, params, to_float(pipeline.all_images(), config.data.num_levels))
    log.info("latent scale factor %.5f", scale)
    return {"scale_factor": scale}  # stored with the autoencoder: latents' 1 / std


AUTOENCODER = Task(
    model=build_autoencoder, init=init_params, loss=loss, data=lambda config: build_pipeline(config),
    check_input=lambda config, model, shape: check_autoencoder_input(config, shape), prepare=_prepare, grid=_grid,
    final_meta=_final_meta, fields=("loss",), product="autoencoder")
