"""The training state and optimizer: params, Adam(W) state, EMA params, step, PRNG key, skip count."""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxdiff.rng import Stream, run_key


@flax.struct.dataclass
class TrainState:
    """Everything an exact resume needs (the data position lives in the checkpoint's metadata).

    ``key`` holds the raw data (uint32 [2]) of the run's typed ``TRAIN`` stream key, so that checkpoints store
    it as plain data; the step wraps it back into a typed key (``jaxdiff.rng.as_key``).
    """

    step: jax.Array  # int32 []
    params: Any
    ema_params: Any
    opt_state: Any
    key: jax.Array  # uint32 [2]
    skipped: jax.Array  # int32 [], updates skipped for a non-finite loss or gradient
    # Power-function EMAs for post-hoc EMA (EDM2), one params copy per tracked sigma_rel (jaxdiff.training.ema).
    posthoc: tuple = ()


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(learning_rate: float = 2e-4, warmup_steps: int = 5000, grad_clip: float = 1.0,
                   weight_decay: float = 0.0, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   decay_steps: int | None = None, name: str = "adamw") -> optax.GradientTransformation:
    """AdamW with linear warm-up (DDPM: lr 2e-4, 5000 warm-up steps, clip 1.0), optional cosine decay;
    ``name="sgd"`` for plain SGD with the same schedule (reproducibility checks across device layouts:
    Adam's first update ~ lr sign(g) amplifies reduction-order noise). The learning rate is injected as a
    hyperparameter so that it can be logged."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {list(OPTIMIZERS)}")
    if learning_rate <= 0 or warmup_steps < 0 or grad_clip < 0:
        raise ValueError("learning_rate must be > 0, warmup_steps and grad_clip >= 0; got "
                         f"{learning_rate}, {warmup_steps}, {grad_clip}")
    if decay_steps:
        sched = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1), decay_steps)
    else:
        sched = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1)) if warmup_steps else \
            optax.constant_schedule(learning_rate)
    if name == "sgd":
        adam = optax.inject_hyperparams(optax.sgd)(learning_rate=sched)
    else:
        adam = optax.inject_hyperparams(optax.adamw)(learning_rate=sched, b1=b1, b2=b2, eps=eps,
                                                     weight_decay=weight_decay)
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam) if grad_clip else adam


class MasterWeightsState(NamedTuple):
    master: Any  # float32 copy of the (low-precision) params
    inner: Any  # the wrapped transformation's state, over the master copy


def master_weights(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """Train low-precision (bfloat16) params with float32 master weights (mixed-precision training): ``tx``
    updates a float32 copy held in the optimizer state, and the returned updates move each stored param to
    the master's rounding exactly (``optax.apply_updates`` adds them in float32: bf16 values and their
    differences are exact there). Small updates that bfloat16 would round away accumulate in the master."""
    f32 = lambda tree: jax.tree_util.tree_map(lambda a: a.astype(jnp.promote_types(a.dtype, jnp.float32)), tree)

    def init(params):
        master = f32(params)
        return MasterWeightsState(master, tx.init(master))

    def update(grads, state, params=None):
        updates, inner = tx.update(f32(grads), state.inner, state.master)
        master = optax.apply_updates(state.master, updates)
        out = jax.tree_util.tree_map(lambda m, p: m.astype(p.dtype).astype(m.dtype) - p.astype(m.dtype),
                                     master, params)
        return out, MasterWeightsState(master, inner)

    return optax.GradientTransformation(init, update)


def create_train_state(params, tx: optax.GradientTransformation, seed: int, num_posthoc: int = 0) -> TrainState:
    """The state at step 0; ``num_posthoc`` power-function EMAs tracked for post-hoc EMA. EMAs are float32
    even for bfloat16 params (an EMA's 1e-4 increments vanish in bfloat16)."""
    copy = lambda: jax.tree_util.tree_map(lambda a: jnp.array(a, jnp.promote_types(a.dtype, jnp.float32)), params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=copy(), opt_state=tx.init(params),
                      key=jax.random.key_data(run_key(seed, Stream.TRAIN)), skipped=jnp.zeros((), jnp.int32),
                      posthoc=tuple(copy() for _ in range(num_posthoc)))


def current_lr(opt_state) -> jax.Array:
    """The learning rate of the last update, read from the injected hyperparameters."""
    for s in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: hasattr(x, "hyperparams")):
        if hasattr(s, "hyperparams"):
            return s.hyperparams["learning_rate"]
    return jnp.asarray(jnp.nan)
