"""Faults a user can cause (issue #31): values that cannot train are refused before the workdir is touched,
non-finite updates are skipped, one trainer per workdir, unwritable checkpoint directories fail fast, an
unreadable newest checkpoint is replaced when its step is saved again, and the drivers name bad flags."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs.digits_ddpm import get_config
from jaxdiff.training import batch_loss, create_train_state, make_train_step
from jaxdiff.training.loop import train_and_evaluate
from jaxdiff.training.restore import restore_trained


def smoke(data_dir, **train):
    c = get_config("smoke")
    c.data.data_dir = data_dir
    c.train.num_grid_samples = 0
    for k, v in train.items():
        setattr(c.train, k, v)
    return c


@pytest.mark.parametrize("field,value,match", [
    ("optim.learning_rate", float("nan"), r"optim.learning_rate=nan cannot train"),
    ("optim.learning_rate", 0.0, r"optim.learning_rate=0.0 cannot train"),
    ("train.num_steps", 0, r"train.num_steps=0; allowed: an integer >= 1"),
    ("train.checkpoint_every", 0, r"train.checkpoint_every=0; allowed: an integer >= 1"),
    ("sample.sampler", "magic", r"unknown sampler 'magic'"),
])
def test_values_that_cannot_train_are_refused_before_the_workdir(field, value, match, tmp_path, data_dir):
    c = smoke(data_dir)
    section, name = field.split(".")
    setattr(getattr(c, section), name, value)
    wd = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(c, str(wd))
    assert not wd.exists()


def test_a_run_of_skipped_steps_stops_with_an_error(tmp_path, data_dir):
    """A learning rate of 1e38 overflows every update: each step is skipped, and after
    train.max_consecutive_skipped of them in a row the run stops with an error that names the field; no
    checkpoint holds a non-finite value."""
    c = smoke(data_dir, max_consecutive_skipped=2, log_every=2)
    c.optim.learning_rate = 1e38
    wd = str(tmp_path / "run")
    with pytest.raises(FloatingPointError, match=r"stopped at step 4: the last 3 steps were all skipped.*"
                                                 r"max_consecutive_skipped=2"):
        train_and_evaluate(c, wd)  # step 1 has lr 0 (warm-up), steps 2-4 overflow; flags are read every 2
    _, _, _, params, step = restore_trained(wd)  # the step-3 checkpoint: step 1's finite parameters
    assert step == 3
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree_util.tree_leaves(params))


def test_a_non_finite_update_is_skipped_and_counted():
    """A finite loss and gradient whose update is NaN (here: a NaN step size) never reaches the params."""
    params = {"w": jnp.ones((3,))}
    tx = optax.chain(optax.sgd(0.1), optax.scale(jnp.nan))
    state = create_train_state(params, tx, 0)

    def loss_fn(p, batch, keys):
        per = jnp.sum((batch["x"] - p["w"]) ** 2, -1)
        return per.mean(), {"loss": per}

    step = jax.jit(make_train_step(batch_loss(loss_fn), tx, ema_decay=0.9))
    new, m = step(state, {"x": jnp.zeros((4, 3)), "index": jnp.arange(4)})
    assert np.isfinite(float(m["loss"])) and np.isfinite(float(m["grad_norm"]))
    assert float(m["finite"]) == 0.0 and int(new.skipped) == 1
    np.testing.assert_array_equal(new.params["w"], params["w"])
    np.testing.assert_array_equal(new.ema_params["w"], params["w"])


def test_a_second_trainer_is_refused_with_the_holders_pid(tmp_path, data_dir):
    from jaxdiff.training.workdir import WorkdirLock

    wd = str(tmp_path / "run")
    lock = WorkdirLock(wd)
    try:
        with pytest.raises(RuntimeError, match=rf"in use by another trainer \(PID {os.getpid()}\)"):
            train_and_evaluate(smoke(data_dir), wd)
    finally:
        lock.release()
    WorkdirLock(wd).release()  # free again


def test_an_unwritable_checkpoint_directory_fails_fast(tmp_path, monkeypatch):
    import tempfile

    from jaxdiff.training.checkpoint import Checkpointer

    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(PermissionError, match="cannot write checkpoints into .*ckpt.*Read-only"):
        Checkpointer(str(tmp_path / "ckpt"))


@pytest.mark.slow  # two training runs and Orbax's retries on the truncated files
def test_an_unreadable_newest_checkpoint_is_replaced(tmp_path, data_dir, capfd):
    """Checkpoints 3 and 6; checkpoint 6's data is truncated: the resume falls back to 3, trains to 6 and
    replaces 6, which then restores bitwise equal to the uninterrupted run's; no event-loop tracebacks."""
    wd = str(tmp_path / "run")
    c = smoke(data_dir, num_steps=6, checkpoint_every=3)
    train_and_evaluate(c, wd)
    *_, want, step = restore_trained(wd)
    assert step == 6
    files = [f for f in glob.glob(os.path.join(wd, "checkpoints", "6", "state", "**", "*"), recursive=True)
             if os.path.isfile(f) and os.path.getsize(f) > 1000]
    for f in files:
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)
    capfd.readouterr()
    m = train_and_evaluate(c, wd)
    assert m["step"] == 6 and [s for s, _ in m["history"]][0] > 3  # it trained again from 3
    err = capfd.readouterr().err
    assert "Event loop is closed" not in err and err.count("Traceback") == 0, err[-2000:]
    *_, got, step = restore_trained(wd)
    assert step == 6
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
