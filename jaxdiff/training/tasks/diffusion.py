"""The diffusion task (``config.task = "diffusion"``): a denoising network trained by the weighted MSE (or
the variational bound) of :func:`jaxdiff.losses.make_loss` on pixels, latents (``latent.autoencoder``) or
reflow's (noise, x0) pairs (``data.pairs``: a data source whose batches carry the paired noise, which this
task passes to the loss). Its pieces (model, data, step input, sample grid) are shared by the methods that
train a diffusion network in another way (distillation, consistency models, conditional imputation).
"""

from __future__ import annotations

import dataclasses

from jaxdiff import losses, samplers
from jaxdiff.models.model_fn import model_fn_for
from jaxdiff.models.text import caption_transform
from jaxdiff.schedules import is_discrete
from jaxdiff.training.build import backbone_config, build_model, build_schedule, text_enabled
from jaxdiff.training.generate import make_sample_fn
from jaxdiff.training.latent import data_pipeline
from jaxdiff.training.tasks.base import Task, init_params, inputs


def network_apply(model):
    """``apply_fn(params, x_t, t, cond, dropout_keys [B])`` of a network in training (per-example dropout)."""

    def apply_fn(params, x_t, t, cond, keys):
        return model_fn_for(model, params, train=True, dropout_keys=keys)(x_t, t, cond)

    return apply_fn


def make_denoising_loss(config, model):
    """The denoising loss of ``config.diffusion`` (:func:`jaxdiff.losses.make_loss`), batch and key alone."""
    d = config.diffusion
    schedule = build_schedule(config)
    return losses.make_loss(network_apply(model), schedule, prediction=d.prediction, weighting=d.weighting,
                            loss_type=d.loss_type, variance=d.variance,
                            num_levels=config.data.num_levels or 256,  # 0 = continuous data (MSE only)
                            num_steps=None if is_discrete(schedule) else (d.noise_levels or d.vlb_steps),
                            t_min=d.t_min, t_sampling=d.t_sampling, logit_normal_loc=d.logit_normal_loc,
                            logit_normal_scale=d.logit_normal_scale, mode_scale=d.mode_scale,
                            sigma_data=d.sigma_data, edm_p_mean=d.p_mean, edm_p_std=d.p_std,
                            dequantize=bool(config.data.dequantize),
                            p_uncond=d.p_uncond, null_cond=config.model.num_classes)


def _loss(config, model, teacher):
    del teacher
    loss = make_denoising_loss(config, model)
    paired = bool(config.data.pairs)  # reflow: the pairs source gives each x its noise

    def loss_fn(params, batch, keys, *, step, target_params=None):
        del step, target_params
        return loss(params, batch, keys, noise=batch["noise"] if paired else None)

    return loss_fn


def data(config):
    transform = caption_transform(config.text.max_len) if text_enabled(config) else None
    return data_pipeline(config, "train", transform=transform)


def prepare(config):
    """Step input: x, the global indices, the condition (class labels or caption tokens) and, from the
    pairs source, each x's paired noise."""
    text, labels, paired = text_enabled(config), bool(config.data.use_labels), bool(config.data.pairs)

    def prep(batch, step):
        out = inputs(batch)
        if paired:
            out["noise"] = batch["noise"]
        if text:
            out["cond"] = {"tokens": batch["tokens"]}
        elif labels:
            out["cond"] = batch["label"]
        return out

    return prep


def grid(config, model):
    if not config.train.num_grid_samples:
        return None
    return make_sample_fn(config, model, build_schedule(config), sampler=config.sample.sampler,
                          num_steps=config.sample.num_steps, num_samples=config.train.num_grid_samples)


def check(config):
    """The sampler of the sample grids exists (ValueError naming the allowed samplers)."""
    samplers.get_sampler(config.sample.sampler)


DIFFUSION = Task(
    model=lambda config: build_model(config)[0], init=init_params, loss=_loss, data=data,
    check_input=lambda config, model, shape: backbone_config(config).check_input(shape),
    prepare=prepare, grid=grid, check=check)


def diffusion_method(**fields) -> Task:
    """A task that trains a diffusion network another way: the diffusion task's model, data, step input and
    sample grid with ``fields`` replaced (a loss, its own config fields, a teacher, ...); a ``check`` runs after
    the diffusion task's."""
    if "check" in fields:
        own = fields["check"]
        fields["check"] = lambda config: (check(config), own(config))[-1]
    return dataclasses.replace(DIFFUSION, **fields)
