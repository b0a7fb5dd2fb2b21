"""The task table: what the generic training loop trains. A task supplies its model, its initial params,
its loss, its training data, the step input made from a host batch, the grid it writes at sample time and
the metadata stored with the final checkpoint. The loop never branches on the task; a new training method
(distillation, consistency training, ...) is a new entry of ``TASKS``.

Restoring is generic too: :func:`restore` rebuilds a task's model and state template from a workdir's
config and reads its latest checkpoint; :func:`restore_trained` and :func:`load_classifier` are its
diffusion and classifier faces.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.data import to_float
from jaxdiff.models.classifier import NoisyClassifier, make_classifier_loss
from jaxdiff.models.text import caption_transform
from jaxdiff.training import autoencoder as ae
from jaxdiff.training import ema
from jaxdiff.training.build import (
    backbone_config,
    build_autoencoder,
    build_loss,
    build_model,
    build_optimizer,
    build_pipeline,
    build_schedule,
    example_input,
    init_key,
    task_name,
    text_enabled,
    unet_config,
)
from jaxdiff.training.generate import make_sample_fn
from jaxdiff.training.latent import data_pipeline
from jaxdiff.training.state import create_train_state
from jaxdiff.training.workdir import load_config, restore_state

log = logging.getLogger("jaxdiff.train")


@dataclasses.dataclass(frozen=True)
class Task:
    """How to train one kind of model; every field is a function of the config (and the model)."""

    model: Callable[[Any], Any]  # config -> flax module
    init: Callable[[Any, Any], Any]  # (config, model) -> params (from the INIT stream)
    loss: Callable[[Any, Any], Callable]  # (config, model) -> loss_fn(params, batch, keys [B])
    data: Callable[[Any], Any]  # config -> training Pipeline
    check_input: Callable[[Any, Any, tuple], None]  # (config, model, batch shape): clear error before compiling
    prepare: Callable[[Any], Callable[[dict, int], dict]]  # config -> (host batch, step) -> step input
    grid: Callable[[Any, Any], Optional[Callable]]  # (config, model) -> fn(params, key) -> images, or None
    final_meta: Callable[[Any, Any, Any, Any], dict] = lambda config, model, pipeline, params: {}


def _inputs(batch) -> dict:
    return {"x": batch["x"], "index": batch["index"]}


# --- diffusion ----------------------------------------------------------------------------------------

def _diffusion_init(config, model):
    # one compiled program (eager init compiles every initializer op apart: 2x slower); bitwise the same values
    return jax.jit(model.init)(init_key(config), example_input(config), jnp.zeros((1,)))["params"]


def _diffusion_data(config):
    transform = caption_transform(config.text.max_len) if text_enabled(config) else None
    return data_pipeline(config, "train", transform=transform)


def _teacher(config):
    """``(config, model, schedule, ema_params)`` of the teacher a distillation names (``distill.teacher``,
    or ``consistency.teacher`` in consistency distillation), else None."""
    wd = config.distill.teacher or (config.consistency.teacher if config.consistency.mode == "cd" else "")
    return restore_trained(wd)[:4] if wd else None


def _diffusion_prepare(config):
    text, labels = text_enabled(config), bool(config.data.use_labels)
    with_step = bool(config.consistency.mode)  # iCT's curriculum depends on the training step

    def prepare(batch, step):
        out = _inputs(batch)
        if with_step:
            out["step"] = np.full((len(batch["x"]),), step, np.int32)
        if "noise" in batch:  # reflow: the noise paired with each x
            out["noise"] = batch["noise"]
        if text:
            out["cond"] = {"tokens": batch["tokens"]}
        elif labels:
            out["cond"] = batch["label"]
        return out

    return prepare


def _diffusion_grid(config, model):
    if not config.train.num_grid_samples:
        return None
    return make_sample_fn(config, model, build_schedule(config), sampler=config.sample.sampler,
                          num_steps=config.sample.num_steps, num_samples=config.train.num_grid_samples)


DIFFUSION = Task(
    model=lambda config: build_model(config)[0], init=_diffusion_init,
    loss=lambda config, model: build_loss(config, model, build_schedule(config), _teacher(config)),
    data=_diffusion_data,
    check_input=lambda config, model, shape: backbone_config(config).check_input(shape),
    prepare=_diffusion_prepare, grid=_diffusion_grid)


# --- autoencoder --------------------------------------------------------------------------------------

def _autoencoder_prepare(config):
    def prepare(batch, step):  # the step per example, so that it splits over devices like the rest
        return {**_inputs(batch), "step": np.full(len(batch["index"]), step, np.int32)}

    return prepare


def _autoencoder_grid(config, model):
    n = config.train.num_grid_samples
    return ae.grid_fn(model, build_pipeline(config, "test", n).batch(0)["x"]) if n else None


def _autoencoder_meta(config, model, pipeline, params):
    scale = ae.latent_scale(model, params, to_float(pipeline.all_images(), config.data.num_levels))
    log.info("latent scale factor %.5f", scale)
    return {"scale_factor": scale}  # stored with the autoencoder: latents' 1 / std


AUTOENCODER = Task(
    model=build_autoencoder, init=ae.init_params, loss=ae.build_loss, data=lambda config: build_pipeline(config),
    check_input=lambda config, model, shape: ae.check_autoencoder_input(config, shape),
    prepare=_autoencoder_prepare, grid=_autoencoder_grid, final_meta=_autoencoder_meta)


# --- noise-aware classifier (classifier guidance) -----------------------------------------------------

def _classifier_model(config):
    return NoisyClassifier(unet_config(config), num_classes=config.classifier.num_classes)


def _classifier_loss(config, model):
    return make_classifier_loss(lambda p, x_t, t: model.apply({"params": p}, x_t, t), build_schedule(config),
                                config.classifier.t_min)


def _classifier_check(config, model, shape):
    if not config.data.use_labels:
        raise ValueError("the classifier task needs labels: set data.use_labels=True")
    unet_config(config).check_input(shape)


CLASSIFIER = Task(
    model=_classifier_model, init=_diffusion_init, loss=_classifier_loss, data=lambda config: build_pipeline(config),
    check_input=_classifier_check, prepare=lambda config: lambda b, step: {**_inputs(b), "label": b["label"]},
    grid=lambda config, model: None)


TASKS = {"diffusion": DIFFUSION, "autoencoder": AUTOENCODER, "classifier": CLASSIFIER}


def get_task(config) -> Task:
    """The task table's entry for ``config.task``; ValueError naming the allowed tasks."""
    name = task_name(config)
    if name not in TASKS:
        raise ValueError(f"unknown config.task {name!r}; allowed: {list(TASKS)}")
    return TASKS[name]


