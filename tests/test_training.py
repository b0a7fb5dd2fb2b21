"""Training machinery: pmap == jit, NaN skip, EMA, checkpoint mismatch, exact resume after SIGKILL."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdiff import losses, schedules
from jaxdiff.models import UNet, UNetConfig
from jaxdiff.training import batch_loss, create_train_state, ema_decay_at, make_optimizer, make_train_step
from jaxdiff.training.checkpoint import Checkpointer, CheckpointMismatchError

CFG = UNetConfig(image_size=8, in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                 attention_resolutions=(4,), num_groups=4)


@pytest.fixture(scope="module")
def setup():
    model = UNet(CFG)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))["params"]
    sched = schedules.get_schedule("cosine", num_steps=100)

    def apply_fn(p, x, t, cond, key):
        return model.apply({"params": p}, x, t, cond)

    loss_fn = losses.make_loss(apply_fn, sched)
    x = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1), minval=-1, maxval=1)
    batch = {"x": x, "index": jnp.arange(16)}
    return params, loss_fn, batch


def test_pmap_equals_jit(setup):
    """8 simulated devices, global batch 16: the same loss and gradients as one device, and the same
    params after 3 SGD steps (relative 1e-5)."""
    params, loss_fn, batch = setup
    n = jax.local_device_count()
    assert n == 8
    tx = optax.sgd(0.1)
    state = create_train_state(params, tx, 0)
    step_jit = jax.jit(make_train_step(batch_loss(loss_fn), tx, ema_decay=0.9))
    step_pmap = jax.pmap(make_train_step(batch_loss(loss_fn), tx, ema_decay=0.9, axis_name="batch"), axis_name="batch")
    rep = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), state)
    shard = lambda b: jax.tree_util.tree_map(lambda a: a.reshape((n, -1) + a.shape[1:]), b)
    s1, s2 = state, rep
    for i in range(3):
        b = dict(batch, x=batch["x"] * (1 - 0.1 * i))
        s1, m1 = step_jit(s1, b)
        s2, m2 = step_pmap(s2, shard(b))
        np.testing.assert_allclose(m2["loss"][0], m1["loss"], rtol=1e-5)
        np.testing.assert_allclose(m2["grad_norm"][0], m1["grad_norm"], rtol=1e-5)
        if i == 0:  # SGD: (p - p') / lr is the gradient itself
            g1 = jax.tree_util.tree_map(lambda a, b: (a - b) / 0.1, params, s1.params)
            g2 = jax.tree_util.tree_map(lambda a, b: (a - b[0]) / 0.1, params, s2.params)
            for a, b_ in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
                np.testing.assert_allclose(b_, a, rtol=1e-5, atol=1e-7)
    for a, b_ in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s2.params)):
        np.testing.assert_allclose(b_[0], a, rtol=1e-5, atol=1e-6)


def test_nan_batch_is_skipped_and_counted(setup, tmp_path):
    params, loss_fn, batch = setup
    tx = make_optimizer(1e-3, 0)
    state = create_train_state(params, tx, 0)
    step = jax.jit(make_train_step(batch_loss(loss_fn), tx, ema_decay=0.9))
    state, m = step(state, batch)
    assert float(m["finite"]) == 1.0
    bad = dict(batch, x=batch["x"].at[3, 2, 2, 0].set(jnp.nan))
    new, m = step(state, bad)
    assert float(m["finite"]) == 0.0 and int(m["skipped"]) == 1 and int(new.step) == 2
    for a, b in zip(jax.tree_util.tree_leaves((state.params, state.ema_params, state.opt_state)),
                    jax.tree_util.tree_leaves((new.params, new.ema_params, new.opt_state))):
        np.testing.assert_array_equal(a, b)
    ck = Checkpointer(str(tmp_path / "ck"), save_every=1, async_save=False)
    ck.save(2, new, {"step": 2})
    ck.wait()
    restored, meta, s = ck.restore(new)
    assert s == 2 and meta["step"] == 2
    assert all(bool(jnp.all(jnp.isfinite(l))) for l in jax.tree_util.tree_leaves(restored.params))
    assert int(restored.skipped) == 1
    ck.close()


def test_ema_warmup_and_update(setup):
    np.testing.assert_allclose(ema_decay_at(jnp.asarray(0), 0.999), 0.1)
    np.testing.assert_allclose(ema_decay_at(jnp.asarray(10**6), 0.999), 0.999)
    params, loss_fn, batch = setup
    tx = optax.sgd(0.1)
    state = create_train_state(params, tx, 0)
    new, _ = jax.jit(make_train_step(batch_loss(loss_fn), tx, ema_decay=0.999))(state, batch)
    for e0, e1, p1 in zip(*(jax.tree_util.tree_leaves(t) for t in (state.ema_params, new.ema_params,
                                                                    new.params))):
        np.testing.assert_allclose(e1, 0.1 * e0 + 0.9 * p1, rtol=1e-5, atol=1e-7)


def test_steps_per_jit_equals_single_steps(setup):
    params, loss_fn, batch = setup
    tx = optax.sgd(0.05)
    state = create_train_state(params, tx, 0)
    one = jax.jit(make_train_step(batch_loss(loss_fn), tx))
    two = jax.jit(make_train_step(batch_loss(loss_fn), tx, steps_per_jit=2))
    b2 = dict(batch, x=-batch["x"])
    s1, _ = one(state, batch)
    s1, _ = one(s1, b2)
    s2, _ = two(state, jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), batch, b2))
    for a, b in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s2.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_checkpoint_shape_mismatch_names_parameter(setup, tmp_path):
    params, _, _ = setup
    tx = optax.sgd(0.1)
    ck = Checkpointer(str(tmp_path / "ck"), save_every=1, async_save=False)
    ck.save(1, create_train_state(params, tx, 0), {})
    ck.wait()
    other = UNet(UNetConfig(**{**CFG.__dict__, "base_channels": 16}))
    p2 = other.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))["params"]
    pattern = r"parameter \['params'\]\[.*\] has shape \(.*\) in the checkpoint but"
    with pytest.raises(CheckpointMismatchError, match=pattern):
        ck.restore(create_train_state(p2, tx, 0))
    ck.close()


def test_incomplete_checkpoint_is_ignored(setup, tmp_path, caplog):
    params, _, _ = setup
    tx = optax.sgd(0.1)
    d = tmp_path / "ck"
    ck = Checkpointer(str(d), save_every=1, async_save=False)
    state = create_train_state(params, tx, 0)
    ck.save(1, state, {"step": 1})
    ck.close()
    (d / "2.orbax-checkpoint-tmp-123").mkdir()  # a write cut off mid-way
    with caplog.at_level("WARNING"):
        ck = Checkpointer(str(d), save_every=1, async_save=False)
    assert "incomplete checkpoint" in caplog.text
    _, meta, step = ck.restore(state)
    assert step == 1 and meta["step"] == 1
    ck.close()


RESUME_ARGS = ["--config.train.num_steps=120", "--config.train.checkpoint_every=10",
               "--config.train.sample_every=1000", "--config.train.log_every=1000",
               "--config.optim.posthoc_ema=(0.05, 0.1)", "--config.train.snapshot_every=5"]


def _train_cmd(workdir, data_dir):
    return [sys.executable, "-m", "experiments.train",
            "--config", "experiments/configs/digits_ddpm.py:smoke", "--workdir", str(workdir),
            f"--config.data.data_dir={data_dir}"] + RESUME_ARGS


def _final_params(workdir):
    from jaxdiff.training.restore import restore_trained

    *_, ema, step = restore_trained(str(workdir))
    return ema, step


@pytest.mark.slow  # 93 s of subprocesses; run with -m slow
def test_exact_resume_after_sigkill(tmp_path):
    """A run killed with SIGKILL after its first checkpoint, then restarted, ends with params bitwise
    equal to an uninterrupted run, and with the same post-hoc EMA snapshots (every 5 steps, bitwise)."""
    root = os.path.dirname(os.path.dirname(__file__))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    data = tmp_path / "data"
    subprocess.run(_train_cmd(tmp_path / "full", data), cwd=root, env=env, check=True,
                   capture_output=True)
    wd = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(wd, data), cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckdir = wd / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckdir.exists() and any(p.name.isdigit() for p in ckdir.iterdir()):
            time.sleep(0.05 * (int(time.time() * 1000) % 7))  # a random step after the first
            break
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the run finished before it could be killed; lengthen it"
    assert max(int(p.name) for p in ckdir.iterdir() if p.name.isdigit()) < 120, "killed too late"
    subprocess.run(_train_cmd(wd, data), cwd=root, env=env, check=True, capture_output=True)
    a, sa = _final_params(tmp_path / "full")
    b, sb = _final_params(wd)
    assert sa == sb == 120
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
    from jaxdiff.training import ema

    snaps = [ema.load_snapshots(str(w), a, 2) for w in (tmp_path / "full", wd)]
    assert snaps[0][0] == snaps[1][0] == [s for s in range(5, 121, 5) for _ in range(2)]
    for x, y in zip(jax.tree_util.tree_leaves(snaps[0][2]), jax.tree_util.tree_leaves(snaps[1][2])):
        np.testing.assert_array_equal(x, y)
