"""A downloaded diffusers U-Net checkpoint as a jaxdiff run: its config in jaxdiff's schema and what
:func:`jaxdiff.training.restore.restore_trained` gives for a workdir (``experiments.sample --from_diffusers``)."""

from __future__ import annotations

import dataclasses

import ml_collections

from jaxdiff.interop.diffusers_unet import UNetConfig, load_diffusers_unet
from jaxdiff.models.unet import UNet
from jaxdiff.training.build import build_schedule
from jaxdiff.training.schema import default_config


def run_config(config: UNetConfig, sched: dict, num_samples: int = 64):
    """A jaxdiff run config (``jaxdiff.training.schema``) for sampling an imported network: its U-Net fields,
    the scheduler's schedule / prediction / variance / clipping, and DDPM over all T steps with the
    scheduler's spacing as the default sampler (``experiments.sample --from_diffusers``)."""
    c = default_config()
    for f in dataclasses.fields(config):
        if f.name in c.model:
            value = getattr(config, f.name)
            c.model[f.name] = tuple(value) if isinstance(value, list) else value
    d = c.diffusion
    d.schedule, d.num_steps = sched["schedule"], sched["num_steps"]
    d.schedule_kwargs = ml_collections.ConfigDict(sched["schedule_kwargs"])
    d.prediction, d.variance = sched["prediction"], sched["variance"]
    s = c.sample
    s.sampler, s.num_steps, s.clip_x0 = "ddpm", sched["num_steps"], sched["clip_x0"]
    s.options = ml_collections.ConfigDict({"spacing": sched["spacing"]})
    s.num_samples, s.batch_size = num_samples, min(num_samples, 256)
    return c


def restore_diffusers(directory: str):
    """``(config, model, schedule, params, step=0)`` of a downloaded diffusers checkpoint, as
    :func:`jaxdiff.training.restore.restore_trained` gives them for a jaxdiff workdir."""
    unet_cfg, params, sched = load_diffusers_unet(directory)
    config = run_config(unet_cfg, sched)
    return config, UNet(unet_cfg), build_schedule(config), params, 0
