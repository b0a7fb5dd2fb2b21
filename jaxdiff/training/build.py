"""Objects from a config: the one place where a ``ConfigDict`` becomes the library's typed options
(``UNetConfig``, ``AutoencoderConfig``, a schedule, a loss, an optimizer, a data pipeline).

Everything here is importable from a notebook: ``build_model(config)``, ``build_schedule(config)``,
``build_loss(config, model, schedule)``, ``model_fn_for(model, params)``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp

from jaxdiff import losses
from jaxdiff.data import Pipeline, load_source
from jaxdiff.models import UNet, UNetConfig
from jaxdiff.models.autoencoder import AutoencoderConfig, AutoencoderKL, PatchDiscriminator
from jaxdiff.models.dit import DiT, DiTConfig
from jaxdiff.models.imputation import ImputationNet
from jaxdiff.models.precond import Preconditioned, check_preconditioning
from jaxdiff.rng import Stream, run_key
from jaxdiff.schedules import get_schedule, is_discrete
from jaxdiff.training import parallel
from jaxdiff.training.state import make_optimizer, master_weights

DISCRETE_SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")


def task_name(config) -> str:
    """The config's task (a key of ``jaxdiff.training.tasks.TASKS``, checked there)."""
    return config.task


def _fields(config, cls) -> dict:
    m = config.model.to_dict()
    out = {f.name: m[f.name] for f in dataclasses.fields(cls) if f.name in m}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}


def unet_config(config) -> UNetConfig:
    """The U-Net's typed config from ``config.model`` (learned variance from ``diffusion.variance``)."""
    m = _fields(config, UNetConfig)
    if config.diffusion.variance == "learned_range":
        m["learned_variance"] = True
    return UNetConfig(**m).validate()


BACKBONES = ("unet", "dit")


def backbone_config(config):
    """The diffusion network's typed config: :class:`UNetConfig` or (``model.backbone = "dit"``)
    :class:`DiTConfig`, from ``config.model`` (learned variance from ``diffusion.variance``)."""
    name = config.model.backbone
    if name not in BACKBONES:
        raise ValueError(f"model.backbone={name!r}; allowed: {list(BACKBONES)}")
    if name == "unet":
        return unet_config(config)
    m = _fields(config, DiTConfig)
    if config.diffusion.variance == "learned_range":
        m["learned_variance"] = True
    if text_enabled(config):
        raise ValueError("model.backbone='dit' takes class labels, not text (text.enabled); use the U-Net")
    return DiTConfig(**m).validate()


def autoencoder_config(config) -> AutoencoderConfig:
    m = _fields(config, AutoencoderConfig)
    if m.get("out_channels") is None:
        m["out_channels"] = m["in_channels"]
    return AutoencoderConfig(**m).validate()


def text_enabled(config) -> bool:
    """Whether the config trains a text-conditioned model (``config.text.enabled``)."""
    return bool(config.text.enabled)


def latent_autoencoder(config) -> str | None:
    """The autoencoder workdir of a latent-diffusion config (``config.latent.autoencoder``), else None."""
    return config.latent.autoencoder or None


def build_schedule(config):
    d = config.diffusion
    kwargs = dict(d.schedule_kwargs.to_dict() if hasattr(d.schedule_kwargs, "to_dict") else d.schedule_kwargs or {})
    if d.schedule in DISCRETE_SCHEDULES:
        kwargs["num_steps"] = d.num_steps
    return get_schedule(d.schedule, **kwargs)


def build_model(config) -> tuple[Any, UNetConfig | DiTConfig]:
    """The diffusion network of ``config.model`` (a U-Net, with text the text-conditioned U-Net, or a DiT by
    ``model.backbone``), wrapped in
    ``diffusion.preconditioning`` (:class:`jaxdiff.models.precond.Preconditioned`: EDM's c_skip / c_out /
    c_in / c_noise, or the input scaling x_t / sqrt(alpha^2 + sigma^2))."""
    cfg = backbone_config(config)
    d = config.diffusion
    check_preconditioning(d.preconditioning, d.prediction, d.sigma_data)
    if isinstance(cfg, DiTConfig):
        net = DiT(_imputation_backbone(config, cfg))
    elif text_enabled(config):
        from jaxdiff.models.text import TextUNet

        if cfg.context_dim is None:
            raise ValueError("config.text.enabled needs model.context_dim (the text encoder's width)")
        t = config.text
        net = TextUNet(cfg, cfg.context_dim, t.layers, t.heads, t.max_len)
    else:
        net = UNet(_imputation_backbone(config, cfg))
    if conditional_imputation(config):
        net = ImputationNet(net, cfg.in_channels)
    if d.preconditioning == "none":
        return net, cfg
    return Preconditioned(net, build_schedule(config), d.preconditioning, float(d.sigma_data)), cfg


