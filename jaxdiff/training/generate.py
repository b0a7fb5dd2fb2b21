"""Generation drivers: samples (with classifier-free or classifier guidance, latent decoding), imputation and
SDEdit from a trained model, each one compiled program over its batches.

``make_sample_fn`` returns one jitted function of ``(params, key, labels, guidance_scale)``: the model
function, guidance and the decoder are built inside it, so changing the params, key, labels or scale never
recompiles. No compiled function is kept between calls here: a caller that samples with the same settings
again keeps the function ``make_sample_fn`` gave it (the training loop keeps its grid sampler for the run).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import samplers
from jaxdiff.guidance import cfg, classifier_guidance
from jaxdiff.imputation import inpaint_mask
from jaxdiff.latent import decode_after
from jaxdiff.models.imputation import takes_observations
from jaxdiff.models.model_fn import model_fn_for
from jaxdiff.parameterization import clip_x0_model_fn
from jaxdiff.rng import Stream, run_key
from jaxdiff.training.build import build_pipeline, text_enabled
from jaxdiff.training.latent import latent_autoencoder, latent_decoder


def make_sample_fn(config, model, schedule, *, sampler: str, num_steps: int, num_samples: int,
                   clip_x0: float | None = None, classifier_fn=None, **options):
    """A jitted ``fn(params, key, labels=None, guidance_scale=1.0) -> samples [N, H, W, C]``; the implied x0
    is clipped to [-clip_x0, clip_x0] at every step when ``clip_x0`` (default ``config.sample.clip_x0``) is
    set; with labels and a class-conditional model, classifier-free guidance at ``guidance_scale`` (a
    traced argument: changing it does not recompile)."""
    ucfg = model.config
    shape = (num_samples,) + (ucfg.image_size,) * ucfg.dims + (ucfg.in_channels,)
    sample_fn = samplers.get_sampler(sampler)
    if config.diffusion.variance == "learned_range" and "variance" in sample_fn.defaults:
        options.setdefault("variance", "learned_range")  # a sampler that reads the learned variance channels
    if num_steps is None or num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    samplers.timegrids.check_steps(schedule, num_steps, options.get("spacing", sample_fn.spacing))  # before compiling

    clip = config.sample.clip_x0 if clip_x0 is None else clip_x0
    if sampler == config.sample.sampler:  # the config's options belong to the config's sampler
        options = {**config.sample.options.to_dict(), **options}
    num_classes = config.model.num_classes
    text_on = text_enabled(config)

    decode, ae_params, scale = None, None, 1.0
    if latent_autoencoder(config):  # latent diffusion: sampler -> decoder, compiled as one program
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


def generate(config, model, schedule, params, *, sampler: str, num_steps: int, num_samples: int,
             batch_size: int, seed: int, labels=None, clip_x0: float | None = None,
             guidance_scale: float = 1.0, classifier_fn=None, stats: dict | None = None,
             **options) -> np.ndarray:
    """``num_samples`` samples in [-1, 1] (numpy), in batches of one compiled sampler. For the adaptive
    ``ode`` sampler, ``stats`` (a dict, if given) receives ``nfe``: the largest count over the batches."""
    batch_size = min(batch_size, num_samples)
    text_on = text_enabled(config)
    if labels is None and guidance_scale != 1.0:
        raise ValueError(f"guidance_scale={guidance_scale} needs a condition to guide towards (labels, a class "
                         "label or a prompt); without one only guidance_scale=1 is allowed")
    cfg_path = labels is not None and classifier_fn is None and (text_on or config.model.num_classes)
    if cfg_path and guidance_scale != 1.0 and not config.diffusion.p_uncond:
        raise ValueError(f"guidance_scale={guidance_scale} needs a model trained with condition dropout "
                         "(diffusion.p_uncond > 0); this one was not, so only guidance_scale=1 is allowed")
    if labels is not None and not text_on and classifier_fn is None:
        k = config.model.num_classes
        bad = np.asarray(labels)[(np.asarray(labels) < 0) | (np.asarray(labels) >= (k or 0))]
        if bad.size:
            raise ValueError(f"unknown labels {bad[:5].tolist()}; allowed: 0..{(k or 0) - 1}")
    adaptive = samplers.get_sampler(sampler).nfe is None and stats is not None  # the solve reports its NFE
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
        key = jax.random.fold_in(run_key(seed, Stream.SAMPLE), i)
        x = fn(params, key, lab, jnp.asarray(guidance_scale, jnp.float32))
        if adaptive:
            x, nfe = x
            stats["nfe"] = max(stats.get("nfe", 0), int(nfe))
        out.append(np.asarray(x))
    return np.concatenate(out)[:num_samples]


def generate_imputed(config, model, schedule, params, x_known, mask, *, sampler: str, num_steps: int,
                     resample: int = 1, jump_length: int = 10, batch_size: int = 500, seed: int = 0,
                     labels=None, clip_x0: float | None = None, **options) -> np.ndarray:
    """Imputation of ``x_known [N, ...]`` where ``mask`` (the data's shape without the batch axis, or with it;
    1 = known) is 0, in batches of one compiled call: a conditional imputation model (an
    :class:`~jaxdiff.models.imputation.ImputationNet`, ``task = "imputation"``) samples once with the observed
    values as input (:func:`jaxdiff.imputation.conditional_impute`; ``resample`` and ``jump_length`` unused),
    any other model by replacement + RePaint (:func:`jaxdiff.imputation.impute`)."""
    from jaxdiff.imputation import check_missing, conditional_impute, impute

    x_known = np.asarray(x_known, np.float32)
    check_missing(mask, x_known.shape)  # the mask's shape, and something to impute in every example
    if labels is not None and not config.model.num_classes:
        raise ValueError("labels need a class-conditional model (model.num_classes)")
    conditional = takes_observations(model)
    if conditional:
        resample, jump_length = 1, num_steps
    jump_length = min(jump_length, num_steps)
    samplers.timegrids.check_steps(schedule, num_steps // jump_length, "uniform")
    clip = config.sample.clip_x0 if clip_x0 is None else clip_x0
    batch_size = min(batch_size, len(x_known))
    per_example = np.ndim(mask) == x_known.ndim  # a mask per example is batched with x

    @jax.jit
    def run(params, x, mask, y, key):
        mf = model_fn_for(model, params)
        if clip:
            mf = clip_x0_model_fn(mf, schedule, config.diffusion.prediction, clip)
        if conditional:
            return conditional_impute(mf, schedule, x, mask, key, sampler=sampler, num_steps=num_steps,
                                      prediction=config.diffusion.prediction, label=y, **options)
        return impute(mf, schedule, x, mask, key, sampler=sampler, num_steps=num_steps, resample=resample,
                      jump_length=jump_length, prediction=config.diffusion.prediction, cond=y, **options)

    mask = np.asarray(mask, np.float32)

    return _in_batches(x_known, batch_size, seed, lambda x, idx, key: run(
        params, x, jnp.asarray(mask[idx] if per_example else mask),
        None if labels is None else jnp.asarray(np.asarray(labels)[idx], jnp.int32), key))


def _in_batches(xs, batch_size: int, seed: int, fn):
    """``fn(x_batch, idx, key)`` over ``xs`` in batches of one compiled shape (the last padded by repetition),
    each batch's key from the SAMPLE stream and its offset; the results concatenated, padding dropped."""
    out = []
    for i in range(0, len(xs), batch_size):
        idx = np.arange(i, i + batch_size) % len(xs)
        x = fn(jnp.asarray(xs[idx]), idx, jax.random.fold_in(run_key(seed, Stream.SAMPLE), i))
        out.append(np.asarray(x)[: len(xs) - i])
    return np.concatenate(out)


