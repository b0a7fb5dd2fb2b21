"""Checks of a training config's values that hold for every task, before anything is built or written: the
generic training fields, the batch against the devices, the parallel mode. A method's own settings are checked
by its task (``Task.check``)."""

from __future__ import annotations

import math
import os

import jax

from jaxdiff.training import parallel


def check_values(config):
    """Values that cannot train are errors naming the field, before anything is built or written: a
    non-finite or non-positive learning rate, step counts and intervals below 1 (a method's own settings are
    its task's ``check``)."""

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
    if not 0.0 <= o.ema_decay <= 1.0:
        raise ValueError(f"optim.ema_decay={o.ema_decay}; allowed: 0 <= ema_decay <= 1")
    if o.posthoc_ema:
        from jaxdiff.training.ema import sigma_rel_to_gamma

        sigma_rel_to_gamma(tuple(o.posthoc_ema))  # each in (0, sqrt(1/12)): ValueError naming the range
    k = int(t.steps_per_jit)
    if not isinstance(t.snapshot_every, int) or t.snapshot_every < 0 or (t.snapshot_every or k) % k:
        raise ValueError(f"train.snapshot_every={t.snapshot_every!r}; allowed: 0 (= train.checkpoint_every) or a "
                         f"positive multiple of train.steps_per_jit={k}")


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


