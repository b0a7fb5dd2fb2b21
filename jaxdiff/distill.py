"""Progressive distillation (Salimans & Ho 2022): a student learns to take in one DDIM step what its teacher
takes in two, so that rounds halve the number of sampling steps (e.g. 256 -> 128 -> ... -> 1).

On the student's grid of N steps, t = i / N (i = 1..N): the teacher takes two deterministic DDIM steps
t -> t' = t - 1/(2N) -> t'' = t - 1/N from z_t, and the target is the x0 for which *one* DDIM step from z_t
lands where the two did (their Algorithm 2):

    x_tilde = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t).

The student (any parameterization; v or x0 prediction, as an eps student cannot take large steps near t = 1)
is trained on || x0_hat(z_t) - x_tilde ||^2 with the truncated-SNR weight max(SNR(t), 1).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxdiff.forward import bcast
from jaxdiff.parameterization import to_x0_eps_at
from jaxdiff.rng import Stream, per_example_keys, stream
from jaxdiff.samplers.ddim import ddim_step

STUDENT_PREDICTIONS = ("v", "x0")


def ddim_step_x0(schedule, z_t, x0, t, s):
    """The deterministic DDIM step t -> s given the prediction x0: z_s = alpha_s x0 + (sigma_s / sigma_t)(z_t -
    alpha_t x0), the samplers' :func:`~jaxdiff.samplers.ddim.ddim_step` at eta = 0 with eps from (z_t, x0)."""
    eps = (z_t - bcast(schedule.alpha(t), z_t) * x0) / bcast(schedule.sigma(t), z_t)
    return ddim_step(schedule, z_t, x0, eps, t, s, 0.0, 0.0)


def two_step_target(schedule, teacher_x0: Callable, z_t, t, num_steps: int):
    """``(x_tilde, z_t'')``: the x0 whose single DDIM step t -> t - 1/N equals the teacher's two half steps.

    ``teacher_x0(z, t [B]) -> x0_hat``; ``t [B]`` on the student's grid of ``num_steps`` = N steps.
    """
    t1, t2 = t - 0.5 / num_steps, t - 1.0 / num_steps
    z1 = ddim_step_x0(schedule, z_t, teacher_x0(z_t, t), t, t1)
    z2 = ddim_step_x0(schedule, z1, teacher_x0(z1, t1), t1, t2)
    ratio = schedule.sigma(t2) / schedule.sigma(t)
    denom = schedule.alpha(t2) - ratio * schedule.alpha(t)
    return (z2 - bcast(ratio, z_t) * z_t) / bcast(denom, z_t), z2


def truncated_snr_weight(schedule, t):
    """max(SNR(t), 1) (Salimans & Ho 2022, sec. 4): the x0-MSE weighted like eps-MSE at low noise and like
    x0-MSE at high noise, where SNR -> 0."""
    return jnp.maximum(jnp.exp(schedule.logsnr(t)), 1.0)


def make_distill_loss(student_apply: Callable, teacher_x0: Callable, schedule, num_steps: int,
                      prediction: str = "v") -> Callable:
    """``loss_fn(params, batch, key) -> (loss, metrics)`` of one distillation round.

    Args:
      student_apply: ``student_apply(params, z_t, t, cond, dropout_keys) -> prediction``.
      teacher_x0: ``teacher_x0(z_t, t [B]) -> x0_hat`` (the previous round's EMA student, or the original model).
      num_steps: N, the student's number of sampling steps (the teacher takes 2N).
      prediction: the student's parameterization (``v`` or ``x0``).
    """
    check_student(prediction, num_steps)

    def loss_fn(params, batch, key):
        x0 = jnp.asarray(batch["x"])
        B = x0.shape[0]
        keys = per_example_keys(key, B)
        i = jax.vmap(lambda k: jax.random.randint(stream(k, Stream.TIME), (), 1, num_steps + 1))(keys)
        t = i.astype(x0.dtype) / num_steps
        eps = jax.vmap(lambda k, x: jax.random.normal(stream(k, Stream.NOISE), x.shape, x.dtype))(keys, x0)
        z_t = bcast(schedule.alpha(t), x0) * x0 + bcast(schedule.sigma(t), x0) * eps
        target, _ = two_step_target(schedule, teacher_x0, z_t, t, num_steps)
        target = jax.lax.stop_gradient(target)
        out = student_apply(params, z_t, t, batch.get("cond"), jax.vmap(lambda k: stream(k, Stream.DROPOUT))(keys))
        x0_hat, _ = to_x0_eps_at(out[..., : x0.shape[-1]], prediction, z_t, schedule, t)
        mse = jnp.mean((x0_hat - target) ** 2, axis=tuple(range(1, x0.ndim)))
        loss = truncated_snr_weight(schedule, t) * mse
        return loss.mean(), {"loss": loss, "mse": mse, "t": t}

    return loss_fn


def check_student(prediction: str, num_steps: int):
    if prediction not in STUDENT_PREDICTIONS:
        raise ValueError(f"progressive distillation needs a v- or x0-prediction teacher (the student starts as a "
                         f"copy of it), got prediction={prediction!r}; allowed: {list(STUDENT_PREDICTIONS)} "
                         "(an eps student cannot take large steps near t = 1, where x0 = (x - sigma eps) / alpha)")
    if int(num_steps) < 1:
        raise ValueError(f"distill.student_steps={num_steps}; allowed: an integer >= 1")


def round_schedule(teacher_steps: int, target_steps: int) -> list[int]:
    """The students' step counts of the rounds: teacher_steps / 2, / 4, ... down to target_steps."""
    if teacher_steps < 2 or target_steps < 1 or teacher_steps <= target_steps:
        raise ValueError(f"need teacher steps > target steps >= 1, got {teacher_steps} -> {target_steps}")
    out, n = [], teacher_steps
    while n > target_steps:
        if n % 2:
            raise ValueError(f"{teacher_steps} steps do not halve down to {target_steps} (reached the odd {n}); "
                             f"allowed: teacher steps = target steps x a power of 2, e.g. {target_steps * 256}")
        n //= 2
        out.append(n)
    if out[-1] != target_steps:
        raise ValueError(f"{teacher_steps} steps do not halve down to {target_steps} (halving gives {out}); "
                         f"allowed: teacher steps = target steps x a power of 2, e.g. {target_steps * 256}")
    return out
