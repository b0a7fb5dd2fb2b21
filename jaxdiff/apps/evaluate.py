"""Evaluation of a training workdir (the logic behind ``experiments/evaluate.py``): Fréchet distance of
samples vs the test split (and the train-vs-test floor) in the digits feature CNN's space, classifier
confidence and class balance, label accuracy of conditional samples, test bits/dim (VLB over all T steps, and
the probability-flow ODE's); for an autoencoder, the test reconstruction PSNR / SSIM.

Writes ``eval/metrics_<sampler>_<steps>.json`` in the workdir (never overwriting).
"""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxdiff.apps.reconstruction import evaluate_autoencoder
from jaxdiff.data.pipeline import default_data_dir, to_float
from jaxdiff.evaluation.evaluate import label_accuracy, sample_quality
from jaxdiff.likelihood import full_vlb_bpd, ode_bpd
from jaxdiff.models.model_fn import model_fn_for
from jaxdiff.outputs import save_json
from jaxdiff.rng import Stream, run_key
from jaxdiff.schedules import is_discrete
from jaxdiff.training.build import build_pipeline, text_enabled
from jaxdiff.training.generate import generate
from jaxdiff.training.latent import latent_autoencoder
from jaxdiff.training.restore import load_classifier, restore_trained
from jaxdiff.training.workdir import load_config


def evaluate(workdir, samples_path=None, sampler=None, num_steps=None, vlb=True, clip_x0=None,
             options=None, conditional=False, guidance_scale=1.0, classifier_workdir=None,
             ode=None, seed: int = 1, out: str | None = None) -> dict:
    """Sample quality (and test bits/dim) of a trained workdir, written to ``eval/metrics_<sampler>_<steps>.json``
    in it or to ``out`` (a .json path elsewhere: a workdir on read-only storage evaluates so); never
    overwriting."""
    config = load_config(workdir)
    if config.task == "autoencoder":
        return evaluate_reconstruction(workdir, out)
    config, model, schedule, params, step = restore_trained(workdir)
    sampler = sampler or config.sample.sampler
    num_steps = num_steps or config.sample.num_steps
    if samples_path:
        x, sampler, num_steps = load_samples(samples_path)
    labels = None
    if conditional and samples_path:
        raise ValueError("--conditional generates its own labelled samples; drop --samples")
    classifier_fn, clf_config = load_classifier(classifier_workdir) if classifier_workdir else (None, None)
    text_on = text_enabled(config)
    if conditional:
        if text_on:
            k = 10
        elif classifier_fn:
            k = clf_config.classifier.num_classes
        else:
            k = config.model.num_classes
        if not k:
            raise ValueError(f"--conditional needs a class-conditional model or --classifier_workdir; "
                             f"{workdir} has num_classes=None")
        labels = np.arange(config.eval.num_samples) % k
    gen_labels = labels
    if conditional and text_on:  # prompts "a handwritten <word>" for labels 0..9 in turn
        from jaxdiff.models.text import digit_caption, tokenize

        gen_labels = tokenize([digit_caption(int(y), 0) for y in labels], config.text.max_len)
    stats = {}
    if not samples_path:
        x = generate(config, model, schedule, params, sampler=sampler, num_steps=num_steps,
                     labels=gen_labels, guidance_scale=guidance_scale, classifier_fn=classifier_fn,
                     num_samples=config.eval.num_samples, batch_size=config.sample.batch_size, seed=seed,
                     clip_x0=clip_x0, stats=stats, **(options or {}))
    bad = int(x.size - np.isfinite(x).sum())
    if bad:  # no metric of them is written
        where = samples_path or f"the samples of {sampler} at {num_steps} steps (clip_x0 {clip_x0}, options {options})"
        raise ValueError(f"{where}: {bad} of {x.size} sample values are not finite; a Frechet distance of them "
                         "means nothing: sample again (e.g. with --clip_x0 1 or more steps)")
    # pixel data (a latent-diffusion model's samples are decoded images)
    train, test = build_pipeline(config, "train", 1), build_pipeline(config, "test", 1)
    info = getattr(train.source, "dataset_info", None)  # TFDS; else (arrays, audio) the configured data dir
    data_dir = os.path.dirname(os.path.dirname(info.data_dir)) if info else (config.data.data_dir or
                                                                             default_data_dir())
    m = sample_quality(x, train.all_images(), train.all_labels(), test.all_images(), test.all_labels(),
                       num_levels=config.data.num_levels, cache_dir=data_dir,
                       cache_name=feature_net_name(config),
                       bootstrap=config.eval.bootstrap)
    if labels is not None:
        m["label_accuracy"] = label_accuracy(x, labels, train.all_images(), train.all_labels(),
                                             num_levels=config.data.num_levels, cache_dir=data_dir,
                                             cache_name=feature_net_name(config))
        m["guidance_scale"] = guidance_scale
        m["guidance"] = "classifier" if classifier_fn else "classifier-free"
    m.update(step=step, sampler=sampler, num_steps=num_steps, options=options or {}, **stats, seed=seed,
             clip_x0=clip_x0 if clip_x0 is not None else config.sample.clip_x0)
    test_x = to_float(test.all_images(), config.data.num_levels)
    if latent_autoencoder(config):  # likelihoods of latents are not bits/dim of the images
        vlb = ode = False
    if ode is None:
        ode = vlb and not is_discrete(schedule)
    if ode:
        m.update(ode_bpd_of_test(config, model, schedule, params, test_x))
    if vlb and is_discrete(schedule):
        xt = test_x[: config.eval.vlb_examples]
        fn = jax.jit(lambda p, x: full_vlb_bpd(model_fn_for(model, p), schedule, x, run_key(0, Stream.EVAL),
                                                prediction=config.diffusion.prediction,
                                                num_levels=config.data.num_levels,
                                                variance=config.diffusion.variance))
        terms = jax.device_get(fn(params, xt))
        m.update({f"test_bpd_{k}": float(np.mean(v)) for k, v in terms.items()})
    m["path"] = save_json(m, out or os.path.join(workdir, "eval", f"metrics_{sampler}_{num_steps}.json"))
    return m


