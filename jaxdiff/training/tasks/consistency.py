"""Consistency models (Song et al. 2023; Song & Dhariwal 2023) on the EDM schedule, as two tasks: the network
is f(x, sigma) with ``diffusion.preconditioning = "consistency"`` (f(x, sigma_min) = x exactly).

* ``consistency_training`` -- iCT from scratch (:func:`jaxdiff.consistency.make_ct_loss`): the doubling
  curriculum of levels follows the optimizer step.
* ``consistency_distillation`` -- CD (:func:`jaxdiff.consistency.make_cd_loss`): the teacher
  (``consistency.teacher``, a diffusion model on the EDM schedule) takes one ODE step between adjacent Karras
  levels, by the solver of :data:`TEACHER_STEPS`; the target network is the EMA.
"""

from __future__ import annotations

import os

import jax.numpy as jnp

from jaxdiff import consistency as cm_math
from jaxdiff.models.model_fn import model_fn_for
from jaxdiff.parameterization import x0_eps_fn
from jaxdiff.training.build import build_schedule
from jaxdiff.training.tasks.diffusion import diffusion_method
from jaxdiff.training.workdir import load_config

TEACHER_STEPS = {"euler": cm_math.euler_step, "heun": cm_math.heun_step}  # denoiser -> step(x, s, s_to)
DISTANCES = ("pseudo_huber", "l2")


def _check_common(config):
    cm, d = config.consistency, config.diffusion
    if d.schedule != "edm" or d.preconditioning != "consistency":
        raise ValueError(f"config.task={config.task!r} needs diffusion.schedule='edm' and diffusion.preconditioning="
                         f"'consistency' (got {d.schedule!r}, {d.preconditioning!r})")
    if cm.distance not in DISTANCES:
        raise ValueError(f"consistency.distance={cm.distance!r}; allowed: {list(DISTANCES)}")


def _check_ct(config):
    _check_common(config)
    cm = config.consistency
    if not 1 <= cm.s0 <= cm.s1:
        raise ValueError(f"consistency.s0={cm.s0}, s1={cm.s1}; allowed: 1 <= s0 <= s1")


def _check_cd(config):
    _check_common(config)
    cm = config.consistency
    if not os.path.isdir(os.path.join(cm.teacher, "checkpoints")):
        raise ValueError(f"consistency.teacher={cm.teacher!r} is not a workdir with checkpoints (consistency "
                         "distillation needs a trained diffusion model on the EDM schedule)")
    if load_config(cm.teacher).diffusion.schedule != "edm":
        raise ValueError(f"consistency.teacher={cm.teacher!r} was not trained on the EDM schedule; allowed: a "
                         "teacher with diffusion.schedule='edm' (its sigma is the student's)")
    if cm.teacher_solver not in TEACHER_STEPS:
        raise ValueError(f"consistency.teacher_solver={cm.teacher_solver!r}; allowed: {list(TEACHER_STEPS)}")


def _f_apply(model, schedule):
    """``f(params, x, sigma [B])``: the consistency function at EDM noise levels."""

    def f_apply(params, x, sigma):
        t = schedule.t_from_logsnr(-2.0 * jnp.log(sigma))
        return model_fn_for(model, params)(x, t, None)

    return f_apply


def _ct_loss(config, model, teacher):
    del teacher
    cm, schedule = config.consistency, build_schedule(config)
    ct = cm_math.make_ct_loss(_f_apply(model, schedule), config.train.num_steps, sigma_min=float(schedule.sigma_min),
                              sigma_max=float(schedule.sigma_max), rho=float(schedule.rho), s0=cm.s0, s1=cm.s1,
                              p_mean=cm.p_mean, p_std=cm.p_std, distance=cm.distance)

    def loss_fn(params, batch, keys, *, step, target_params=None):
        del target_params
        return ct(params, batch, keys, step)

    return loss_fn


def _cd_loss(config, model, teacher):
    """``teacher`` is ``(config, model, schedule, ema_params)`` of ``consistency.teacher``."""
    cm, schedule = config.consistency, build_schedule(config)
    t_config, t_model, t_schedule, t_params = teacher
    t_fn = x0_eps_fn(model_fn_for(t_model, t_params), t_schedule, t_config.diffusion.prediction)
    denoiser = lambda x, sigma: t_fn(x, t_schedule.t_from_logsnr(-2.0 * jnp.log(sigma)))[0]
    levels = cm_math.karras_levels(cm.num_levels, float(schedule.sigma_min), float(schedule.sigma_max),
                                   float(schedule.rho))
    cd = cm_math.make_cd_loss(_f_apply(model, schedule), TEACHER_STEPS[cm.teacher_solver](denoiser), levels,
                              distance=cm.distance)

    def loss_fn(params, batch, keys, *, step, target_params=None):
        del step
        return cd(params, target_params, batch, keys)

    return loss_fn


CONSISTENCY_TRAINING = diffusion_method(
    loss=_ct_loss, check=_check_ct,
    fields=("consistency.s0", "consistency.s1", "consistency.p_mean", "consistency.p_std", "consistency.distance"))

CONSISTENCY_DISTILLATION = diffusion_method(
    loss=_cd_loss, check=_check_cd, teacher=lambda config: config.consistency.teacher,
    fields=("consistency.teacher", "consistency.teacher_solver", "consistency.num_levels", "consistency.distance"))
