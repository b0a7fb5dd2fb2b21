"""The training loop behind ``experiments/train.py``: build everything from a config, train with
jit (one device) or pmap (several), log to TensorBoard, write sample grids, checkpoint and resume.

Everything is importable from a notebook: ``build_model``, ``build_schedule``, ``build_loss``,
``model_fn_for``, ``make_sample_fn``, ``train_and_evaluate``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxdiff import losses, samplers
from jaxdiff.data import Pipeline, load_source, to_float
from jaxdiff.evaluation.grid import make_grid, save_grid
from jaxdiff.guidance import cfg, classifier_guidance
from jaxdiff.latent import decode_after
from jaxdiff.models import UNet, UNetConfig
from jaxdiff.parameterization import clip_x0_model_fn
from jaxdiff.schedules import get_schedule, is_discrete
from jaxdiff.training import parallel
from jaxdiff.training.autoencoder import config_kind, latent_autoencoder
from jaxdiff.training.checkpoint import Checkpointer
from jaxdiff.training.state import create_train_state, make_optimizer
from jaxdiff.training.step import make_train_step

log = logging.getLogger("jaxdiff.train")

# Fields that may change between a run and its resumption (everything else must match).
RESUMABLE_FIELDS = ("train.num_steps", "train.log_every", "train.sample_every", "sample", "eval", "parallel",
                    "distributed")


# ---------------------------------------------------------------------------------------------------
# Building blocks from a config
# ---------------------------------------------------------------------------------------------------


def unet_config(config) -> UNetConfig:
    m = config.model.to_dict()
    m["channel_mult"] = tuple(m["channel_mult"])
    m["attention_resolutions"] = tuple(m["attention_resolutions"])
    known = set(UNetConfig.__dataclass_fields__)
    unknown = sorted(set(m) - known)
    if unknown:
        raise ValueError(f"unknown model config fields {unknown}; allowed: {sorted(known)}")
    if config.diffusion.variance == "learned_range":
        m["learned_variance"] = True
    return UNetConfig(**m).validate()


def text_enabled(config) -> bool:
    """Whether the config trains a text-conditioned model (``config.text.enabled``)."""
    text = config.get("text", None)
    return bool(text is not None and text.get("enabled", False))


def build_model(config) -> tuple[UNet, UNetConfig]:
    cfg = unet_config(config)
    text = config.get("text", None)
    if text_enabled(config):
        from jaxdiff.models.text import TextUNet

        if cfg.context_dim is None:
            raise ValueError("config.text.enabled needs model.context_dim (the text encoder's width)")
        return TextUNet(cfg, cfg.context_dim, text.layers, text.heads, text.max_len), cfg
    if config.diffusion.get("input_scaling", False):
        from jaxdiff.models.unet import InputScaledUNet

        return InputScaledUNet(cfg, build_schedule(config)), cfg
    return UNet(cfg), cfg


def build_schedule(config):
    d = config.diffusion
    kwargs = dict(d.get("schedule_kwargs", {}) or {})
    if d.schedule in ("linear", "scaled_linear", "cosine", "sigmoid"):
        kwargs["num_steps"] = d.num_steps
    return get_schedule(d.schedule, **kwargs)


def model_fn_for(model: UNet, params, *, train: bool = False, dropout_key=None):
    """``model_fn(x, t, cond)`` from a U-Net and its params (the DESIGN's model_fn contract)."""

    def model_fn(x, t, cond=None):
        rngs = {"dropout": dropout_key} if train and dropout_key is not None else {}
        return model.apply({"params": params}, x, t, cond, train=train, rngs=rngs)

    return model_fn


def cond_of(batch, use_labels: bool, text=None):
    """The model's condition for a batch: labels, or (text conditioning) tokens of generated captions
    chosen per example by its index (deterministic)."""
    if text is not None and text.get("enabled", False):  # cond_of sees config.text only
        from jaxdiff.models.text import digit_caption, tokenize

        caps = [digit_caption(int(y), int(i)) for y, i in zip(np.asarray(batch["label"]).ravel(),
                                                                np.asarray(batch["index"]).ravel())]
        tok = tokenize(caps, text.max_len)
        return {"tokens": tok.reshape(np.shape(batch["label"]) + (text.max_len,))}
    return batch.get("label") if use_labels else None


def build_loss(config, model: UNet, schedule):
    d = config.diffusion

    def apply_fn(params, x_t, t, cond, key):
        return model_fn_for(model, params, train=True, dropout_key=key)(x_t, t, cond)

    return losses.make_loss(apply_fn, schedule, prediction=d.prediction, weighting=d.weighting,
                            loss_type=d.loss_type, variance=d.variance,
                            num_levels=config.data.num_levels or 256,  # 0 = continuous data (MSE only)
                            num_steps=None if is_discrete(schedule) else
                            (d.get("noise_levels", None) or d.get("vlb_steps", None)),
                            t_min=d.get("t_min", 1e-5), t_sampling=d.get("t_sampling", "uniform"),
                            dequantize=bool(config.data.get("dequantize", False)),
                            p_uncond=d.get("p_uncond", 0.0), null_cond=config.model.get("num_classes", None))


def build_optimizer(config):
    """The optimizer of ``config.optim`` (the same one for training and for restoring its checkpoints)."""
    o = config.optim
    return make_optimizer(o.learning_rate, o.warmup_steps, o.grad_clip, o.weight_decay,
                          decay_steps=o.decay_steps or None, name=o.get("optimizer", "adamw"))


def build_source(config, split: str, latent: bool = True):
    """The data source of ``config.data``: a TFDS (or offline) dataset, or a WAV folder (``name = "audio"``;
    ``audio_dir`` empty means synthetic tones written into the data dir); for a latent-diffusion config
    (``config.latent.autoencoder``) its latents unless ``latent=False``."""
    d = config.data
    if latent and latent_autoencoder(config):
        from jaxdiff.training.autoencoder import latent_source

        return latent_source(config, split)
    if d.name == "audio":
        from jaxdiff.data.audio import load_wav_folder, make_tones
        from jaxdiff.data.pipeline import default_data_dir

        folder = d.get("audio_dir", "") or make_tones(os.path.join(d.data_dir or default_data_dir(), "tones"))
        return load_wav_folder(folder, split, rate=d.rate, length=d.length, channels=config.model.in_channels)
    return load_source(d.name, split, d.data_dir or None, config=d.get("config", None))


def build_pipeline(config, split: str = "train", batch_size: int | None = None, latent: bool = True) -> Pipeline:
    src = build_source(config, split, latent)
    levels = 0 if latent and latent_autoencoder(config) else config.data.num_levels  # latents are continuous
    return Pipeline(src, batch_size or config.optim.batch_size, levels, config.seed,
                    image_key=config.data.get("key", "image"), random_flip=config.data.random_flip,
                    process_index=jax.process_index(), process_count=jax.process_count())


def make_sample_fn(config, model: UNet, schedule, *, sampler: str, num_steps: int, num_samples: int,
                   clip_x0: float | None = None, classifier_fn=None, **options):
    """A jitted ``fn(params, key, labels=None, guidance_scale=1.0) -> samples [N, H, W, C]``; the implied x0
    is clipped to [-clip_x0, clip_x0] at every step when ``clip_x0`` (default ``config.sample.clip_x0``) is
    set; with labels and a class-conditional model, classifier-free guidance at ``guidance_scale`` (a
    traced argument: changing it does not recompile)."""
    ucfg = model.config
    shape = (num_samples,) + (ucfg.image_size,) * ucfg.dims + (ucfg.in_channels,)
    if config.diffusion.variance == "learned_range" and sampler == "ddpm":
        options.setdefault("variance", "learned_range")
    sample_fn = samplers.get_sampler(sampler)
    if num_steps is None or num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    samplers.timegrids.check_steps(schedule, num_steps, options.get("spacing", "uniform"))  # before compiling

    clip = config.sample.get("clip_x0", None) if clip_x0 is None else clip_x0
    if sampler == config.sample.get("sampler"):  # the config's options belong to the config's sampler
        options = {**dict(config.sample.get("options", {}) or {}), **options}

    num_classes = config.model.get("num_classes", None)
    text_on = text_enabled(config)

    decode, ae_params, scale = None, None, 1.0
    if latent_autoencoder(config):  # latent diffusion: sampler -> decoder, compiled as one program
        from jaxdiff.training.autoencoder import latent_decoder

        decode, ae_params, scale = latent_decoder(config)

    def run(params, key, labels=None, guidance_scale=1.0):
        return run_jit(params, ae_params, key, labels, guidance_scale)

    @jax.jit
    def run_jit(params, ae_params, key, labels=None, guidance_scale=1.0):
        fn = functools.partial(sample_latent, params)
        if decode is not None:
            fn = decode_after(fn, functools.partial(decode, ae_params), scale)
        return fn(key, labels, guidance_scale)

    def sample_latent(params, key, labels, guidance_scale):
        k1, k2 = jax.random.split(key)
        x_T = samplers.prior_sample(schedule, k1, shape)
        mf = model_fn_for(model, params)
        cond = labels
        if labels is not None and text_on:  # labels are caption tokens [N, L]; null = empty caption
            mf, cond = cfg(mf, guidance_scale), {"tokens": labels}
        elif labels is not None and classifier_fn is not None:  # classifier guidance (scale = guidance_scale)
            mf = classifier_guidance(mf, classifier_fn, schedule, guidance_scale,
                                     prediction=config.diffusion.prediction)
        elif labels is not None and num_classes is not None:
            mf = cfg(mf, guidance_scale, null_cond=jnp.asarray(num_classes, jnp.int32))
        if clip:
            mf = clip_x0_model_fn(mf, schedule, config.diffusion.prediction, clip)
        return sample_fn(mf, schedule, x_T, k2, num_steps=num_steps,
                         prediction=config.diffusion.prediction, cond=cond, **options)

    return run


# ---------------------------------------------------------------------------------------------------
# Workdir bookkeeping
# ---------------------------------------------------------------------------------------------------


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check_workdir(config, workdir: str):
    """Refuse to continue a workdir that holds a run of a different config (never overwrite silently)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        a, b = _flatten(old), _flatten(new)
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                      and not any(k == r or k.startswith(r + ".") for r in RESUMABLE_FIELDS))
        if diff:
            raise ValueError(f"workdir {workdir} holds a run with a different config (fields {diff}); "
                             "use a new --workdir, or the same config to resume it")
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(new, f, indent=2)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir} has no config.json: is it a jaxdiff training workdir?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


# ---------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------


def parallel_mode(config) -> str:
    """``config.parallel.mode``: ``pmap`` (replicated params, one process), ``mesh`` (jit over a device mesh,
    FSDP-sharded state; any number of processes), or ``auto``: mesh for multi-process runs, pmap for several
    local devices, plain jit for one."""
    mode = config.get("parallel", {}).get("mode", "auto")
    if mode not in parallel.MODES:
        raise ValueError(f"unknown parallel.mode {mode!r}; allowed: {list(parallel.MODES)}")
    if mode == "auto":
        if jax.process_count() > 1:
            return "mesh"
        return "pmap" if jax.local_device_count() > 1 else "jit"
    if mode == "pmap" and jax.process_count() > 1:
        raise ValueError("parallel.mode='pmap' feeds local devices only; use 'mesh' for multi-process runs")
    return mode


def _replicate(tree, n):
    """One copy per local device for pmap (from host or any single device: a restored state is committed
    to one device)."""
    return jax.tree_util.tree_map(lambda a: np.broadcast_to(np.asarray(a), (n,) + np.shape(a)), tree)


def _unreplicate(tree):
    return jax.tree_util.tree_map(lambda a: a[0], tree)


def init_state(config, model: UNet, tx):
    ucfg = model.config
    x = jnp.zeros((1,) + (ucfg.image_size,) * ucfg.dims + (ucfg.in_channels,))
    variables = model.init(jax.random.PRNGKey(config.seed), x, jnp.zeros((1,)))
    return create_train_state(variables["params"], tx, config.seed)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Train per ``config`` in ``workdir`` (resuming from its latest checkpoint); returns final metrics."""
    from tqdm import tqdm

    from jaxdiff.training import writers

    kind = config_kind(config)
    tx = build_optimizer(config)
    if kind == "autoencoder":  # the same machinery (EMA, checkpoints, resume) for the LDM autoencoder
        from jaxdiff.training import autoencoder as ae

        model = ae.build_autoencoder(config)
        loss_fn = ae.build_loss(config, model)
        make_state = lambda: create_train_state(ae.init_params(config, model), tx, config.seed)
    else:
        model, ucfg = build_model(config)
        schedule = build_schedule(config)
        loss_fn = build_loss(config, model, schedule)
        make_state = lambda: init_state(config, model, tx)
    k = int(config.train.steps_per_jit)
    if k < 1 or config.train.checkpoint_every % k or config.train.num_steps % k:
        raise ValueError(f"train.steps_per_jit={k} must divide train.checkpoint_every="
                         f"{config.train.checkpoint_every} and train.num_steps={config.train.num_steps}")
    n_dev = jax.local_device_count()
    if config.optim.batch_size % (n_dev * jax.process_count()):
        raise ValueError(f"optim.batch_size={config.optim.batch_size} is not divisible by the "
                         f"{n_dev * jax.process_count()} devices")
    pipeline = build_pipeline(config)
    if kind == "autoencoder":
        ae.check_autoencoder_input(config, pipeline.batch(0)["x"].shape)
    else:
        ucfg.check_input(pipeline.batch(0)["x"].shape)
    check_workdir(config, workdir)

    mode = parallel_mode(config)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=config.train.checkpoint_every,
                        keep=config.train.keep_checkpoints)
    step_fn = make_train_step(loss_fn, tx, ema_decay=config.optim.ema_decay,
                              axis_name="batch" if mode == "pmap" else None, steps_per_jit=k)
    if mode == "mesh":  # jit over a Mesh on global arrays, FSDP-sharded state
        par = config.get("parallel", {})
        mesh = parallel.make_mesh(par.get("data", -1), par.get("fsdp", 1))
        state_sh = parallel.state_shardings(jax.eval_shape(make_state), mesh)
        state = jax.jit(make_state, out_shardings=state_sh)()
        b_sh = parallel.batch_sharding(mesh)
        if k > 1:
            b_sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, ("data", "fsdp")))
        p_step = jax.jit(step_fn, in_shardings=(state_sh, b_sh), out_shardings=(state_sh, parallel.replicated(mesh)),
                         donate_argnums=(0,))
    else:
        state = make_state()
    start = 0
    if ckpt.latest_step() is not None:
        state, meta, start = ckpt.restore(state)
        log.info("resumed from step %d (data position %s)", start, meta.get("data"))

    use_labels = bool(config.data.use_labels)

    pmapped = mode == "pmap"
    if pmapped:
        p_step = jax.pmap(step_fn, axis_name="batch", donate_argnums=(0,))
        state = _replicate(state, n_dev)
    elif mode == "jit":
        p_step = jax.jit(step_fn, donate_argnums=(0,))

    text_cfg = config.get("text", None)

    def with_cond(b, step):
        c = cond_of(b, use_labels, text_cfg)
        out = {"x": b["x"], "index": b["index"]}
        if c is not None:
            out["cond"] = c
        if kind == "autoencoder":  # per example, so that it splits over devices like the rest
            out["step"] = np.full(len(b["index"]), step, np.int32)
        return out

    def get_batch(step):
        bs = [with_cond(pipeline.batch(step + j), step + j) for j in range(k)]
        b = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *bs) if k > 1 else bs[0]
        if pmapped:  # [k?, B, ...] -> [dev, k?, B/dev, ...]
            ax = 1 if k > 1 else 0
            b = jax.tree_util.tree_map(
                lambda v: np.moveaxis(v.reshape(v.shape[:ax] + (n_dev, -1) + v.shape[ax + 1:]), ax, 0), b)
        elif mode == "mesh":  # this process's rows -> global arrays
            b = parallel.global_batch(b, b_sh)
        return b

    writer = writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    if not config.train.num_grid_samples:
        grid_fn = None
    elif kind == "autoencoder":  # test images, then their reconstructions
        test_x = build_pipeline(config, "test", config.train.num_grid_samples).batch(0)["x"]
        grid_fn = ae.grid_fn(model, test_x)
    else:
        grid_fn = make_sample_fn(config, model, schedule, sampler=config.sample.sampler,
                                 num_steps=config.sample.num_steps, num_samples=config.train.num_grid_samples)
    host_state = lambda: _unreplicate(state) if pmapped else state

    def write_samples(step):
        if not config.train.num_grid_samples:
            return
        s = host_state()
        x = parallel.to_host(grid_fn(s.ema_params, jax.random.fold_in(jax.random.PRNGKey(config.seed + 7), step)))
        if jax.process_index() == 0:
            path = save_grid(x, os.path.join(workdir, "samples", f"grid_{step:07d}.png"))
            writer.write_images(step, {"samples": make_grid(x)[None]})
            log.info("wrote %s", path)

    metrics, history = {}, []
    t0, last_log = time.time(), start
    bar = tqdm(total=config.train.num_steps, initial=start, desc="train", unit="step",
               disable=jax.process_index() > 0, mininterval=2.0)
    step = start
    while step < config.train.num_steps:
        state, m = p_step(state, get_batch(step))
        step += k
        bar.update(k)
        if step % config.train.log_every < k or step == config.train.num_steps:
            m = jax.device_get(_unreplicate(m) if pmapped else m)
            metrics = {key: float(v) for key, v in m.items()}
            history.append((step, metrics["loss"]))
            rate = (step - last_log) / max(time.time() - t0, 1e-9)
            metrics["steps_per_sec"] = rate
            writer.write_scalars(step, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", sps=f"{rate:.1f}")
            t0, last_log = time.time(), step
        final = step == config.train.num_steps
        if step % config.train.checkpoint_every == 0 or final:
            meta = {"step": step, "data": pipeline.position(step), "seed": config.seed}
            if final and kind == "autoencoder":  # stored with the autoencoder: latents' 1 / std
                meta["scale_factor"] = ae.latent_scale(model, host_state().ema_params,
                                                       to_float(pipeline.all_images(), config.data.num_levels))
                log.info("latent scale factor %.5f", meta["scale_factor"])
            ckpt.save(step, host_state(), meta, force=final)
        if step % config.train.sample_every < k or step == config.train.num_steps:
            write_samples(step)
    bar.close()
    ckpt.close()
    writer.close()
    metrics["step"] = step
    metrics["history"] = history  # (step, loss) at every log step of this call
    return metrics


# ---------------------------------------------------------------------------------------------------
# Restoring a trained model (sample.py / evaluate.py)
# ---------------------------------------------------------------------------------------------------


def restore_trained(workdir: str, step: int | None = None):
    """``(config, model, schedule, ema_params, step)`` from a training workdir's latest checkpoint.

    Raises FileNotFoundError with the workdir named when it has no config or no checkpoint."""
    config = load_config(workdir)
    if config_kind(config) == "autoencoder":
        raise ValueError(f"{workdir} holds an autoencoder, not a diffusion model: evaluate it with "
                         f"experiments.evaluate, or train a latent-diffusion config on it (latent.autoencoder)")
    model, _ = build_model(config)
    schedule = build_schedule(config)
    state, _, step = restore_state(workdir, lambda tx: init_state(config, model, tx), build_optimizer(config), step)
    return config, model, schedule, state.ema_params, step


def restore_state(workdir: str, make_state, tx, step: int | None = None):
    """``(state, meta, step)``: the TrainState of ``make_state(tx)``'s structure restored from the workdir's
    latest (or given) checkpoint; FileNotFoundError naming the workdir when it has none."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir) or not os.listdir(ckpt_dir):
        raise FileNotFoundError(f"no checkpoint in {ckpt_dir}: train first with experiments.train "
                                f"--workdir {workdir}")
    ckpt = Checkpointer(ckpt_dir, async_save=False)
    try:
        return ckpt.restore(make_state(tx), step)
    finally:
        ckpt.close()


def generate(config, model, schedule, params, *, sampler: str, num_steps: int, num_samples: int,
             batch_size: int, seed: int, labels=None, clip_x0: float | None = None,
             guidance_scale: float = 1.0, classifier_fn=None, stats: dict | None = None,
             **options) -> np.ndarray:
    """``num_samples`` samples in [-1, 1] (numpy), in batches of one compiled sampler. For the adaptive
    ``ode`` sampler, ``stats`` (a dict, if given) receives ``nfe``: the largest count over the batches."""
    batch_size = min(batch_size, num_samples)
    text_on = text_enabled(config)
    cfg_path = labels is not None and classifier_fn is None and (text_on or config.model.get("num_classes"))
    if cfg_path and guidance_scale != 1.0 and not config.diffusion.get("p_uncond", 0.0):
        raise ValueError(f"guidance_scale={guidance_scale} needs a model trained with condition dropout "
                         "(diffusion.p_uncond > 0); this one was not, so only guidance_scale=1 is allowed")
    if labels is not None and not text_on and classifier_fn is None:
        k = config.model.get("num_classes")
        bad = np.asarray(labels)[(np.asarray(labels) < 0) | (np.asarray(labels) >= (k or 0))]
        if bad.size:
            raise ValueError(f"unknown labels {bad[:5].tolist()}; allowed: 0..{(k or 0) - 1}")
    adaptive = sampler == "ode" and stats is not None
    if adaptive:
        options["return_nfe"] = True
    fn = make_sample_fn(config, model, schedule, sampler=sampler, num_steps=num_steps,
                        num_samples=batch_size, clip_x0=clip_x0, classifier_fn=classifier_fn, **options)
    out = []
    for i in range(0, num_samples, batch_size):
        lab = None
        if labels is not None:
            chunk = np.asarray(labels[i:i + batch_size])
            idx = np.arange(batch_size) % len(chunk)  # pad the last batch by repetition
            lab = jnp.asarray(chunk[idx])
        x = fn(params, jax.random.fold_in(jax.random.PRNGKey(seed), i), lab, jnp.asarray(guidance_scale, jnp.float32))
        if adaptive:
            x, nfe = x
            stats["nfe"] = max(stats.get("nfe", 0), int(nfe))
        out.append(np.asarray(x))
    return np.concatenate(out)[:num_samples]


def generate_imputed(config, model, schedule, params, x_known, mask, *, sampler: str, num_steps: int,
                     resample: int = 1, jump_length: int = 10, batch_size: int = 500, seed: int = 0,
                     labels=None, clip_x0: float | None = None, **options) -> np.ndarray:
    """Imputation (:func:`jaxdiff.imputation.impute`: replacement + RePaint) of ``x_known [N, ...]`` where
    ``mask`` (the data's shape without the batch axis; 1 = known) is 0, in batches of one compiled call."""
    from jaxdiff.imputation import check_mask, impute

    x_known = np.asarray(x_known, np.float32)
    check_mask(x_known, mask)
    if labels is not None and not config.model.get("num_classes"):
        raise ValueError("labels need a class-conditional model (model.num_classes)")
    jump_length = min(jump_length, num_steps)
    samplers.timegrids.check_steps(schedule, num_steps // jump_length, "uniform")
    clip = config.sample.get("clip_x0", None) if clip_x0 is None else clip_x0
    batch_size = min(batch_size, len(x_known))
    mask = jnp.asarray(mask, jnp.float32)

    @jax.jit
    def run(params, x, y, key):
        mf = model_fn_for(model, params)
        if clip:
            mf = clip_x0_model_fn(mf, schedule, config.diffusion.prediction, clip)
        return impute(mf, schedule, x, mask, key, sampler=sampler, num_steps=num_steps, resample=resample,
                      jump_length=jump_length, prediction=config.diffusion.prediction, cond=y, **options)

    out = []
    for i in range(0, len(x_known), batch_size):
        idx = np.arange(i, i + batch_size) % len(x_known)  # pad the last batch by repetition
        y = None if labels is None else jnp.asarray(np.asarray(labels)[idx], jnp.int32)
        x = run(params, jnp.asarray(x_known[idx]), y, jax.random.fold_in(jax.random.PRNGKey(seed), i))
        out.append(np.asarray(x)[: len(x_known) - i])
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------------
# Noise-aware classifier (classifier guidance)
# ---------------------------------------------------------------------------------------------------


def train_classifier(config, workdir: str) -> dict[str, Any]:
    """Train ``NoisyClassifier`` on noised inputs of the config's data and schedule; writes
    ``workdir/classifier.msgpack`` (never overwriting) and ``config.json``; returns final metrics."""
    import flax.serialization

    from jaxdiff.models.classifier import NoisyClassifier, make_classifier_loss

    ucfg = unet_config(config)
    clf = NoisyClassifier(ucfg, num_classes=config.num_classes)
    schedule = build_schedule(config)
    pipeline = build_pipeline(config)
    ucfg.check_input(pipeline.batch(0)["x"].shape)
    path = os.path.join(workdir, "classifier.msgpack")
    if os.path.exists(path):
        raise ValueError(f"{path} exists; use a new --workdir (trained classifiers are never overwritten)")
    check_workdir(config, workdir)
    x = jnp.zeros((1,) + (ucfg.image_size,) * ucfg.dims + (ucfg.in_channels,))
    params = clf.init(jax.random.PRNGKey(config.seed), x, jnp.zeros((1,)))["params"]
    tx = make_optimizer(config.optim.learning_rate, config.optim.warmup_steps, config.optim.grad_clip)
    opt = tx.init(params)
    loss_fn = make_classifier_loss(lambda p, xt, t: clf.apply({"params": p}, xt, t), schedule)

    @jax.jit
    def step(params, opt, batch, key):
        (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), opt, loss, aux["accuracy"].mean()

    key = jax.random.PRNGKey(config.seed + 1)
    for i in range(config.train.num_steps):
        b = pipeline.batch(i)
        params, opt, loss, acc = step(params, opt, {"x": b["x"], "label": b["label"]}, jax.random.fold_in(key, i))
        if (i + 1) % config.train.log_every == 0:
            log.info("classifier step %d: loss %.4f, accuracy on x_t %.3f", i + 1, loss, acc)
    with open(path, "wb") as f:
        f.write(flax.serialization.to_bytes(params))
    return {"loss": float(loss), "accuracy": float(acc), "step": config.train.num_steps}


def load_classifier(workdir: str):
    """``(classifier_fn(x_t, t) -> logits, config)`` from a train_classifier workdir."""
    import flax.serialization

    from jaxdiff.models.classifier import NoisyClassifier

    config = load_config(workdir)
    path = os.path.join(workdir, "classifier.msgpack")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no classifier.msgpack in {workdir}: train it with experiments.train_classifier")
    ucfg = unet_config(config)
    clf = NoisyClassifier(ucfg, num_classes=config.num_classes)
    x = jnp.zeros((1,) + (ucfg.image_size,) * ucfg.dims + (ucfg.in_channels,))
    template = clf.init(jax.random.PRNGKey(0), x, jnp.zeros((1,)))["params"]
    with open(path, "rb") as f:
        params = flax.serialization.from_bytes(template, f.read())
    return (lambda x_t, t: clf.apply({"params": params}, x_t, t)), config
