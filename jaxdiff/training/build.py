"""Shared converters from a config: the one place where a ``ConfigDict`` becomes the library's typed options
(the backbone's ``UNetConfig`` / ``DiTConfig``, a schedule, a network, an optimizer, a data pipeline). What
belongs to one training method is in its module of :mod:`jaxdiff.training.tasks`.

Everything here is importable from a notebook: ``build_model(config)``, ``build_schedule(config)``,
``build_pipeline(config)``, ``model_fn_for(model, params)``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp

from jaxdiff.data import Pipeline, load_source
from jaxdiff.models import UNet, UNetConfig
from jaxdiff.models.dit import DiT, DiTConfig
from jaxdiff.models.precond import Preconditioned, check_preconditioning
from jaxdiff.rng import Stream, run_key
from jaxdiff.schedules import get_schedule
from jaxdiff.training.state import make_optimizer, master_weights

DISCRETE_SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
BACKBONES = {"unet": UNetConfig, "dit": DiTConfig}


def typed_config(config, cls):
    """``cls`` (a dataclass with ``validate()``) from the fields of ``config.model`` it declares (learned
    variance from ``diffusion.variance``)."""
    m = config.model.to_dict()
    out = {f.name: tuple(m[f.name]) if isinstance(m[f.name], list) else m[f.name]
           for f in dataclasses.fields(cls) if f.name in m}
    if "learned_variance" in out and config.diffusion.variance == "learned_range":
        out["learned_variance"] = True
    return cls(**out).validate()


def unet_config(config) -> UNetConfig:
    """The U-Net's typed config from ``config.model``."""
    return typed_config(config, UNetConfig)


def backbone_config(config):
    """The diffusion network's typed config of ``model.backbone``: :class:`UNetConfig` or :class:`DiTConfig`."""
    name = config.model.backbone
    if name not in BACKBONES:
        raise ValueError(f"model.backbone={name!r}; allowed: {list(BACKBONES)}")
    if name == "dit" and text_enabled(config):
        raise ValueError("model.backbone='dit' takes class labels, not text (text.enabled); use the U-Net")
    return typed_config(config, BACKBONES[name])


def text_enabled(config) -> bool:
    """Whether the config trains a text-conditioned model (``config.text.enabled``)."""
    return bool(config.text.enabled)


def build_schedule(config):
    d = config.diffusion
    kwargs = dict(d.schedule_kwargs.to_dict() if hasattr(d.schedule_kwargs, "to_dict") else d.schedule_kwargs or {})
    if d.schedule in DISCRETE_SCHEDULES:
        kwargs["num_steps"] = d.num_steps
    return get_schedule(d.schedule, **kwargs)


def build_network(config, cfg):
    """The bare network of a typed backbone config: a DiT, the text-conditioned U-Net (``text.enabled``) or
    the U-Net."""
    if isinstance(cfg, DiTConfig):
        return DiT(cfg)
    if text_enabled(config):
        from jaxdiff.models.text import TextUNet

        if cfg.context_dim is None:
            raise ValueError("config.text.enabled needs model.context_dim (the text encoder's width)")
        t = config.text
        return TextUNet(cfg, cfg.context_dim, t.layers, t.heads, t.max_len)
    return UNet(cfg)


def build_model(config, network=build_network) -> tuple[Any, UNetConfig | DiTConfig]:
    """The diffusion network of ``config.model`` (``network(config, backbone_config(config))``: by default a
    U-Net, with text the text-conditioned U-Net, or a DiT by ``model.backbone``), wrapped in
    ``diffusion.preconditioning`` (:class:`jaxdiff.models.precond.Preconditioned`: EDM's c_skip / c_out /
    c_in / c_noise, or the input scaling x_t / sqrt(alpha^2 + sigma^2))."""
    cfg = backbone_config(config)
    d = config.diffusion
    check_preconditioning(d.preconditioning, d.prediction, d.sigma_data)
    net = network(config, cfg)
    if d.preconditioning == "none":
        return net, cfg
    return Preconditioned(net, build_schedule(config), d.preconditioning, float(d.sigma_data)), cfg


def example_input(config) -> jax.Array:
    """One zero example of the model's input shape ``[1, *spatial, C]``."""
    m = config.model
    return jnp.zeros((1,) + (m.image_size,) * m.dims + (m.in_channels,))


def init_key(config):
    return run_key(config.seed, Stream.INIT)


def build_optimizer(config, params=None):
    """The optimizer of ``config.optim`` (the same one for training and for restoring its checkpoints); with
    float32 master weights when ``params`` (arrays or shapes) hold bfloat16 / float16 leaves."""
    o = config.optim
    tx = make_optimizer(o.learning_rate, o.warmup_steps, o.grad_clip, o.weight_decay,
                        decay_steps=o.decay_steps or None, name=o.optimizer)
    low = any(jnp.dtype(p.dtype) in (jnp.bfloat16, jnp.float16) for p in jax.tree_util.tree_leaves(params))
    return master_weights(tx) if low else tx


def build_source(config, split: str):
    """The pixel data source of ``config.data``: a TFDS (or offline) dataset, or a WAV folder (``name =
    "audio"``; ``audio_dir`` empty means synthetic tones written into the data dir)."""
    d = config.data
    if d.name == "audio":
        from jaxdiff.data.audio import load_wav_folder, make_tones
        from jaxdiff.data.pipeline import default_data_dir

        folder = d.audio_dir or make_tones(os.path.join(d.data_dir or default_data_dir(), "tones"))
        return load_wav_folder(folder, split, rate=d.rate, length=d.length, channels=config.model.in_channels)
    return load_source(d.name, split, d.data_dir or None, config=d.config)


def pipeline_of(config, source, batch_size: int | None = None, num_levels: int | None = None,
                transform=None, label_key: str | None = "label") -> Pipeline:
    """The deterministic input pipeline of ``source`` under ``config`` (this process's rows)."""
    return Pipeline(source, batch_size or config.optim.batch_size,
                    config.data.num_levels if num_levels is None else num_levels, config.seed,
                    image_key=config.data.key, label_key=label_key, random_flip=config.data.random_flip,
                    process_index=jax.process_index(), process_count=jax.process_count(), transform=transform)


def build_pipeline(config, split: str = "train", batch_size: int | None = None) -> Pipeline:
    """The pixel pipeline of ``config.data`` (latent data: :func:`jaxdiff.training.latent.data_pipeline`)."""
    return pipeline_of(config, build_source(config, split), batch_size)
