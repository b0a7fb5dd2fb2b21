"""The pure training step: per-example noise from global example indices, pmean over an axis name,
EMA fused in, non-finite updates skipped and counted, optional lax.scan over several batches."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxdiff.rng import as_key
from jaxdiff.training.ema import power_ema_update
from jaxdiff.training.state import TrainState, current_lr


def example_keys(key, step, index):
    """``fold_in(fold_in(key, step), index)`` for each global example index ``[B]`` -> typed keys ``[B]``:
    the noise of an example does not depend on how the batch is split over devices. ``key`` is typed or raw
    key data (the TrainState's)."""
    k = jax.random.fold_in(as_key(key), step)
    return jax.vmap(lambda i: jax.random.fold_in(k, i))(index)


def batch_loss(loss_fn: Callable) -> Callable:
    """A loss of the batch alone, ``loss_fn(params, batch, keys) -> (loss, aux)`` (every loss of
    :mod:`jaxdiff.losses`), under the train step's task-loss contract: it takes no step and no target network."""

    def task_loss(params, batch, keys, *, step, target_params=None):
        del step, target_params
        return loss_fn(params, batch, keys)

    return task_loss


def ema_decay_at(step, decay: float, warmup: bool = True):
    """EMA decay with warm-up: min(decay, (1 + step) / (10 + step)) (as in TF's ExponentialMovingAverage
    with num_updates), so early EMA params follow the model."""
    if not warmup:
        return jnp.asarray(decay)
    s = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + s) / (10.0 + s))


def _quarter_means(per_loss, t, axis_name):
    q = jnp.clip((t * 4).astype(jnp.int32), 0, 3)
    onehot = jax.nn.one_hot(q, 4)
    sums, counts = onehot.T @ per_loss, onehot.sum(0)
    if axis_name is not None:
        sums, counts = jax.lax.psum(sums, axis_name), jax.lax.psum(counts, axis_name)
    return jnp.where(counts > 0, sums / jnp.maximum(counts, 1), jnp.nan)


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, *, ema_decay: float = 0.9999,
                    ema_warmup: bool = True, axis_name: Optional[str] = None,
                    steps_per_jit: int = 1, posthoc_gammas: Sequence[float] = ()) -> Callable:
    """Build ``train_step(state, batch) -> (state, metrics)``.

    Args:
      loss_fn: the task-loss contract, ``loss_fn(params, batch, keys [B], *, step, target_params) -> (loss,
        metrics)``: ``step`` is the optimizer step (a traced int32 scalar), ``target_params`` the EMA params
        under ``stop_gradient`` (consistency distillation's target network); a loss of the batch alone
        enters through :func:`batch_loss`. ``metrics["loss"]`` is per example and, for diffusion losses,
        ``metrics["t"]`` (as :func:`jaxdiff.losses.make_loss` returns): the loss is then also reported by
        quarter of t. Other per-example metrics are reported as batch means.
      tx: the optax optimizer.
      ema_decay, ema_warmup: EMA of the params, updated inside the step.
      axis_name: ``"batch"`` under ``pmap`` (gradients and metrics averaged with ``lax.pmean``); None under
        ``jit`` on one device or on sharded global arrays.
      posthoc_gammas: exponents of the power-function EMAs in ``state.posthoc`` (post-hoc EMA, EDM2;
        :mod:`jaxdiff.training.ema`), updated with beta_k = (1 - 1/k)^(gamma + 1) after the k-th update.
      steps_per_jit: k > 1 runs k optimizer steps per call with ``lax.scan`` over a batch whose leading
        axis is k (score_sde's n_jitted_steps: faster dispatch, k x the input memory).
    ``batch`` holds ``"x"`` ``[B, ...]``, ``"index"`` ``[B]`` (global example indices) and optionally
    ``"cond"``.
    """

    def one_step(state: TrainState, batch):
        keys = example_keys(state.key, state.step, batch["index"])
        target = jax.lax.stop_gradient(state.ema_params)
        fn = lambda p, b, k: loss_fn(p, b, k, step=state.step, target_params=target)
        (loss, aux), grads = jax.value_and_grad(fn, has_aux=True)(state.params, batch, keys)
        if axis_name is not None:
            loss, grads = jax.lax.pmean((loss, grads), axis_name)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        # A non-finite loss, gradient or update must never reach the params or the optimizer state.
        safe_grads = jax.tree_util.tree_map(lambda g: jnp.where(finite, g, 0.0), grads)
        updates, new_opt = tx.update(safe_grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        # The update's norm is finite iff every update is (one reduction, as for the gradient; a per-leaf
        # check of params and optimizer state made XLA:CPU's pmap compile take > 15 GB for the text U-Net).
        finite = finite & jnp.isfinite(optax.tree.norm(updates))
        decay = ema_decay_at(state.step, ema_decay, ema_warmup)
        new_ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, state.ema_params,
                                         new_params)
        new_posthoc = power_ema_update(state.posthoc, new_params, state.step + 1, posthoc_gammas)
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
        new_state = state.replace(
            posthoc=keep(new_posthoc, state.posthoc),
            step=state.step + 1, params=keep(new_params, state.params),
            ema_params=keep(new_ema, state.ema_params), opt_state=keep(new_opt, state.opt_state),
            skipped=state.skipped + (~finite).astype(jnp.int32))
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": current_lr(new_opt),
                   "skipped": new_state.skipped, "finite": finite.astype(jnp.float32)}
        if "t" in aux:  # diffusion losses: the loss by quarter of t
            quarters = _quarter_means(jnp.where(jnp.isfinite(aux["loss"]), aux["loss"], 0.0), aux["t"],
                                      axis_name)
            metrics.update({f"loss_q{i + 1}": quarters[i] for i in range(4)})
        extra = {k: jnp.mean(v) for k, v in aux.items() if k not in ("loss", "t") and k not in metrics}
        if axis_name is not None:
            extra = jax.lax.pmean(extra, axis_name)
        metrics.update(extra)
        return new_state, metrics

    if steps_per_jit == 1:
        return one_step

    def multi_step(state, batches):
        state, metrics = jax.lax.scan(one_step, state, batches)
        return state, jax.tree_util.tree_map(lambda m: m[-1], metrics)

    return multi_step
