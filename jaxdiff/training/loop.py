"""The training loop behind ``experiments/train.py``: any task of the task table, trained with jit (one
device), pmap (several) or jit over a device mesh (FSDP; many hosts); TensorBoard metrics, sample grids,
Orbax checkpoints and exact resume. The loop knows nothing of what it trains (``jaxdiff.training.tasks``).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax

from jaxdiff.outputs import make_grid, save_grid
from jaxdiff.rng import Stream, run_key
from jaxdiff.training import ema, parallel, writers
from jaxdiff.training.build import build_optimizer
from jaxdiff.training.checkpoint import Checkpointer, check_space
from jaxdiff.training.checks import check_batch, check_steps_per_jit, check_values, parallel_mode
from jaxdiff.training.restore import init_from, restore_trained, state_template
from jaxdiff.training.runner import RUNNERS, SkipWatch, make_runner
from jaxdiff.training.schema import check_config
from jaxdiff.training.step import make_train_step
from jaxdiff.training.tasks import check_task
from jaxdiff.training.workdir import (
    WorkdirLock,
    check_workdir,
    checkpoint_dir,
    listing,
    undo_failed_start,
    write_config,
)

log = logging.getLogger("jaxdiff.train")


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Train per ``config`` in ``workdir`` (resuming from its latest checkpoint); returns final metrics."""
    check_config(config)  # every check before the workdir is touched and before anything compiles
    check_values(config)
    task = check_task(config)
    k = check_steps_per_jit(config)
    mode = parallel_mode(config)
    check_batch(config)
    model = task.model(config)
    pipeline = task.data(config)
    task.check_input(config, model, pipeline.batch(0)["x"].shape)
    teacher = task.teacher(config)  # a trained model the loss needs: (config, model, schedule, ema_params)
    loss_fn = task.loss(config, model, restore_trained(teacher)[:4] if teacher else None)  # schedule, options
    found = listing(workdir)
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else None  # one trainer per workdir
    started = []  # set once the first training step has run
    try:
        check_workdir(config, workdir)
        return _train(config, workdir, task, model, pipeline, loss_fn, k, mode, started)
    except BaseException:
        # A start that fails (a bad schedule or loss option, a step that does not fit in memory, an interrupt
        # while compiling) leaves the workdir as it found it, so the corrected command is not refused; a run
        # that has trained keeps its logs and grids.
        if lock is not None and not started and undo_failed_start(workdir, found):
            log.warning("the run failed before training started: %s is left as it was", workdir)
        raise
    finally:
        if lock is not None:
            lock.release()


def _train(config, workdir, task, model, pipeline, loss_fn, k, mode, started):
    from tqdm import tqdm

    prepare = task.prepare(config)

    tx = build_optimizer(config, jax.eval_shape(lambda: task.init(config, model)))
    sigma_rels = tuple(config.optim.posthoc_ema)
    step_fn = make_train_step(loss_fn, tx, ema_decay=config.optim.ema_decay,
                              axis_name=RUNNERS[mode].axis_name, steps_per_jit=k,
                              posthoc_gammas=tuple(float(g) for g in ema.sigma_rel_to_gamma(sigma_rels)))
    runner = make_runner(mode, step_fn, lambda: state_template(config, task, model), k, config)
    state = runner.make_state()
    ckpt = Checkpointer(checkpoint_dir(workdir), save_every=config.train.checkpoint_every,
                        keep=config.train.keep_checkpoints)
    # Post-hoc EMA snapshots: all kept; a resumed run finds the ones it already wrote and leaves them.
    snaps = Checkpointer(ema.snapshot_dir(workdir), save_every=config.train.snapshot_every or
                         config.train.checkpoint_every, keep=None) if sigma_rels else None
    start = 0
    if ckpt.latest_step() is not None:
        state, meta, start = ckpt.restore(state)
        log.info("resumed from step %d (data position %s)", start, meta.get("data"))
    elif config.train.init_from:
        state = init_from(state, config.train.init_from)
    state = runner.place(state)

    writer = writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    grid_fn = task.grid(config, model)
    grid_key = run_key(config.seed, Stream.GRID)

    def write_samples(step):
        if grid_fn is None:
            return
        x = parallel.to_host(grid_fn(runner.host(state).ema_params, jax.random.fold_in(grid_key, step)))
        if jax.process_index() == 0:
            path = save_grid(x, os.path.join(workdir, "samples", f"grid_{step:07d}.png"))
            writer.write_images(step, {"samples": make_grid(x)[None]})
            log.info("wrote %s", path)

    metrics, history = {}, []
    t0, last_log = time.time(), start
    bar = tqdm(total=config.train.num_steps, initial=start, desc="train", unit="step",
               disable=jax.process_index() > 0, mininterval=2.0)
    step, c = start, config.train
    watch = SkipWatch(c.max_consecutive_skipped, k)
    if c.preflight and step < c.num_steps:  # compile now, refuse a step that cannot fit, before training starts
        runner.preflight(state, runner.feed([prepare(pipeline.batch(step + j), step + j) for j in range(k)]),
                         batch_size=config.optim.batch_size)
    if step < c.num_steps and jax.process_index() == 0:  # room on the disk for the next checkpoint, before training
        check_space(ckpt.directory, min(c.num_steps, (step // c.checkpoint_every + 1) * c.checkpoint_every), state,
                    ckpt.latest_step())
    write_config(config, workdir)  # every check passed and the step compiled: the run is stored
    try:  # a run that stops with an error still finishes the checkpoint it is writing
        while step < c.num_steps:
            state, m = runner.step(state, runner.feed([prepare(pipeline.batch(step + j), step + j) for j in range(k)]))
            if not started:
                started.append(step)
            step += k
            bar.update(k)
            final = step == c.num_steps
            watch.add(runner.host(m)["finite"], step, flush=step % c.log_every < k or final)
            if step % c.log_every < k or final:
                metrics = {key: float(v) for key, v in jax.device_get(runner.host(m)).items()}
                history.append((step, metrics["loss"]))
                metrics["steps_per_sec"] = rate = (step - last_log) / max(time.time() - t0, 1e-9)
                writer.write_scalars(step, metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", sps=f"{rate:.1f}")
                t0, last_log = time.time(), step
            if step % c.checkpoint_every == 0 or final:
                meta = {"step": step, "data": pipeline.position(step), "seed": config.seed}
                if final:
                    meta.update(task.final_meta(config, model, pipeline, runner.host(state).ema_params))
                ckpt.save(step, runner.host(state), meta, force=final)
            if snaps is not None and (step % snaps.save_every == 0 or final):
                snaps.save(step, runner.host(state).posthoc, ema.snapshot_meta(sigma_rels, step), force=True)
            if step % c.sample_every < k or final:
                write_samples(step)
    finally:
        bar.close()
        ckpt.close()
        if snaps is not None:
            snaps.close()
        writer.close()
    metrics["skipped_total"] = int(jax.device_get(runner.host(state).skipped))
    if metrics["skipped_total"]:
        log.warning("%d of %d steps were skipped for a non-finite loss, gradient or update",
                    metrics["skipped_total"], step)
    metrics["step"] = step
    metrics["history"] = history  # (step, loss) at every log step of this call
    return metrics