# --- restoring ----------------------------------------------------------------------------------------

def state_template(config, task: Task, model):
    return create_train_state(task.init(config, model), build_optimizer(config), config.seed,
                              num_posthoc=len(config.optim.posthoc_ema))


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def restore(workdir: str, step: int | None = None, task: str | None = None):
    """``(config, model, ema_params, meta, step)`` of a workdir's latest (or given) checkpoint; with
    ``task``, a ValueError when the workdir holds another task."""
    config = load_config(workdir)
    if task is not None and task_name(config) != task:
        raise ValueError(f"{workdir} holds {_a(task_name(config))} run, not {_a(task)} model (config.task); "
                         + {"diffusion": "sample from a diffusion workdir",
                            "classifier": "train one with experiments.train --config "
                                          "experiments/configs/digits_classifier.py",
                            "autoencoder": "train one with an autoencoder config"}[task])
    t = get_task(config)
    model = t.model(config)
    state, meta, step = restore_state(workdir, state_template(config, t, model), step)
    return config, model, state.ema_params, meta, step


def restore_trained(workdir: str, step: int | None = None):
    """``(config, model, schedule, ema_params, step)`` of a trained diffusion model."""
    config, model, params, _, step = restore(workdir, step, task="diffusion")
    return config, model, build_schedule(config), params, step