def load_samples(path: str):
    """``(samples, sampler, num_steps)`` of an ``.npz`` written by experiments.sample; a file that is cut short,
    not an .npz, or without those arrays is named with what it holds."""
    import zipfile

    from jaxdiff.errors import EnvironmentFailure

    try:
        with np.load(path) as f:
            missing = [k for k in ("samples", "sampler", "num_steps") if k not in f]
            if missing:
                raise ValueError(f"{path} has no {missing}; it holds {list(f.keys())}: pass an .npz written by "
                                 "experiments.sample")
            return f["samples"], str(f["sampler"]), int(f["num_steps"])
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise EnvironmentFailure(f"{path} cannot be read as an .npz of samples ({type(e).__name__}: {e}); it was "
                                 "cut short or is another kind of file: sample again (experiments.sample)") from e


def feature_net_name(config) -> str:
    """The cache name of the data's feature network (an ``arrays`` file by its name, not its path)."""
    d = config.data
    if d.name == "arrays":
        return "arrays_" + os.path.splitext(os.path.basename(str(d.config)))[0]
    return f"{d.name}_{d.config}"


def evaluate_reconstruction(workdir, out: str | None = None) -> dict:
    """An autoencoder's test PSNR / SSIM (``eval/reconstruction.json`` or ``out``, never overwritten)."""
    m = evaluate_autoencoder(workdir)
    m["path"] = save_json(m, out or os.path.join(workdir, "eval", "reconstruction.json"))
    return m


def ode_bpd_of_test(config, model, schedule, params, test_x) -> dict:
    """Probability-flow ODE bits/dim of the first ``eval.ode_bpd_examples`` test images (dequantized;
    Rademacher-Hutchinson; Tsit5 at rtol = atol = 1e-5; t_min = eval.ode_t_min, default 1e-5 where
    sigma(0) = 0 (score_sde's eps), else 0)."""
    n = config.eval.ode_bpd_examples
    t_min = config.eval.ode_t_min
    if t_min is None:
        t_min = 1e-5 if float(schedule.sigma(0.0)) == 0.0 else 0.0
    fn = jax.jit(lambda p, x, k: ode_bpd(model_fn_for(model, p), schedule, x, k,
                                         num_levels=config.data.num_levels,
                                         prediction=config.diffusion.prediction, t_min=t_min))
    out = jax.device_get(fn(params, test_x[:n], run_key(0, Stream.EVAL)))
    bpd = np.asarray(out["bpd"])
    return {"test_ode_bpd": float(bpd.mean()), "test_ode_bpd_se": float(bpd.std(ddof=1) / np.sqrt(len(bpd))),
            "test_ode_nfe": int(out["nfe"]), "ode_t_min": t_min, "ode_examples": int(len(bpd))}
