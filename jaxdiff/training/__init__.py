"""Training machinery: TrainState with EMA, the pure train_step, Orbax checkpointing, the loop."""

from jaxdiff.training.state import TrainState, create_train_state, make_optimizer
from jaxdiff.training.step import batch_loss, ema_decay_at, example_keys, make_train_step

__all__ = ["TrainState", "create_train_state", "make_optimizer", "make_train_step", "example_keys",
           "ema_decay_at", "batch_loss"]
