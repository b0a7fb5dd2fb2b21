"""The declared config schema: every field any task reads, with its default and a one-line comment.

``experiments/configs/default.py`` returns :func:`default_config`; every experiment config starts from it
and overrides fields, so every field can be set from the command line (``--config.parallel.fsdp=2``).
The declaration lives in the library because the library fills these defaults into configs stored by
older workdirs before comparing or restoring them (``jaxdiff.training.workdir``).

:func:`check_config` refuses a field that is not declared here, naming the nearest declared ones.
"""

from __future__ import annotations

import difflib

import ml_collections
from ml_collections.config_dict import placeholder

# Free-form dicts: their keys are a schedule's or a sampler's keyword arguments, checked where used.
FREE_FORM = ("diffusion.schedule_kwargs", "sample.options")


def default_config() -> ml_collections.ConfigDict:
    """All declared fields with their defaults (a DDPM eps-prediction U-Net on CIFAR-10-shaped data)."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # the one seed: init, per-example noise, sample grids (named streams, jaxdiff.rng)
    c.task = "diffusion"  # the training method: a name of jaxdiff.training.tasks.TASKS (diffusion, autoencoder,
    #   classifier, progressive_distillation, consistency_training, consistency_distillation, imputation)

    c.data = d = ml_collections.ConfigDict()
    d.name = "digits"  # TFDS name or offline builder (digits, photos, series), "arrays", or "audio"
    d.config = placeholder(str)  # builder config, e.g. "8" (digits 8x8), "32_8" (series windows)
    d.data_dir = ""  # TFDS data dir; "" = $JAXDIFF_DATA_DIR or ~/jaxdiff_data
    d.num_levels = 256  # levels K of the data (256 uint8, 17 digits); 0 = continuous data
    d.random_flip = False  # random horizontal flips
    d.use_labels = False  # feed labels to the model (class conditioning, classifier task)
    d.dequantize = False  # uniform dequantization noise of one level (continuous-time likelihood)
    d.key = "image"  # feature holding the data in each example
    d.pairs = ""  # reflow: .npz of (noise, x0) pairs from experiments.reflow; trains on them (train split)
    d.audio_dir = ""  # audio: folder of WAV files; "" = synthetic tones written into the data dir
    d.rate = 4000  # audio: sample rate in Hz
    d.length = 512  # audio: samples per clip

    c.model = m = ml_collections.ConfigDict()  # the U-Net (jaxdiff.models.UNetConfig) or the autoencoder
    m.backbone = "unet"  # unet | dit (jaxdiff.models.dit: patch_size, hidden_size, depth, num_heads, remat)
    m.image_size = 32  # spatial size (length for dims=1)
    m.in_channels = 3  # data channels
    m.out_channels = placeholder(int)  # None = in_channels (x2 with learned variance)
    m.base_channels = 128  # U-Net width at the top level
    m.channel_mult = (1, 2, 2, 2)  # U-Net width multipliers per level
    m.num_res_blocks = 2  # residual blocks per level
    m.attention_resolutions = (16,)  # resolutions with self-attention
    m.num_heads = 1  # attention heads
    m.head_channels = placeholder(int)  # channels per head (overrides num_heads)
    m.dropout = 0.0  # dropout in residual blocks (drawn per example)
    m.scale_shift = False  # FiLM-style scale-shift time conditioning (improved DDPM)
    m.resblock_updown = False  # BigGAN-style residual up/down-sampling
    m.conv_resample = True  # convolutions in up/down-sampling
    m.learned_variance = False  # output channels for the variance (set by diffusion.variance)
    m.num_classes = placeholder(int)  # class-conditional U-Net: K classes plus a null class K
    m.context_dim = placeholder(int)  # text conditioning: the text encoder's width
    m.time_embedding = "sinusoidal"  # sinusoidal | fourier (continuous-time SDE models)
    m.time_scale = 1000.0  # t in [0, 1] is scaled by this before the sinusoidal embedding
    m.time_offset = 0.0  # the embedding takes time_scale * t + time_offset (imported DDPM checkpoints: -1)
    m.time_freq_shift = 0.0  # sinusoid frequencies max_period^(-k / (half - shift)) (original DDPM: 1)
    m.time_flip_sin_to_cos = True  # [cos, sin] (True) or [sin, cos] (original DDPM)
    m.skip_rescale = False  # scale skip connections by 1/sqrt(2) (NCSN++)
    m.num_groups = 32  # GroupNorm groups
    m.norm_eps = 1e-5  # GroupNorm epsilon (diffusers' DDPM checkpoints: 1e-6)
    m.downsample_padding = "same"  # same (DDPM: one row / column after) | symmetric (ADM: one each side)
    m.dims = 2  # 2 = images, 1 = audio / series
    m.patch_size = 2  # DiT: patch size
    m.hidden_size = 384  # DiT: width
    m.depth = 12  # DiT: blocks
    m.mlp_ratio = 4.0  # DiT: MLP width / hidden_size
    m.remat = False  # DiT: recompute each block's activations in the backward pass (nn.remat)
    m.dtype = "float32"  # compute dtype (bfloat16 allowed)
    m.param_dtype = "float32"  # parameter dtype
    m.block_out_channels = (128, 256, 512, 512)  # autoencoder task: widths per level
    m.layers_per_block = 2  # autoencoder task: residual blocks per level
    m.latent_channels = 4  # autoencoder task: latent channels
    m.norm_num_groups = 32  # autoencoder task: GroupNorm groups
    m.mid_block_add_attention = True  # autoencoder task: attention in the middle block

    c.diffusion = f = ml_collections.ConfigDict()
    f.schedule = "linear"  # linear | scaled_linear | cosine | sigmoid (discrete) | vp | subvp | ve | edm |
    #   logsnr_linear | cosine_continuous | flow_linear | flow_gvp (flow-matching interpolants)
    f.schedule_kwargs = ml_collections.ConfigDict()  # keyword arguments of the schedule (e.g. sigma_max)
    f.num_steps = 1000  # T of a discrete schedule
    f.prediction = "eps"  # eps | x0 | v | score | velocity (flow matching's u = dx_t/dt): the network's output
    f.loss_type = "mse"  # mse | hybrid (mse + VLB, learned variance) | vlb
    f.weighting = "simple"  # weighting of the eps-MSE over t
    f.variance = "fixed_small"  # fixed_small | fixed_large | learned_range
    f.t_min = 1e-5  # smallest t of continuous-time training
    f.t_sampling = "uniform"  # uniform | edm_lognormal | importance | logit_normal | mode (continuous time)
    f.logit_normal_loc = 0.0  # t_sampling=logit_normal: t = sigmoid(loc + scale n) (SD3 eq. 19)
    f.logit_normal_scale = 1.0
    f.mode_scale = 1.29  # t_sampling=mode: SD3 eq. 20's s
    f.noise_levels = placeholder(int)  # NCSN: L discrete noise levels of a continuous schedule
    f.vlb_steps = placeholder(int)  # VLB of a continuous schedule: its number of steps
    f.preconditioning = "none"  # none | input (the network sees x_t / sqrt(alpha^2 + sigma^2); VE schedules) |
    #   edm (Karras et al. 2022 Table 1: c_skip, c_out, c_in, c_noise around the network; prediction x0)
    f.sigma_data = 0.5  # edm preconditioning and weighting: the data's standard deviation
    f.p_mean = -1.2  # t_sampling=edm_lognormal: ln sigma ~ N(p_mean, p_std^2) (EDM's P_mean, P_std)
    f.p_std = 1.2
    f.p_uncond = 0.0  # condition dropout for classifier-free guidance

    c.text = t = ml_collections.ConfigDict()
    t.enabled = False  # text conditioning (generated digit captions)
    t.layers = 2  # text encoder layers
    t.heads = 4  # text encoder heads
    t.max_len = 24  # tokens per caption

    c.latent = ml_collections.ConfigDict()
    c.latent.autoencoder = ""  # latent diffusion: workdir of a trained autoencoder task ("" = pixels)

    c.loss = lo = ml_collections.ConfigDict()  # autoencoder task
    lo.kl_weight = 1e-6  # weight of the KL term
    lo.discriminator = False  # add a patch discriminator (hinge loss)
    lo.disc_channels = 64  # discriminator width
    lo.disc_layers = 3  # discriminator layers
    lo.disc_groups = 32  # discriminator GroupNorm groups
    lo.disc_weight = 0.1  # adversarial weight
    lo.disc_start = 0  # step at which the adversarial loss starts

    c.classifier = ml_collections.ConfigDict()  # classifier task (noise-aware classifier)
    c.classifier.num_classes = 10  # classes K of the labels
    c.classifier.t_min = 0.0  # smallest t of its noised inputs

    c.optim = o = ml_collections.ConfigDict()
    o.optimizer = "adamw"  # adamw | sgd
    o.batch_size = 128  # global batch (all devices, all processes)
    o.learning_rate = 2e-4  # peak learning rate
    o.warmup_steps = 5000  # linear warm-up steps
    o.decay_steps = 0  # 0: constant after warm-up; else cosine decay to 0 at this step
    o.grad_clip = 1.0  # global-norm gradient clip (0: off)
    o.weight_decay = 0.0  # AdamW weight decay
    o.ema_decay = 0.9999  # EMA of the params (with warm-up)
    o.posthoc_ema = ()  # post-hoc EMA (EDM2): sigma_rel of each tracked power-function EMA, e.g. (0.05, 0.1)

    c.train = tr = ml_collections.ConfigDict()
    tr.num_steps = 800_000  # optimizer steps
    tr.steps_per_jit = 1  # optimizer steps per compiled call (lax.scan)
    tr.preflight = True  # compile the train step before training (.lower().compile()) and log its memory
    tr.log_every = 100  # steps between metric logs
    tr.sample_every = 10_000  # steps between sample grids
    tr.checkpoint_every = 10_000  # steps between checkpoints
    tr.keep_checkpoints = 3  # checkpoints kept
    tr.snapshot_every = 0  # steps between post-hoc EMA snapshots (all kept; 0 = checkpoint_every)
    tr.init_from = ""  # workdir whose final EMA params start a new run (reflow from its parent flow)
    tr.max_consecutive_skipped = 100  # stop with an error after this many skipped steps in a row (0 = never)
    tr.num_grid_samples = 64  # samples in each grid (0: no grids)

    c.distill = dl = ml_collections.ConfigDict()  # task progressive_distillation (experiments/distill.py)
    dl.teacher = ""  # workdir of the teacher (the original model or the previous round)
    dl.student_steps = 0  # N: the student's sampling steps (it learns two teacher DDIM steps in one)

    c.consistency = cm = ml_collections.ConfigDict()  # tasks consistency_training / _distillation (cd)
    cm.teacher = ""  # cd: workdir of the teacher (a diffusion model on the EDM schedule)
    cm.teacher_solver = "heun"  # cd: the teacher's ODE step between adjacent levels (euler | heun)
    cm.num_levels = 18  # cd: Karras levels (the CD paper's N = 18 with Heun)
    cm.s0 = 10  # iCT curriculum: levels at the start ...
    cm.s1 = 1280  # ... and at the end (doubling in between)
    cm.p_mean = -1.1  # log-normal index sampling
    cm.p_std = 2.0
    cm.distance = "pseudo_huber"  # pseudo_huber (c = 0.00054 sqrt(d)) | l2

    c.imputation = im = ml_collections.ConfigDict()  # task imputation: conditional imputation models (CSDI)
    im.mask_probs = (1.0, 1.0, 1.0)  # proportions of training masks: random points, blocks, forecast-shaped
    im.horizon = 0  # forecast masks: the last `horizon` positions missing (0 = drawn in 1..L/2 per example)
    im.max_block = 0.5  # block masks: longest block on each axis, a fraction of its length

    c.sample = s = ml_collections.ConfigDict()
    s.sampler = "ddpm"  # a name of jaxdiff.samplers.SAMPLERS
    s.num_steps = 1000  # sampler steps
    s.num_samples = 50_000  # samples written by experiments.sample
    s.batch_size = 1000  # samples per compiled call
    s.clip_x0 = 0.0  # clip the implied x0 to [-c, c] at every step (0: off)
    s.guidance_scale = 1.0  # classifier-free guidance scale of conditional samples
    s.options = ml_collections.ConfigDict()  # the sampler's extra keyword arguments

    c.eval = e = ml_collections.ConfigDict()
    e.num_samples = 10_000  # samples for the Frechet distance
    e.vlb_examples = 300  # test examples for the VLB bits/dim
    e.bootstrap = 200  # bootstrap resamples for intervals
    e.ode_bpd_examples = 300  # test examples for the probability-flow ODE bits/dim
    e.ode_t_min = placeholder(float)  # its t_min; None = 1e-5 where sigma(0) = 0, else 0

    c.forecast = fc = ml_collections.ConfigDict()  # series: experiments.forecast
    fc.sampler = "ddpm"  # sampler of the imputation
    fc.num_steps = 100  # its steps
    fc.num_samples = 100  # sample paths per window
    fc.clip_x0 = 10.0  # clip of the implied x0
    fc.horizon = 8  # values forecast per window
    fc.jump_length = 10  # RePaint jump length
    fc.resample = 5  # RePaint resamplings

    c.parallel = p = ml_collections.ConfigDict()
    p.mode = "auto"  # auto | jit | pmap | mesh
    p.data = -1  # mesh: data-parallel axis size (-1 = the rest)
    p.fsdp = 1  # mesh: FSDP axis size (params and optimizer state sharded over it)
    return c


def _paths(d, prefix="") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, (dict, ml_collections.ConfigDict)) and key not in FREE_FORM:
            out.update(_paths(v, key + "."))
        else:
            out[key] = v
    return out


def declared_fields() -> list[str]:
    return sorted(_paths(default_config()))


# Fields that once chose a training method beside ``task``, and what replaces them.
REPLACED = {"consistency.mode": "config.task='consistency_training' (ct) or 'consistency_distillation' (cd)",
            "imputation.conditional": "config.task='imputation'"}


def check_config(config) -> None:
    """ValueError naming every field of ``config`` that the schema does not declare, with the nearest
    declared fields (the task name is checked against the task table by ``tasks.get_task``)."""
    allowed = declared_fields()
    given = _paths(config.to_dict() if hasattr(config, "to_dict") else config)
    unknown = sorted(set(given) - set(allowed))
    for u in unknown:
        if u in REPLACED:
            raise ValueError(f"config field {u!r} is gone: the training method is config.task; use {REPLACED[u]}")
    if unknown:
        hints = "; ".join(f"{u!r}: did you mean {difflib.get_close_matches(u, allowed, 3, 0.5) or '?'}"
                          for u in unknown)
        raise ValueError(f"unknown config fields {unknown} ({hints}); declared fields are in "
                         "jaxdiff/training/schema.py (experiments/configs/default.py)")


def check_task_fields(config, task: str, owners: dict[str, tuple[str, ...]]) -> None:
    """A config trains one method: a field that belongs to other tasks only (``owners``: task name -> the
    dotted field prefixes it owns) must keep its declared default under ``task``; ValueError naming the
    field, its value and the tasks it belongs to."""
    own = owners.get(task, ())
    owned = lambda key, prefixes: any(key == p or key.startswith(p + ".") for p in prefixes)
    defaults = _paths(default_config().to_dict())
    for key, value in sorted(_paths(config.to_dict()).items()):
        if owned(key, own):
            continue
        others = [name for name, prefixes in owners.items() if name != task and owned(key, prefixes)]
        v = tuple(value) if isinstance(value, list) else value
        d = defaults.get(key)
        d = tuple(d) if isinstance(d, list) else d
        if others and v != d:
            raise ValueError(f"{key}={value!r} is a field of the tasks {others}, not of config.task={task!r}: a "
                             f"config trains one method; set config.task to one of them or leave {key} at its "
                             f"default {d!r}")


# Flags that once chose the training method of a diffusion config (section, field) -> {value: task}.
LEGACY_METHOD_FLAGS = {("consistency", "mode"): {"ct": "consistency_training", "cd": "consistency_distillation"},
                       ("imputation", "conditional"): {True: "imputation"}}


def _migrate_task(stored: dict) -> None:
    """A workdir written when flags beside ``task`` chose the method gets the method's task (a distillation
    teacher: ``progressive_distillation``); the flags are dropped."""
    methods = []
    for (section, field), tasks in LEGACY_METHOD_FLAGS.items():
        if isinstance(stored.get(section), dict) and field in stored[section]:
            rest = dict(stored[section])
            methods.append(tasks.get(rest.pop(field)))
            stored[section] = rest
    if stored.get("distill", {}).get("teacher"):
        methods.insert(0, "progressive_distillation")
    methods = [m for m in methods if m]
    base = default_config().task
    if methods and stored.get("task", base) == base:
        stored["task"] = methods[0]


def fill_defaults(stored: dict) -> ml_collections.ConfigDict:
    """A complete config from a stored (possibly older, partial) one: declared defaults, then the stored
    values. Older layouts are migrated: ``kind`` -> ``task``; a classifier's top-level ``num_classes``
    -> ``classifier.num_classes`` with ``task = "classifier"``; a method chosen by flags beside ``task``
    (``distill.teacher``, ``consistency.mode``, ``imputation.conditional``) -> its task."""
    stored = dict(stored)
    if "kind" in stored:
        stored["task"] = stored.pop("kind")
    if "input_scaling" in stored.get("diffusion", {}):  # a boolean before the preconditioning field
        d = dict(stored["diffusion"])
        d["preconditioning"] = "input" if d.pop("input_scaling") else "none"
        stored["diffusion"] = d
    if "num_classes" in stored:
        stored.setdefault("classifier", {})
        stored["classifier"] = {**stored["classifier"], "num_classes": stored.pop("num_classes")}
        stored["task"] = "classifier"
    _migrate_task(stored)
    c = default_config()
    for key, value in _paths(stored).items():
        node = c
        parts = key.split(".")
        for p in parts[:-1]:
            if p not in node:
                raise ValueError(f"stored config field {key!r} is not declared; allowed: {declared_fields()}")
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(f"stored config field {key!r} is not declared; nearest: "
                             f"{difflib.get_close_matches(key, declared_fields(), 3, 0.5)}")
        if isinstance(value, list):
            value = tuple(value)
        if key in FREE_FORM:
            value = ml_collections.ConfigDict(value or {})
        _set(node, parts[-1], value)
    return c


def _set(node, name, value):
    try:
        node[name] = value
    except TypeError:  # e.g. an int stored where the default is a float
        del node[name]
        node[name] = value