def inpaint_test_images(config, model, schedule, params, region: str, *, sampler: str, num_steps: int,
                        resample: int = 5, jump_length: int = 10, seed: int = 0, clip_x0: float | None = None,
                        num_images: int = 10, per_image: int = 8, **options) -> dict:
    """Inpaint ``region`` (``jaxdiff.imputation.MASKS``) of the first ``num_images`` test images,
    ``per_image`` samples each: ``{"x0", "labels", "mask", "known", "samples"}`` (RePaint over any sampler, or
    one pass of a conditional imputation model); ``labels`` are the test images' (None without labels)."""
    if latent_autoencoder(config):
        raise ValueError("inpainting imputes in the model's data space; a latent-diffusion model's pixel masks do "
                         "not map onto its latents (not supported); use a pixel-space model")
    test = build_pipeline(config, "test", 1)
    batches = [test.batch(i) for i in range(num_images)]
    x0 = np.stack([b["x"][0] for b in batches])
    labels = np.stack([b["label"][0] for b in batches]) if "label" in batches[0] else None
    mask = inpaint_mask(region, x0.shape[1:], seed)
    known = np.repeat(x0, per_image, axis=0)
    x = generate_imputed(config, model, schedule, params, known, mask, sampler=sampler, num_steps=num_steps,
                         resample=resample, jump_length=jump_length, seed=seed, clip_x0=clip_x0, **options)
    return {"x0": x0, "labels": labels, "mask": mask, "known": known, "samples": x}


