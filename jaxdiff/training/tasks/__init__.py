"""The task table: what the generic training loop trains. ``config.task`` names an entry; each training method
is one module here and one line of :data:`TASKS` (a :class:`~jaxdiff.training.tasks.base.Task`: its model,
init, loss under the one loss contract, data, step input, sample grid, its own checks and config fields). The
loop, the train step and the shared builders never branch on the method.

Restoring any task's workdir is generic (:mod:`jaxdiff.training.restore`).
"""

from __future__ import annotations

from jaxdiff.training.schema import check_task_fields
from jaxdiff.training.tasks.autoencoder import AUTOENCODER
from jaxdiff.training.tasks.base import Task
from jaxdiff.training.tasks.classifier import CLASSIFIER
from jaxdiff.training.tasks.consistency import CONSISTENCY_DISTILLATION, CONSISTENCY_TRAINING
from jaxdiff.training.tasks.diffusion import DIFFUSION
from jaxdiff.training.tasks.distill import PROGRESSIVE_DISTILLATION
from jaxdiff.training.tasks.imputation import IMPUTATION

TASKS: dict[str, Task] = {
    "diffusion": DIFFUSION,
    "autoencoder": AUTOENCODER,
    "classifier": CLASSIFIER,
    "progressive_distillation": PROGRESSIVE_DISTILLATION,
    "consistency_training": CONSISTENCY_TRAINING,
    "consistency_distillation": CONSISTENCY_DISTILLATION,
    "imputation": IMPUTATION,
}


def get_task(config) -> Task:
    """The task table's entry for ``config.task``; ValueError naming the allowed tasks."""
    if config.task not in TASKS:
        raise ValueError(f"unknown config.task {config.task!r}; allowed: {list(TASKS)}")
    return TASKS[config.task]


def check_task(config) -> Task:
    """``config.task``'s entry after its checks: no field owned only by other tasks is set (a config cannot
    mix two methods), then the method's own settings."""
    task = get_task(config)
    check_task_fields(config, config.task, {name: t.fields for name, t in TASKS.items()})
    task.check(config)
    return task


__all__ = ["TASKS", "Task", "get_task", "check_task", "DIFFUSION", "AUTOENCODER", "CLASSIFIER",
           "PROGRESSIVE_DISTILLATION", "CONSISTENCY_TRAINING", "CONSISTENCY_DISTILLATION", "IMPUTATION"]