def conditional_imputation(config) -> bool:
    """Whether the config trains a conditional imputation model (``imputation.conditional``, CSDI)."""
    return bool(config.imputation.conditional)


def _imputation_backbone(config, cfg):
    """A conditional imputation model's backbone takes 3 C input channels (noisy, observed, mask) and outputs
    the data's C (:class:`jaxdiff.models.imputation.ImputationNet`); otherwise ``cfg`` unchanged."""
    if not conditional_imputation(config):
        return cfg
    return dataclasses.replace(cfg, in_channels=3 * cfg.in_channels, out_channels=cfg.out_channels or cfg.in_channels)


def check_imputation(config):
    """A conditional imputation model trains with the eps / x0 / v MSE on its own masks: no text, guidance
    dropout, variational bound, distillation or consistency training on top; mask proportions and horizon
    valid."""
    from jaxdiff.imputation import check_mask_probs

    im, d = config.imputation, config.diffusion
    clashes = [(text_enabled(config), "text.enabled"), (d.p_uncond > 0, "diffusion.p_uncond > 0"),
               (d.loss_type != "mse", f"diffusion.loss_type={d.loss_type!r}"),
               (bool(config.distill.teacher), "distill.teacher"), (bool(config.consistency.mode), "consistency.mode"),
               (bool(config.latent.autoencoder), "latent.autoencoder")]
    bad = [name for on, name in clashes if on]
    if bad:
        raise ValueError(f"imputation.conditional=True cannot be combined with {', '.join(bad)}; a conditional "
                         "imputation model trains with loss_type='mse' on pixel (or series) data, without text")
    check_mask_probs(im.mask_probs)
    if not 0.0 < im.max_block <= 1.0:
        raise ValueError(f"imputation.max_block={im.max_block}; allowed: a fraction of each axis in (0, 1]")
    length = config.model.image_size
    if not isinstance(im.horizon, int) or not 0 <= im.horizon < length:
        raise ValueError(f"imputation.horizon={im.horizon!r}; allowed: an integer in [0, {length}) (0 = drawn "
                         "per example)")


def example_input(config) -> jax.Array:
    """One zero example of the model's input shape ``[1, *spatial, C]``."""
    m = config.model
    return jnp.zeros((1,) + (m.image_size,) * m.dims + (m.in_channels,))


def init_key(config):
    return run_key(config.seed, Stream.INIT)


def model_fn_for(model, params, *, train: bool = False, dropout_keys=None):
    """``model_fn(x, t, cond)`` from a network and its params (the DESIGN's model_fn contract).

    In training with dropout, ``dropout_keys [B]`` give each example its own dropout key: the network is
    applied per example under ``vmap``, so dropout does not depend on how the batch is split over devices.
    """
    per_example = train and dropout_keys is not None and getattr(getattr(model, "config", None), "dropout", 0)

    def model_fn(x, t, cond=None):
        if not per_example:
            return model.apply({"params": params}, x, t, cond, train=train)

        def one(x, t, c, k):
            c = jax.tree_util.tree_map(lambda a: a[None], c)
            return model.apply({"params": params}, x[None], t[None], c, train=True, rngs={"dropout": k})[0]

        return jax.vmap(one)(x, jnp.broadcast_to(t, x.shape[:1]), cond, dropout_keys)

    return model_fn