def condition_labels(config, n: int, *, prompt: str | None = None, label: int | None = None,
                     classifier_config=None):
    """The labels ``generate`` takes for ``n`` samples: caption tokens of ``prompt`` (text models), or class
    ``label`` (-1: 0..K-1 in turn) of a class-conditional model or of a guiding classifier; None for neither."""
    if prompt is not None:
        if not text_enabled(config):
            raise ValueError("a prompt needs a text-conditioned model (config.text.enabled)")
        from jaxdiff.models.text import tokenize

        if len(prompt.encode("utf-8")) > config.text.max_len:
            raise ValueError(f"the prompt is {len(prompt.encode('utf-8'))} bytes; the text context holds at most "
                             f"text.max_len={config.text.max_len}")
        return np.repeat(tokenize([prompt], config.text.max_len), n, axis=0)
    if label is None:
        return None
    k = classifier_config.classifier.num_classes if classifier_config is not None else config.model.num_classes
    if not k:
        raise ValueError("a label needs a class-conditional model (model.num_classes) or a guiding classifier")
    if not -1 <= label < k:
        raise ValueError(f"label={label}; allowed: 0..{k - 1}, or -1 for all classes in turn")
    return np.arange(n) % k if label == -1 else np.full(n, label)


def generate_sdedit(config, model, schedule, params, x_init, *, t_start: float, sampler: str, num_steps: int,
                    seed: int = 0, clip_x0: float | None = None, batch_size: int = 500, **options) -> np.ndarray:
    """SDEdit / img2img (:func:`jaxdiff.imputation.sdedit`) of images ``x_init [N, ...]`` in [-1, 1]: noised to
    ``t_start`` and sampled down the rest of the ``num_steps`` grid, in batches of one compiled call."""
    from jaxdiff.imputation import sdedit

    x_init = np.asarray(x_init, np.float32)
    ucfg = model.config
    want = (ucfg.image_size,) * ucfg.dims + (ucfg.in_channels,)
    if x_init.shape[1:] != want:
        raise ValueError(f"init images of shape {x_init.shape[1:]} (of {x_init.shape}); the model takes {want}")
    bad = int(x_init.size - np.isfinite(x_init).sum())
    if bad:
        raise ValueError(f"{bad} of {x_init.size} init image values are not finite")
    if x_init.size and (x_init.min() < -1.0 - 1e-6 or x_init.max() > 1.0 + 1e-6):
        raise ValueError(f"init images range over [{x_init.min():g}, {x_init.max():g}]; allowed: [-1, 1] (rescale "
                         "uint8 images as x / 127.5 - 1)")
    clip = config.sample.clip_x0 if clip_x0 is None else clip_x0
    batch_size = min(batch_size, len(x_init))

    @jax.jit
    def run(params, x, key):
        mf = model_fn_for(model, params)
        if clip:
            mf = clip_x0_model_fn(mf, schedule, config.diffusion.prediction, clip)
        return sdedit(mf, schedule, x, key, t_start=t_start, sampler=sampler, num_steps=num_steps,
                      prediction=config.diffusion.prediction, **options)

    return _in_batches(x_init, batch_size, seed, lambda x, idx, k: run(params, x, k))
