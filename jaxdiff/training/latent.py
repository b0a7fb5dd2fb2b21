"""Latent diffusion on the training side: a trained autoencoder restored from its workdir (kept in an
explicit per-process cache), the latent data of a latent-diffusion config (``config.latent.autoencoder``),
and the decoder that turns sampled latents into images.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from jaxdiff.data import to_float
from jaxdiff.data.pipeline import ArraySource, Pipeline
from jaxdiff.latent import encode_dataset
from jaxdiff.models.autoencoder import AutoencoderKL
from jaxdiff.training import autoencoder as ae
from jaxdiff.training.build import (
    build_autoencoder,
    build_optimizer,
    build_pipeline,
    build_source,
    latent_autoencoder,
    pipeline_of,
    task_name,
)
from jaxdiff.training.state import create_train_state
from jaxdiff.training.workdir import load_config, restore_state

log = logging.getLogger("jaxdiff.train")

_AUTOENCODERS: dict = {}  # (abspath, step, checkpoint mtime) -> restored autoencoder


def clear_cache():
    """Forget restored autoencoders (e.g. after retraining one in the same process)."""
    _AUTOENCODERS.clear()


def restore_autoencoder(workdir: str, step: int | None = None):
    """``(model, ema_params, scale_factor, step, config)`` of a trained autoencoder. The scale factor is the
    one stored with its final checkpoint (computed from its training latents when the checkpoint holds
    none, e.g. a run stopped early). Cached per process by path, step and the checkpoints' mtime."""
    workdir = os.path.abspath(workdir)
    ckpt = os.path.join(workdir, "checkpoints")
    cache_key = (workdir, step, os.path.getmtime(ckpt) if os.path.isdir(ckpt) else None)
    if cache_key in _AUTOENCODERS:
        return _AUTOENCODERS[cache_key]
    config = load_config(workdir)
    if task_name(config) != "autoencoder":
        raise ValueError(f"{workdir} holds a {task_name(config)} run, not an autoencoder (config.task)")
    model = build_autoencoder(config)
    template = create_train_state(ae.init_params(config, model), build_optimizer(config), config.seed)
    state, meta, step = restore_state(workdir, template, step)
    params = ae.autoencoder_params(state.ema_params)
    scale = meta.get("scale_factor")
    if scale is None:
        pipe = build_pipeline(config, "train", 1)
        scale = ae.latent_scale(model, params, to_float(pipe.all_images(), config.data.num_levels))
        log.info("checkpoint %d of %s holds no scale factor; computed %.5f from its training latents",
                 step, workdir, scale)
    out = model, params, float(scale), step, config
    _AUTOENCODERS[cache_key] = out
    return out


def latent_source(config, split: str) -> ArraySource:
    """The latent dataset of a latent-diffusion config: the pixel split of ``config.data`` encoded once by
    the autoencoder of ``config.latent.autoencoder`` (posterior means, cached under that workdir's
    ``latents/``), times its scale factor, with the labels."""
    ae_dir = latent_autoencoder(config)
    model, params, scale, step, ae_config = restore_autoencoder(ae_dir)
    pipe = build_pipeline(config, split, 1)
    x = to_float(pipe.all_images(), config.data.num_levels)
    if x.shape[1:] != (ae_config.model.image_size,) * 2 + (ae_config.model.in_channels,):
        raise ValueError(f"data of shape {x.shape[1:]} does not fit the autoencoder in {ae_dir} (image_size "
                         f"{ae_config.model.image_size}, in_channels {ae_config.model.in_channels})")
    d = config.data
    cache = os.path.join(ae_dir, "latents", f"{d.name}_{d.config}_{split}_step{step}")
    lat = encode_dataset(ae.encode_fn(model, params), x, cache, fingerprint=f"{os.path.abspath(ae_dir)}@{step} "
                         f"{d.name}/{d.config}/{split}")
    arrays = {"image": lat["mean"] * np.float32(scale)}
    labels = pipe.all_labels()
    if labels is not None:
        arrays["label"] = labels
    return ArraySource(arrays)


def data_pipeline(config, split: str = "train", batch_size: int | None = None, transform=None) -> Pipeline:
    """The training data of a diffusion config: its latents (continuous) for a latent-diffusion config, else
    its pixels."""
    if config.data.pairs and split == "train":
        return pairs_pipeline(config, batch_size, transform)
    if latent_autoencoder(config):
        return pipeline_of(config, latent_source(config, split), batch_size, num_levels=0, transform=transform)
    return pipeline_of(config, build_source(config, split), batch_size, transform=transform)


def pairs_pipeline(config, batch_size: int | None = None, transform=None) -> Pipeline:
    """Reflow's training data: the (noise, x0) pairs of ``config.data.pairs`` (written by
    ``experiments.reflow``), batched together (stacked on the channel axis, so every order and flip treats a
    pair as one example) and split into ``x`` and ``noise``."""
    path = config.data.pairs
    if not os.path.isfile(path):
        raise ValueError(f"data.pairs={path!r}: no such file (write it with python -m experiments.reflow)")
    with np.load(path) as f:
        if "x0" not in f or "noise" not in f or f["x0"].shape != f["noise"].shape:
            raise ValueError(f"data.pairs={path!r} must hold arrays 'x0' and 'noise' of one shape")
        both = np.concatenate([f["x0"], f["noise"]], -1).astype(np.float32)
    C = both.shape[-1] // 2

    def split(batch):
        x = batch["x"]
        batch = dict(batch, x=x[..., :C], noise=x[..., C:])
        return transform(batch) if transform is not None else batch

    return pipeline_of(config, ArraySource({config.data.key: both}), batch_size, num_levels=0, transform=split,
                       label_key=None)


def latent_decoder(config):
    """``(decode(ae_params, z) -> images, ae_params, scale_factor)`` for a latent-diffusion config (z
    unscaled: divide the diffusion model's latents by the scale factor first)."""
    model, params, scale, _, _ = restore_autoencoder(latent_autoencoder(config))

    def decode(ae_params, z):
        return model.apply({"params": ae_params}, z, method=AutoencoderKL.decode)

    return decode, params, scale
