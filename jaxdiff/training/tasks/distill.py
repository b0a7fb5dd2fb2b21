"""Progressive distillation (Salimans & Ho 2022), one round (``config.task = "progressive_distillation"``):
the student (starting from the teacher's weights, ``train.init_from``) learns two of the teacher's DDIM steps
in one (:func:`jaxdiff.distill.make_distill_loss`). The teacher is ``distill.teacher`` (the original model or
the previous round's workdir); the student takes ``distill.student_steps`` steps. ``experiments.distill`` runs
the rounds.
"""

from __future__ import annotations

import functools
import os

from jaxdiff.distill import check_student, make_distill_loss
from jaxdiff.models.model_fn import model_fn_for
from jaxdiff.parameterization import x0_eps_fn
from jaxdiff.training.build import build_schedule
from jaxdiff.training.step import batch_loss
from jaxdiff.training.tasks.diffusion import diffusion_method, network_apply
from jaxdiff.training.workdir import load_config

# What a student must share with its teacher.
SHARED = ("diffusion.schedule", "diffusion.num_steps", "diffusion.prediction", "diffusion.schedule_kwargs",
          "model.image_size", "model.in_channels", "model.backbone")


def check(config):
    """The teacher workdir exists and was trained with this config's network, schedule and parameterization;
    the student's parameterization can take large steps (:func:`jaxdiff.distill.check_student`)."""
    dc, d = config.distill, config.diffusion
    if not os.path.isdir(os.path.join(dc.teacher, "checkpoints")):
        raise ValueError(f"distill.teacher={dc.teacher!r} is not a workdir with checkpoints (train the teacher "
                         "first, or give the previous round's workdir)")
    check_student(d.prediction, dc.student_steps)
    teacher = load_config(dc.teacher)
    for field in SHARED:
        va, vb = (functools.reduce(lambda n, k: n[k], field.split("."), c) for c in (teacher, config))
        va, vb = (v.to_dict() if hasattr(v, "to_dict") else v for v in (va, vb))
        if va != vb:
            raise ValueError(f"distill.teacher={dc.teacher!r} has {field}={va!r}, this round {vb!r}; a student "
                             "distils a teacher of its own schedule, parameterization and data shape")


def loss(config, model, teacher):
    """One round's loss; ``teacher`` is ``(config, model, schedule, ema_params)`` of ``distill.teacher``."""
    t_config, t_model, t_schedule, t_params = teacher
    t_fn = x0_eps_fn(model_fn_for(t_model, t_params), t_schedule, t_config.diffusion.prediction)
    return batch_loss(make_distill_loss(network_apply(model), lambda z, t: t_fn(z, t)[0], build_schedule(config),
                                        config.distill.student_steps, config.diffusion.prediction))


PROGRESSIVE_DISTILLATION = diffusion_method(loss=loss, check=check, fields=("distill",),
                                            teacher=lambda config: config.distill.teacher)