def init_from(state, workdir: str):
    """``state`` with params and EMA params set to the final EMA params of the diffusion model in ``workdir``
    (reflow starts from its parent flow; Liu et al. 2023), placed as ``state``'s params are; the two
    networks must have the same parameter names and shapes."""
    _, _, _, params, step = restore_trained(workdir)
    want = jax.tree_util.tree_flatten_with_path(state.params)[0]
    got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    for path, leaf in want:
        if path not in got or np.shape(got[path]) != np.shape(leaf):
            name = jax.tree_util.keystr(path)
            raise ValueError(f"train.init_from={workdir!r}: its network differs at {name} (has "
                             f"{np.shape(got[path]) if path in got else 'nothing'}, this config needs "
                             f"{np.shape(leaf)}); use the parent's model config")
    place = lambda: jax.tree_util.tree_map(  # two copies: the train step donates params and EMA separately
        lambda new, old: jax.device_put(np.array(new, old.dtype), old.sharding), params, state.params)
    log.info("initialized from %s (step %d)", workdir, step)
    return state.replace(params=place(), ema_params=place())


def load_classifier(workdir: str):
    """``(classifier_fn(x_t, t) -> logits, config)`` of a trained noise-aware classifier: its EMA params
    from the Orbax checkpoint, or (a workdir written before the task table) ``classifier.msgpack``."""
    legacy = os.path.join(workdir, "classifier.msgpack")
    if os.path.exists(legacy) and not os.path.isdir(os.path.join(workdir, "checkpoints")):
        import flax.serialization

        config = load_config(workdir)
        model = _classifier_model(config)
        with open(legacy, "rb") as f:
            params = flax.serialization.from_bytes(_diffusion_init(config, model), f.read())
    else:
        config, model, params, _, _ = restore(workdir, task="classifier")
    apply = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))
    return (lambda x_t, t: apply(params, x_t, t)), config


def write_posthoc_workdir(workdir: str, sigma_rel: float, out: str | None = None, step: int | None = None,
                          tol: float = ema.PROFILE_TOL) -> tuple[str, dict]:
    """Reconstruct the power EMA with ``sigma_rel`` at ``step`` (default: the last snapshot) from ``workdir``'s
    snapshots and write it as a new workdir ``out`` (default ``<workdir>/posthoc_ema/sigma_rel_<s>``): its
    config (no EMAs tracked) and one checkpoint whose params and EMA params are the reconstruction, so that
    ``experiments.sample`` and ``experiments.evaluate`` read it like any run. Never overwrites: an existing
    ``out`` is an error. Returns ``(out, info)``."""
    from jaxdiff.training.checkpoint import Checkpointer
    from jaxdiff.training.workdir import checkpoint_dir, config_path

    config = load_config(workdir)
    tracked = tuple(config.optim.posthoc_ema)
    if not tracked:
        raise ValueError(f"{workdir} tracked no power-function EMAs (optim.posthoc_ema is empty): train with e.g. "
                         "--config.optim.posthoc_ema='(0.05, 0.1)' to choose the EMA length afterwards")
    out = out or os.path.join(workdir, "posthoc_ema", f"sigma_rel_{sigma_rel:.3f}" +
                              (f"_step{step}" if step is not None else ""))
    if os.path.exists(out):
        raise FileExistsError(f"{out} exists; jaxdiff never overwrites a saved run: pass another --out")
    task = get_task(config)
    model = task.model(config)
    params0 = task.init(config, model)
    steps, gammas, trees = ema.load_snapshots(workdir, params0, len(tracked))
    params, info = ema.reconstruct(steps, gammas, trees, sigma_rel, step, tol)
    info["source"] = os.path.abspath(workdir)
    new = config.copy_and_resolve_references()
    new.optim.posthoc_ema = ()
    params = jax.tree_util.tree_map(jnp.asarray, params)
    state = create_train_state(params, build_optimizer(new), new.seed)
    state = state.replace(step=jnp.asarray(info["step"], jnp.int32), ema_params=params)
    os.makedirs(out)
    with open(config_path(out), "w") as f:
        f.write(new.to_json_best_effort(indent=2))
    ck = Checkpointer(checkpoint_dir(out), async_save=False)
    ck.save(info["step"], state, {"step": info["step"], "seed": int(new.seed), "posthoc_ema": info}, force=True)
    ck.close()
    return out, info
