"""Inception FID / KID / precision-recall of a trained workdir (the 50k-sample protocol of the literature),
resumable: samples and their features are written in chunks (:mod:`jaxdiff.evaluation.inception_eval`), a run
that stops picks up at the first missing chunk."""

from __future__ import annotations

import os

import jax

from jaxdiff.evaluation import metrics as M
from jaxdiff.evaluation.inception_eval import features_fn, generate_chunks, read_chunks
from jaxdiff.outputs import save_json
from jaxdiff.training.build import build_pipeline
from jaxdiff.training.generate import make_sample_fn
from jaxdiff.training.restore import restore_trained


def per_index_sampler(config, model, schedule, *, sampler: str, num_steps: int, clip_x0=None, **options):
    """``fn(params, keys [B]) -> samples [B, ...]`` in [-1, 1]: one sampler run of batch 1 per key, vmapped."""

    one = make_sample_fn(config, model, schedule, sampler=sampler, num_steps=num_steps, num_samples=1,
                         clip_x0=clip_x0, **options)
    return jax.jit(jax.vmap(lambda p, k: one(p, k)[0], in_axes=(None, 0)))


def evaluate_inception(workdir: str, inception_weights: str, ref_stats: str = "train", *, num_samples: int = 50_000,
                       chunk_size: int = 1000, sampler: str | None = None, num_steps: int | None = None,
                       seed: int = 1, clip_x0=None, out_dir: str | None = None, options: dict | None = None,
                       log=print) -> dict:
    """FID (and KID, precision / recall against the training images when ``ref_stats="train"``) of a
    workdir's samples on FID Inception features; writes ``eval/inception_<sampler>_<steps>.json``."""
    from jaxdiff.interop.inception import load_fid_inception

    params_inc = load_fid_inception(inception_weights)  # named errors before anything compiles
    ref = None if ref_stats == "train" else M.load_stats(ref_stats, dim=2048)
    config, model, schedule, params, step = restore_trained(workdir)
    if config.model.dims != 2 or config.model.in_channels not in (1, 3):
        raise ValueError(f"Inception FID needs images with 1 or 3 channels; {workdir} models dims="
                         f"{config.model.dims}, in_channels={config.model.in_channels}")
    sampler = sampler or config.sample.sampler
    num_steps = num_steps or config.sample.num_steps
    num_levels = int(config.data.num_levels or 256)
    out_dir = out_dir or os.path.join(workdir, "eval", f"inception_{sampler}_{num_steps}_seed{seed}")
    feat = features_fn(params_inc)
    fn = per_index_sampler(config, model, schedule, sampler=sampler, num_steps=num_steps, clip_x0=clip_x0,
                           **(options or {}))
    generate_chunks(fn, params, out_dir, num_samples=num_samples, chunk_size=chunk_size, seed=seed,
                    num_levels=num_levels, feature_fn=feat, log=log)
    if jax.process_index() != 0:
        return {}
    fake = read_chunks(out_dir, num_samples, chunk_size)
    m = {"step": step, "sampler": sampler, "num_steps": num_steps, "num_samples": num_samples, "seed": seed,
         "inception_weights": os.path.abspath(inception_weights), "reference": ref_stats}
    if ref is None:
        train = build_pipeline(config, "train", 1).all_images()
        ref_path = os.path.join(workdir, "eval", "inception_train_stats.npz")
        real = feat(train, num_levels)
        ref = M.load_stats(ref_path) if os.path.exists(ref_path) else M.save_stats(ref_path, real)
        m["kid"], m["kid_std"] = M.kid(fake, real)
        m["precision"], m["recall"] = M.precision_recall(real, fake)
        m["num_reference"] = len(real)
    m["fid"] = M.fid_from_stats(fake, ref)
    m["path"] = save_json(m, os.path.join(workdir, "eval", f"inception_{sampler}_{num_steps}.json"))
    return m