def check_distill(config):
    """A distillation round's settings, before anything is built: the teacher workdir exists and was trained
    with this config's network, schedule and parameterization, and the student's parameterization can take
    large steps (:func:`jaxdiff.distill.check_student`)."""
    from jaxdiff.distill import check_student
    from jaxdiff.training.workdir import load_config

    dc, d = config.distill, config.diffusion
    if not os.path.isdir(os.path.join(dc.teacher, "checkpoints")):
        raise ValueError(f"distill.teacher={dc.teacher!r} is not a workdir with checkpoints (train the teacher "
                         "first, or give the previous round's workdir)")
    check_student(d.prediction, dc.student_steps)
    teacher = load_config(dc.teacher)
    for field in ("diffusion.schedule", "diffusion.num_steps", "diffusion.prediction", "diffusion.schedule_kwargs",
                  "model.image_size", "model.in_channels", "model.backbone"):
        va, vb = (functools.reduce(lambda n, k: n[k], field.split("."), c) for c in (teacher, config))
        va, vb = (v.to_dict() if hasattr(v, "to_dict") else v for v in (va, vb))
        if va != vb:
            raise ValueError(f"distill.teacher={dc.teacher!r} has {field}={va!r}, this round {vb!r}; a student "
                             "distils a teacher of its own schedule, parameterization and data shape")


def build_distill_loss(config, model, schedule, teacher):
    """One progressive-distillation round (:func:`jaxdiff.distill.make_distill_loss`): ``teacher`` is
    ``(config, model, schedule, ema_params)`` of ``distill.teacher`` (restored by the task), the student takes
    ``distill.student_steps`` steps."""
    from jaxdiff.distill import make_distill_loss
    from jaxdiff.parameterization import x0_eps_fn

    t_config, t_model, t_schedule, t_params = teacher
    t_fn = x0_eps_fn(model_fn_for(t_model, t_params), t_schedule, t_config.diffusion.prediction)

    def apply_fn(params, x_t, t, cond, keys):
        return model_fn_for(model, params, train=True, dropout_keys=keys)(x_t, t, cond)

    return make_distill_loss(apply_fn, lambda z, t: t_fn(z, t)[0], schedule, config.distill.student_steps,
                             config.diffusion.prediction)


CONSISTENCY_MODES = ("", "ct", "cd")


def check_consistency(config):
    cm, d = config.consistency, config.diffusion
    if cm.mode not in CONSISTENCY_MODES:
        raise ValueError(f"consistency.mode={cm.mode!r}; allowed: {list(CONSISTENCY_MODES)}")
    if d.schedule != "edm" or d.preconditioning != "consistency":
        raise ValueError(f"consistency.mode={cm.mode!r} needs diffusion.schedule='edm' and diffusion.preconditioning="
                         f"'consistency' (got {d.schedule!r}, {d.preconditioning!r})")
    if cm.mode == "cd":
        if not os.path.isdir(os.path.join(cm.teacher, "checkpoints")):
            raise ValueError(f"consistency.teacher={cm.teacher!r} is not a workdir with checkpoints (consistency "
                             "distillation needs a trained diffusion model on the EDM schedule)")
        from jaxdiff.training.workdir import load_config

        if load_config(cm.teacher).diffusion.schedule != "edm":
            raise ValueError(f"consistency.teacher={cm.teacher!r} was not trained on the EDM schedule; allowed: a "
                             "teacher with diffusion.schedule='edm' (its sigma is the student's)")
        if cm.teacher_solver not in ("euler", "heun"):
            raise ValueError(f"consistency.teacher_solver={cm.teacher_solver!r}; allowed: ['euler', 'heun']")
    if cm.distance not in ("pseudo_huber", "l2") or not 1 <= cm.s0 <= cm.s1:
        raise ValueError(f"consistency.distance={cm.distance!r} (allowed: pseudo_huber, l2), s0={cm.s0}, s1={cm.s1} "
                         "(allowed: 1 <= s0 <= s1)")


def build_consistency_loss(config, model, schedule, teacher=None):
    """iCT (:func:`jaxdiff.consistency.make_ct_loss`) on the EDM schedule's levels: the network is f(x, t) with
    ``diffusion.preconditioning = "consistency"``; the step of the curriculum comes with the batch."""
    from jaxdiff.consistency import make_ct_loss

    cm = config.consistency
    check_consistency(config)

    def f_apply(params, x, sigma):
        t = schedule.t_from_logsnr(-2.0 * jnp.log(sigma))
        return model_fn_for(model, params)(x, t, None)

    if cm.mode == "cd":
        return _cd_loss(config, f_apply, schedule, teacher)
    ct = make_ct_loss(f_apply, config.train.num_steps, sigma_min=float(schedule.sigma_min),
                      sigma_max=float(schedule.sigma_max), rho=float(schedule.rho), s0=cm.s0, s1=cm.s1,
                      p_mean=cm.p_mean, p_std=cm.p_std, distance=cm.distance)
    return lambda params, batch, key: ct(params, batch, key, jnp.asarray(batch["step"]).reshape(-1)[0])


