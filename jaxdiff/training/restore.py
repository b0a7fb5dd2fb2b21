"""Restoring any task's workdir: :func:`restore` rebuilds the task's model and state template from the
workdir's config (migrated at load, :func:`jaxdiff.training.schema.fill_defaults`) and reads its latest
checkpoint; :func:`restore_trained` and :func:`load_classifier` are its diffusion and classifier faces,
:func:`init_from` starts a new run from a trained one, :func:`write_posthoc_workdir` writes a post-hoc EMA as
a workdir.
"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.training import ema
from jaxdiff.training.build import build_optimizer, build_schedule
from jaxdiff.training.state import create_train_state
from jaxdiff.training.tasks import CLASSIFIER, Task, get_task
from jaxdiff.training.workdir import load_config, restore_state

log = logging.getLogger("jaxdiff.train")


def state_template(config, task: Task, model):
    """The TrainState of a fresh run of ``task`` (the template a checkpoint restores into)."""
    params = task.init(config, model)
    return create_train_state(params, build_optimizer(config, params), config.seed,
                              num_posthoc=len(config.optim.posthoc_ema))


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


HOW_TO_TRAIN = {"diffusion": "sample from a diffusion workdir",
                "classifier": "train one with experiments.train --config experiments/configs/digits_classifier.py",
                "autoencoder": "train one with an autoencoder config"}


def restore(workdir: str, step: int | None = None, product: str | None = None):
    """``(config, model, ema_params, meta, step)`` of a workdir's latest (or given) checkpoint; with
    ``product`` (``diffusion``, ``autoencoder``, ``classifier``: :attr:`Task.product`), a ValueError when the
    workdir's task trains something else."""
    config = load_config(workdir)
    t = get_task(config)
    if product is not None and t.product != product:
        raise ValueError(f"{workdir} holds {_a(config.task)} run, not {_a(product)} model (config.task); "
                         + HOW_TO_TRAIN[product])
    model = t.model(config)
    abstract = jax.eval_shape(lambda: state_template(config, t, model))  # shapes only: nothing is initialised
    state, meta, step = restore_state(workdir, abstract, step)
    return config, model, state.ema_params, meta, step


def restore_trained(workdir: str, step: int | None = None):
    """``(config, model, schedule, ema_params, step)`` of a trained diffusion model (of any task whose product
    is a diffusion network: diffusion, distillation, consistency models, conditional imputation)."""
    config, model, params, _, step = restore(workdir, step, product="diffusion")
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
        model = CLASSIFIER.model(config)
        with open(legacy, "rb") as f:
            params = flax.serialization.from_bytes(CLASSIFIER.init(config, model), f.read())
    else:
        config, model, params, _, _ = restore(workdir, product="classifier")
    apply = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))
    return (lambda x_t, t: apply(params, x_t, t)), config


def write_posthoc_workdir(workdir: str, sigma_rel: float, out: str | None = None, step: int | None = None,
                          tol: float = ema.PROFILE_TOL) -> tuple[str, dict]:
    """Reconstruct the power EMA with ``sigma_rel`` at ``step`` (default: the last snapshot) from ``workdir``'s
    snapshots and write it as a new workdir ``out`` (default ``<workdir>/posthoc_ema/sigma_rel_<s>``): its
    config (no EMAs tracked) and one checkpoint whose params and EMA params are the reconstruction, so that
    ``experiments.sample`` and ``experiments.evaluate`` read it like any run. Never overwrites: an existing
    ``out`` is an error. Returns ``(out, info)``."""
    import shutil

    from jaxdiff.training.checkpoint import Checkpointer
    from jaxdiff.training.workdir import checkpoint_dir, write_config

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
    state = create_train_state(params, build_optimizer(new, params0), new.seed)
    state = state.replace(step=jnp.asarray(info["step"], jnp.int32), ema_params=params)
    tmp = f"{out.rstrip(os.sep)}.tmp{os.getpid()}"  # built whole under a temporary name, then renamed
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        write_config(new, tmp)
        ck = Checkpointer(checkpoint_dir(tmp), async_save=False)
        ck.save(info["step"], state, {"step": info["step"], "seed": int(new.seed), "posthoc_ema": info}, force=True)
        ck.close()
        if os.path.exists(out):
            raise FileExistsError(f"{out} appeared while it was written; jaxdiff never overwrites a saved run")
        os.rename(tmp, out)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return out, info
