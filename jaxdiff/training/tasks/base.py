"""What a training method is to the generic loop: a :class:`Task` record of functions of the config.

The loss contract shared by every task and :func:`jaxdiff.training.step.make_train_step`::

    loss_fn(params, batch, keys, *, step, target_params=None) -> (loss, aux)

``keys [B]`` are per-example keys (folded from each example's global index), ``step`` the optimizer step
(a traced int32 scalar: iCT's curriculum, the autoencoder's discriminator start) and ``target_params`` the
EMA params under ``stop_gradient`` (consistency distillation's target network). Whatever a method needs
beyond the batch is one of these arguments, never a special batch key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from jaxdiff.training.build import example_input, init_key


@dataclasses.dataclass(frozen=True)
class Task:
    """How to train one kind of model; every field is a function of the config (and the model).

    Attributes:
      model: ``config -> flax module``.
      init: ``(config, model) -> params`` (from the INIT stream).
      loss: ``(config, model, teacher) -> loss_fn`` under the loss contract above; ``teacher`` is
        ``(config, model, schedule, ema_params)`` of the workdir :attr:`teacher` names (restored by the loop),
        else None.
      data: ``config -> training Pipeline``.
      check_input: ``(config, model, batch shape)``: a clear error before compiling.
      prepare: ``config -> (host batch, step) -> step input``.
      grid: ``(config, model) -> fn(params, key) -> images``, or None.
      final_meta: metadata stored with the final checkpoint.
      check: ``config ->`` None or ValueError naming the field: this method's own settings, before anything is
        built or written.
      fields: the config fields this task owns (dotted prefixes such as ``"distill"`` or
        ``"consistency.teacher"``); a field owned only by other tasks must keep its default under this task,
        so a config cannot mix two methods (:func:`jaxdiff.training.schema.check_task_fields`).
      teacher: ``config ->`` the workdir of a trained model the loss needs ("" for none).
      product: what the checkpoint holds for the rest of the library: ``diffusion`` (a network sampled
        through ``model_fn``), ``autoencoder`` or ``classifier``.
    """

    model: Callable[[Any], Any]
    init: Callable[[Any, Any], Any]
    loss: Callable[[Any, Any, Any], Callable]
    data: Callable[[Any], Any]
    check_input: Callable[[Any, Any, tuple], None]
    prepare: Callable[[Any], Callable[[dict, int], dict]]
    grid: Callable[[Any, Any], Optional[Callable]]
    final_meta: Callable[[Any, Any, Any, Any], dict] = lambda config, model, pipeline, params: {}
    check: Callable[[Any], None] = lambda config: None
    fields: tuple[str, ...] = ()
    teacher: Callable[[Any], str] = lambda config: ""
    product: str = "diffusion"


def inputs(batch) -> dict:
    """The step input every task starts from: the data and the examples' global indices."""
    return {"x": batch["x"], "index": batch["index"]}


def init_params(config, model):
    """``model.init`` on one zero example at t = 0 as one compiled program (eager init compiles every
    initializer op apart: 2x slower; bitwise the same values)."""
    return jax.jit(model.init)(init_key(config), example_input(config), jnp.zeros((1,)))["params"]