def _cd_loss(config, f_apply, schedule, teacher):
    """Consistency distillation (:func:`jaxdiff.consistency.make_cd_loss`): the teacher (``consistency.teacher``,
    an EDM-schedule diffusion model) takes one Euler / Heun step of the PF-ODE between adjacent Karras levels
    (``consistency.num_levels``); the target network is the EMA (the train step hands it over)."""
    from jaxdiff import consistency as cmod
    from jaxdiff.parameterization import x0_eps_fn

    cm = config.consistency
    t_config, t_model, t_schedule, t_params = teacher
    t_fn = x0_eps_fn(model_fn_for(t_model, t_params), t_schedule, t_config.diffusion.prediction)
    denoiser = lambda x, sigma: t_fn(x, t_schedule.t_from_logsnr(-2.0 * jnp.log(sigma)))[0]
    step = (cmod.heun_step if cm.teacher_solver == "heun" else cmod.euler_step)(denoiser)
    levels = cmod.karras_levels(cm.num_levels, float(schedule.sigma_min), float(schedule.sigma_max),
                                float(schedule.rho))
    cd = cmod.make_cd_loss(f_apply, step, levels, distance=cm.distance)

    def loss_fn(params, batch, key, target):
        return cd(params, target, batch, key)

    loss_fn.takes_target = True
    return loss_fn


def build_loss(config, model, schedule, teacher=None):
    """The diffusion loss of ``config.diffusion`` (:func:`jaxdiff.losses.make_loss`); with ``distill.teacher``
    one round of progressive distillation, with ``consistency.mode`` consistency training / distillation
    (``teacher``: the restored teacher's ``(config, model, schedule, ema_params)``, which the task loads)."""
    d = config.diffusion
    if config.distill.teacher:
        return build_distill_loss(config, model, schedule, teacher)
    if config.consistency.mode:
        return build_consistency_loss(config, model, schedule, teacher)

    def apply_fn(params, x_t, t, cond, keys):
        return model_fn_for(model, params, train=True, dropout_keys=keys)(x_t, t, cond)

    loss = losses.make_loss(apply_fn, schedule, prediction=d.prediction, weighting=d.weighting,
                            loss_type=d.loss_type, variance=d.variance,
                            num_levels=config.data.num_levels or 256,  # 0 = continuous data (MSE only)
                            num_steps=None if is_discrete(schedule) else (d.noise_levels or d.vlb_steps),
                            t_min=d.t_min, t_sampling=d.t_sampling, logit_normal_loc=d.logit_normal_loc,
                            logit_normal_scale=d.logit_normal_scale, mode_scale=d.mode_scale,
                            sigma_data=d.sigma_data, edm_p_mean=d.p_mean, edm_p_std=d.p_std,
                            dequantize=bool(config.data.dequantize),
                            p_uncond=d.p_uncond, null_cond=config.model.num_classes)
    if conditional_imputation(config):  # CSDI: random masks, the observed values as input, loss on the rest
        from jaxdiff.imputation import make_conditional_loss

        im = config.imputation
        return make_conditional_loss(loss, tuple(im.mask_probs), im.horizon, im.max_block)
    return loss


def build_optimizer(config):
    """The optimizer of ``config.optim`` (the same one for training and for restoring its checkpoints)."""
    o = config.optim
    tx = make_optimizer(o.learning_rate, o.warmup_steps, o.grad_clip, o.weight_decay,
                        decay_steps=o.decay_steps or None, name=o.optimizer)
    low = config.model.param_dtype in ("bfloat16", "float16") and config.task == "diffusion"
    return master_weights(tx) if low else tx  # float32 master weights for bfloat16 params


def build_discriminator(config):
    """The autoencoder's patch discriminator of ``config.loss`` (``discriminator=True``), else None."""
    lo = config.loss
    return PatchDiscriminator(lo.disc_channels, lo.disc_layers, lo.disc_groups) if lo.discriminator else None


def build_autoencoder(config) -> AutoencoderKL:
    return AutoencoderKL(autoencoder_config(config))


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
    """The pixel pipeline of ``config.data`` (latent data: :func:`jaxdiff.training.latent.latent_pipeline`)."""
    return pipeline_of(config, build_source(config, split), batch_size)


