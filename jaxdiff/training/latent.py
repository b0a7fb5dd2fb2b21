"""Latent diffusion on the training side: the latent data of a latent-diffusion config
(``config.latent.autoencoder``: a trained autoencoder's workdir, restored by
:func:`jaxdiff.training.tasks.autoencoder.restore_autoencoder`), reflow's pairs source, and the decoder that
turns sampled latents into images.
"""

from __future__ import annotations

import os

import numpy as np

from jaxdiff.data import to_float
from jaxdiff.data.pipeline import ArraySource, Pipeline
from jaxdiff.latent import encode_dataset
from jaxdiff.models.autoencoder import AutoencoderKL
from jaxdiff.training.build import build_pipeline, build_source, pipeline_of


def latent_autoencoder(config) -> str | None:
    """The autoencoder workdir of a latent-diffusion config (``config.latent.autoencoder``), else None."""
    return config.latent.autoencoder or None


def latent_source(config, split: str) -> ArraySource:
    """The latent dataset of a latent-diffusion config: the pixel split of ``config.data`` encoded once by
    the autoencoder of ``config.latent.autoencoder`` (posterior means, cached under that workdir's
    ``latents/``), times its scale factor, with the labels."""
    from jaxdiff.training.tasks.autoencoder import encode_fn, restore_autoencoder

    ae_dir = latent_autoencoder(config)
    model, params, scale, step, ae_config = restore_autoencoder(ae_dir)
    pipe = build_pipeline(config, split, 1)
    x = to_float(pipe.all_images(), config.data.num_levels)
    if x.shape[1:] != (ae_config.model.image_size,) * 2 + (ae_config.model.in_channels,):
        raise ValueError(f"data of shape {x.shape[1:]} does not fit the autoencoder in {ae_dir} (image_size "
                         f"{ae_config.model.image_size}, in_channels {ae_config.model.in_channels})")
    d = config.data
    cache = os.path.join(ae_dir, "latents", f"{d.name}_{d.config}_{split}_step{step}")
    lat = encode_dataset(encode_fn(model, params), x, cache, fingerprint=f"{os.path.abspath(ae_dir)}@{step} "
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
    from jaxdiff.training.tasks.autoencoder import restore_autoencoder

    model, params, scale, _, _ = restore_autoencoder(latent_autoencoder(config))

    def decode(ae_params, z):
        return model.apply({"params": ae_params}, z, method=AutoencoderKL.decode)

    return decode, params, scale
