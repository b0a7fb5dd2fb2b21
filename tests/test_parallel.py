"""Many devices and hosts: the FSDP mesh path against the pmap path (8 simulated devices), and two local
processes (gloo collectives, 2 devices each) against one process with 4 devices, through the training
loop with its checkpoints."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs.digits_ddpm import get_config
from jaxdiff.training import parallel
from jaxdiff.training.build import build_model, build_pipeline
from jaxdiff.training.loop import train_and_evaluate
from jaxdiff.training.restore import restore_trained, state_template
from jaxdiff.training.step import example_keys
from jaxdiff.training.tasks import DIFFUSION
from jaxdiff.training.tasks.diffusion import make_denoising_loss

ROOT = os.path.dirname(os.path.dirname(__file__))


def sgd_config(data_dir, mode, steps=3, **parallel_kw):
    c = get_config("smoke")
    c.data.data_dir = data_dir
    c.optim.optimizer = "sgd"
    c.optim.learning_rate = 0.05
    c.optim.warmup_steps = 0
    c.optim.batch_size = 16
    c.train.num_steps, c.train.log_every, c.train.checkpoint_every = steps, 1, steps
    c.train.sample_every = 1000
    c.train.num_grid_samples = 0  # no sample grids (their compilation would dominate the test)
    c.parallel.mode = mode
    c.parallel.update(parallel_kw)
    return c


def _grads(config, params, mode):
    """Gradients of the loss on global batch 0 at ``params``, by the pmap or the FSDP mesh path."""
    model, _ = build_model(config)
    loss_fn = make_denoising_loss(config, model)
    b = build_pipeline(config).batch(0)
    batch = {"x": b["x"], "index": b["index"]}
    key = jax.random.PRNGKey(config.seed)

    def g(p, batch):
        keys = example_keys(key, jnp.int32(0), batch["index"])
        return jax.grad(lambda p: loss_fn(p, batch, keys)[0])(p)

    if mode == "pmap":
        n = jax.local_device_count()
        split = jax.tree_util.tree_map(lambda v: v.reshape((n, -1) + v.shape[1:]), batch)
        rep = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), params)
        out = jax.pmap(lambda p, b: jax.lax.pmean(g(p, b), "batch"), axis_name="batch")(rep, split)
        return jax.tree_util.tree_map(lambda a: np.asarray(a[0]), out)
    mesh = parallel.make_mesh(1, jax.device_count())
    sh = parallel.state_shardings(params, mesh)
    gb = parallel.global_batch(batch, parallel.batch_sharding(mesh))
    out = jax.jit(g, in_shardings=(sh, parallel.batch_sharding(mesh)),
                  out_shardings=parallel.replicated(mesh))(jax.device_put(params, sh), gb)
    return jax.tree_util.tree_map(np.asarray, out)


def _rel(a, b):
    return max(float(np.abs(x - y).max() / (np.abs(y).max() + 1e-12))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_dropout_pmap_matches_jit(data_dir):
    """Dropout 0.1, 8 simulated devices, the same global batch: each example draws its dropout masks from its
    own key (its global index), so the pmap loss and gradients equal one jit run on the whole batch."""
    from jaxdiff.rng import Stream, run_key

    c = sgd_config(data_dir, "pmap")
    c.model.dropout = 0.1
    model, _ = build_model(c)
    params = state_template(c, DIFFUSION, model).params
    # Away from the init, whose zero-initialised output convolutions hide dropout from the loss.
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape, p.dtype)
                                                 for p, k in zip(leaves, keys)])
    loss_fn = make_denoising_loss(c, model)
    b = build_pipeline(c).batch(0)
    batch = {"x": b["x"], "index": b["index"]}
    key = run_key(c.seed, Stream.TRAIN)

    def loss_and_grad(p, batch):
        keys = example_keys(key, jnp.int32(0), batch["index"])
        return jax.value_and_grad(lambda p: loss_fn(p, batch, keys)[0])(p)

    loss_jit, grad_jit = jax.jit(loss_and_grad)(params, batch)
    n = jax.local_device_count()
    assert n == 8
    split = jax.tree_util.tree_map(lambda v: v.reshape((n, -1) + v.shape[1:]), batch)
    rep = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), params)
    loss_pmap, grad_pmap = jax.pmap(lambda p, b: jax.lax.pmean(loss_and_grad(p, b), "batch"),
                                    axis_name="batch")(rep, split)
    np.testing.assert_allclose(float(loss_pmap[0]), float(loss_jit), rtol=1e-5)
    assert _rel(jax.tree_util.tree_map(lambda a: a[0], grad_pmap), grad_jit) < 1e-5
    # Dropout is really on: the same batch without it gives another loss.
    c.model.dropout = 0.0
    model0, _ = build_model(c)
    loss0 = make_denoising_loss(c, model0)(params, batch, example_keys(key, jnp.int32(0), batch["index"]))[0]
    assert abs(float(loss0) - float(loss_jit)) > 1e-4


def test_fsdp_mesh_matches_pmap(tmp_path, data_dir):
    assert jax.device_count() == 8
    runs = {}
    for mode, kw in (("pmap", {}), ("mesh", {"data": 1, "fsdp": 8})):
        wd = str(tmp_path / mode)
        m = train_and_evaluate(sgd_config(data_dir, mode, **kw), wd)
        config, model, schedule, _, step = restore_trained(wd)
        runs[mode] = (np.array([l for _, l in m["history"]]), config)
    np.testing.assert_allclose(runs["mesh"][0], runs["pmap"][0], rtol=1e-5)
    # Params after 3 SGD steps, and the gradient there, by both compile paths.
    from jaxdiff.training.checkpoint import Checkpointer

    states = {}
    for mode in runs:
        c = runs[mode][1]
        model, _ = build_model(c)
        ck = Checkpointer(str(tmp_path / mode / "checkpoints"), async_save=False)
        states[mode] = ck.restore(state_template(c, DIFFUSION, model))[0]
        ck.close()
    assert _rel(states["mesh"].params, states["pmap"].params) < 1e-5
    g_mesh = _grads(runs["mesh"][1], states["mesh"].params, "mesh")
    g_pmap = _grads(runs["pmap"][1], states["pmap"].params, "pmap")
    assert _rel(g_mesh, g_pmap) < 1e-5


def test_fsdp_holds_an_eighth_per_device():
    c = get_config("")  # the main job's U-Net (1.08M params)
    model, _ = build_model(c)
    mesh = parallel.make_mesh(1, 8)
    abstract = jax.eval_shape(lambda: state_template(c, DIFFUSION, model))
    sh = parallel.state_shardings(abstract, mesh)
    state = jax.jit(lambda: state_template(c, DIFFUSION, model), out_shardings=sh)()
    per = parallel.bytes_per_device(state)
    total = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(abstract))
    assert len(per) == 8
    worst = max(per.values()) / total
    assert worst < 0.15, worst  # ~1/8 = 0.125 plus the small replicated tensors (norms, biases)
    assert sum(per.values()) < 1.2 * total  # shards add up to ~the total (+ the small replicas)


def test_bad_parallel_config():
    with pytest.raises(ValueError, match="must divide"):
        parallel.make_mesh(-1, 3)
    with pytest.raises(ValueError, match="needs a coordinator"):
        parallel.initialize(None, 2, 0)
    assert parallel.fsdp_spec((64, 3), 8) == jax.sharding.PartitionSpec()  # too small: replicated
    assert parallel.fsdp_spec((3, 3, 128, 256), 8) == jax.sharding.PartitionSpec(None, None, None, "fsdp")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER = os.path.join(ROOT, "tests", "multiprocess_worker.py")


def _launch(nproc, devices_each, workdir, data_dir, steps, extra=()):
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}")
    procs = [subprocess.Popen([sys.executable, WORKER, "--workdir", workdir, "--data_dir", data_dir,
                               "--steps", str(steps), "--coordinator", f"127.0.0.1:{port}",
                               "--num_processes", str(nproc), "--process_id", str(i), *extra],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(nproc)]
    return procs


def _run(nproc, devices_each, workdir, data_dir, steps):
    procs = _launch(nproc, devices_each, workdir, data_dir, steps)
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-4000:]
    return json.loads([l for l in outs[0].splitlines() if l.startswith("RESULT ")][-1][7:])


@pytest.mark.slow  # ~100 s of subprocesses: run with -m slow (the suite's CPU budget)
def test_two_processes_match_one(tmp_path, data_dir):
    build_pipeline(sgd_config(data_dir, "mesh"))  # prepare the data once, before processes race for it
    two = _run(2, 2, str(tmp_path / "two"), data_dir, steps=4)
    one = _run(1, 4, str(tmp_path / "one"), data_dir, steps=4)
    assert two["process_count"] == 2 and one["process_count"] == 1
    # steps 1-2, checkpoint, restart from it (every process restores its shards), steps 3-4
    assert [s for s, _ in two["history"]] == [1, 2, 3, 4]
    np.testing.assert_allclose([l for _, l in two["history"]], [l for _, l in one["history"]], rtol=1e-5)
    for k in two["grad_norms"]:
        np.testing.assert_allclose(two["grad_norms"][k], one["grad_norms"][k], rtol=1e-5)
    np.testing.assert_allclose(two["grad_sample"], one["grad_sample"], rtol=1e-5, atol=1e-9)
    # only process 0 wrote the config, the TensorBoard file and the checkpoints' metadata
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["2", "4"]


@pytest.mark.slow
def test_dead_process_stops_the_others(tmp_path, data_dir):
    """SIGKILL one of two processes mid-run: the other exits with an error within the heartbeat timeout
    (+ slack) instead of hanging in a collective, and every checkpoint on disk restores."""
    import signal
    import time

    build_pipeline(sgd_config(data_dir, "mesh"))
    wd = tmp_path / "run"
    procs = _launch(2, 2, str(wd), data_dir, steps=4000, extra=("--heartbeat", "10", "--checkpoint_every", "20"))
    ck = wd / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ck.exists() and any(p.name.isdigit() for p in ck.iterdir())):
        assert all(p.poll() is None for p in procs), [p.communicate()[0][-3000:] for p in procs]
        time.sleep(0.2)
    time.sleep(1.0)
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.time()
    try:
        out = procs[0].communicate(timeout=10 + 90)[0]
    except subprocess.TimeoutExpired:
        procs[0].kill()
        pytest.fail("the surviving process hung after its peer died")
    waited = time.time() - t0
    assert procs[0].returncode != 0
    assert waited < 100, waited
    steps = sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit())
    assert steps
    *_, step = restore_trained(str(wd))  # the latest complete checkpoint reads back
    assert step == steps[-1]
    print(f"survivor stopped {waited:.1f} s after the kill; checkpoints {steps}; last lines:\n" + out[-600:])