def check_values(config):
    """Values that cannot train are errors naming the field, before anything is built or written: a
    non-finite or non-positive learning rate, step counts and intervals below 1, an unknown sampler."""
    import math

    from jaxdiff import samplers

    o, t, s = config.optim, config.train, config.sample
    if not (isinstance(o.learning_rate, (int, float)) and math.isfinite(o.learning_rate) and o.learning_rate > 0):
        raise ValueError(f"optim.learning_rate={o.learning_rate} cannot train; allowed: a finite number > 0")
    for name, v, low in (("optim.batch_size", o.batch_size, 1), ("optim.warmup_steps", o.warmup_steps, 0),
                         ("optim.decay_steps", o.decay_steps, 0), ("train.num_steps", t.num_steps, 1),
                         ("train.log_every", t.log_every, 1), ("train.sample_every", t.sample_every, 1),
                         ("train.checkpoint_every", t.checkpoint_every, 1),
                         ("train.keep_checkpoints", t.keep_checkpoints, 1), ("train.num_grid_samples",
                                                                            t.num_grid_samples, 0),
                         ("train.max_consecutive_skipped", t.max_consecutive_skipped, 0),
                         ("sample.num_steps", s.num_steps, 1), ("sample.batch_size", s.batch_size, 1)):
        if not isinstance(v, int) or v < low:
            raise ValueError(f"{name}={v!r}; allowed: an integer >= {low}")
    for name, v in (("optim.grad_clip", o.grad_clip), ("optim.weight_decay", o.weight_decay)):
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name}={v}; allowed: a finite number >= 0")
    if t.init_from and not os.path.isdir(os.path.join(t.init_from, "checkpoints")):
        raise ValueError(f"train.init_from={t.init_from!r} is not a workdir with checkpoints")
    if config.distill.teacher:
        check_distill(config)
    if config.consistency.mode:
        check_consistency(config)
    if conditional_imputation(config):
        check_imputation(config)
    if not 0.0 <= o.ema_decay <= 1.0:
        raise ValueError(f"optim.ema_decay={o.ema_decay}; allowed: 0 <= ema_decay <= 1")
    if o.posthoc_ema:
        from jaxdiff.training.ema import sigma_rel_to_gamma

        sigma_rel_to_gamma(tuple(o.posthoc_ema))  # each in (0, sqrt(1/12)): ValueError naming the range
    k = int(t.steps_per_jit)
    if not isinstance(t.snapshot_every, int) or t.snapshot_every < 0 or (t.snapshot_every or k) % k:
        raise ValueError(f"train.snapshot_every={t.snapshot_every!r}; allowed: 0 (= train.checkpoint_every) or a "
                         f"positive multiple of train.steps_per_jit={k}")
    if config.task == "diffusion":
        samplers.get_sampler(s.sampler)  # unknown: ValueError naming the allowed samplers


def check_batch(config, global_batch: int | None = None):
    """The global batch must split evenly over all devices of all processes (over one under ``jit``)."""
    n = 1 if parallel_mode(config) == "jit" else jax.local_device_count() * jax.process_count()
    b = global_batch or config.optim.batch_size
    if b % n:
        raise ValueError(f"optim.batch_size={b} is not divisible by the {n} devices")


def check_steps_per_jit(config):
    k = int(config.train.steps_per_jit)
    t = config.train
    if k < 1 or t.checkpoint_every % k or t.num_steps % k:
        raise ValueError(f"train.steps_per_jit={k} must divide train.checkpoint_every={t.checkpoint_every} "
                         f"and train.num_steps={t.num_steps}")
    return k


def parallel_mode(config) -> str:
    """``config.parallel.mode``: ``jit`` (one device), ``pmap`` (replicated params, one process), ``mesh`` (jit
        over a device mesh, FSDP-sharded state; any number of processes), or ``auto``: mesh for multi-process
    runs, pmap for several local devices, plain jit for one."""
    mode = config.parallel.mode
    if mode not in parallel.MODES:
        raise ValueError(f"unknown parallel.mode {mode!r}; allowed: {list(parallel.MODES)}")
    if mode == "auto":
        if jax.process_count() > 1:
            return "mesh"
        return "pmap" if jax.local_device_count() > 1 else "jit"
    if mode in ("jit", "pmap") and jax.process_count() > 1:
        raise ValueError(f"parallel.mode={mode!r} feeds local devices only; use 'mesh' for multi-process runs")
    return mode


