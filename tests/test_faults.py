"""Faults a user can cause (issue #31): values that cannot train are refused before the workdir is touched,
non-finite updates are skipped, one trainer per workdir, unwritable checkpoint directories fail fast, an
unreadable newest checkpoint is replaced when its step is saved again, and the drivers name bad flags."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs.digits_ddpm import get_config
from jaxdiff.errors import EnvironmentFailure
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
    ("diffusion.schedule", "foo", r"foo"),  # schedule and loss options: found building the loss, before the workdir
    ("diffusion.prediction", "foo", r"prediction.*foo|foo.*prediction"),
    ("diffusion.weighting", "foo", r"weighting.*foo|foo.*weighting"),
    ("diffusion.loss_type", "foo", r"loss_type.*foo|foo.*loss_type"),
    ("diffusion.variance", "foo", r"variance.*foo|foo.*variance"),
])
def test_values_that_cannot_train_are_refused_before_the_workdir(field, value, match, tmp_path, data_dir):
    c = smoke(data_dir)
    section, name = field.split(".")
    setattr(getattr(c, section), name, value)
    wd = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(c, str(wd))
    assert not wd.exists()


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_failed_start_leaves_the_workdir_as_it_found_it(tmp_path, data_dir, monkeypatch):
    """A train step that cannot fit in memory is refused after its pre-flight compile, naming the batch size and
    both figures, before anything is written: a fresh workdir is not left behind, a trained workdir resumed so
    is left byte for byte as it was, and the corrected command then trains and resumes."""
    from jaxdiff.training import runner

    c = smoke(data_dir, num_steps=2, checkpoint_every=2, sample_every=2)
    wd = tmp_path / "run"
    small = lambda device=None: (2**20, "a test limit")
    monkeypatch.setattr(runner, "available_memory", small)
    with pytest.raises(MemoryError, match=r"needs \d+ MiB .*but 1 MiB are available \(a test limit\); lower "
                                          r"optim.batch_size=16"):
        train_and_evaluate(c, str(wd))
    assert not wd.exists()
    monkeypatch.undo()
    assert train_and_evaluate(c, str(wd))["step"] == 2
    before = _files(wd)
    c.train.num_steps = 4  # a resumption whose start fails
    monkeypatch.setattr(runner, "available_memory", small)
    with pytest.raises(MemoryError):
        train_and_evaluate(c, str(wd))
    assert _files(wd) == before
    monkeypatch.undo()
    assert train_and_evaluate(c, str(wd))["step"] == 4


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


# --- the drivers refuse what they cannot use, before any work, and never write a non-finite output -----------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    wd = str(tmp_path_factory.mktemp("faults") / "run")
    train_and_evaluate(smoke(data_dir, num_steps=2, checkpoint_every=2, sample_every=2), wd)
    return wd


def _outputs(wd):
    return sorted(glob.glob(os.path.join(wd, "**", "*.npz"), recursive=True) +
                  glob.glob(os.path.join(wd, "**", "*.png"), recursive=True))


@pytest.mark.parametrize("args,match", [
    (["--num_samples=0"], r"--num_samples=0; allowed: an integer >= 1"),
    (["--num_samples=-5"], r"--num_samples=-5; allowed: an integer >= 1"),
    (["--num_steps=0"], r"--num_steps=0; allowed: an integer >= 1"),
    (["--clip_x0=-1"], r"--clip_x0=-1.0; allowed: a finite number >= 0"),
    (["--sampler=ddim", '--options={"eta": "abc"}'], r"eta='abc' for sampler 'ddim'; allowed: a number"),
    (["--options=[1, 2]"], r"must be a JSON object"),
    (["--options={bad"], r"is not JSON"),
    (["--sampler=ddim", '--options={"sigma": 1}'], r"'sigma' is not an option of sampler 'ddim'; allowed: \["),
    (["--init_image=nan"], r"1 of 64 init image values are not finite"),
    (["--init_image=big"], r"init images range over \[0, 50\]; allowed: \[-1, 1\] \(rescale uint8"),
    (["--init_image=shape"], r"init images of shape \(4, 4, 1\) .*the model takes \(8, 8, 1\)"),
])
def test_sample_refuses_bad_values_before_any_work(args, match, trained, tmp_path):
    from absl import app
    from test_readme_commands import run

    images = {"nan": np.where(np.arange(64).reshape(1, 8, 8, 1) == 5, np.nan, 0.0),
              "big": np.full((1, 8, 8, 1), 50.0) * (np.arange(64).reshape(1, 8, 8, 1) > 0),
              "shape": np.zeros((1, 4, 4, 1))}
    for i, a in enumerate(args):
        if a.startswith("--init_image="):
            path = str(tmp_path / "init.npz")
            np.savez(path, images=images[a.split("=")[1]].astype(np.float32))
            args[i] = f"--init_image={path}"
    before = _outputs(trained)
    with pytest.raises((app.UsageError, ValueError), match=match):
        run(["experiments.sample", f"--workdir={trained}", *args])
    assert _outputs(trained) == before


def test_sample_never_writes_non_finite_samples(trained, monkeypatch):
    from test_readme_commands import run

    import jaxdiff.training.generate as G

    monkeypatch.setattr(G, "generate", lambda *a, **k: np.full((4, 8, 8, 1), np.nan, np.float32))
    before = _outputs(trained)
    with pytest.raises(FloatingPointError, match=r"256 of 256 values are not finite \(sampler dpmpp_2m, 4 steps"):
        run(["experiments.sample", f"--workdir={trained}"])
    assert _outputs(trained) == before


def test_evaluate_refuses_bad_values_and_non_finite_samples(trained, tmp_path):
    from absl import app
    from test_readme_commands import run

    with pytest.raises(app.UsageError, match=r"--num_steps=0; allowed: an integer >= 1"):
        run(["experiments.evaluate", f"--workdir={trained}", "--num_steps=0"])
    bad = str(tmp_path / "nan.npz")
    np.savez(bad, samples=np.full((4, 8, 8, 1), np.nan, np.float32), sampler="ddim", num_steps=2)
    with pytest.raises(ValueError, match=r"nan.npz: 256 of 256 sample values are not finite"):
        run(["experiments.evaluate", f"--workdir={trained}", f"--samples={bad}", "--novlb"])
    os.truncate(bad, os.path.getsize(bad) // 2)  # an .npz cut short by a full disk or a kill
    with pytest.raises(EnvironmentFailure, match=r"nan.npz cannot be read as an .npz of samples .*cut short"):
        run(["experiments.evaluate", f"--workdir={trained}", f"--samples={bad}", "--novlb"])


@pytest.mark.parametrize("name", ["euler", "heun", "ipndm", "dpm_solver"])
def test_the_samplers_checks_hold_under_jit(name):
    """A sampler that steps in x / alpha refuses a flow path's t = 1 also inside ``jit`` (the command-line path
    compiles the sampler; it wrote NaN samples with exit 0 before), and its grid stays the compiled one."""
    from jaxdiff import samplers, schedules

    flow = schedules.get_schedule("flow_linear")
    mf = lambda x, t, cond=None: jnp.zeros_like(x)
    run = jax.jit(lambda x, k: samplers.sample(name, mf, flow, x, k, num_steps=4, prediction="velocity"))
    with pytest.raises(ValueError, match=r"infinite at t = 1 where alpha = 0 .*pass t_max < 1"):
        run(jnp.ones((2, 4)), jax.random.key(0))
    ok = jax.jit(lambda x, k: samplers.sample(name, mf, flow, x, k, num_steps=4, prediction="velocity", t_max=0.9))
    assert np.isfinite(np.asarray(ok(jnp.ones((2, 4)), jax.random.key(0)))).all()


def test_the_command_line_path_makes_the_samplers_checks(trained):
    """``generate`` (what experiments.sample runs) on a flow path with Euler: the sampler's own error, before
    compiling, instead of NaN samples."""
    from jaxdiff import schedules
    from jaxdiff.training.generate import generate

    config, model, _, params, _ = restore_trained(trained)

    with pytest.raises(ValueError, match=r"EDM's Euler / Heun sampler steps in x / alpha, infinite at t = 1"):
        generate(config, model, schedules.get_schedule("flow_linear"), params, sampler="euler", num_steps=2,
                 num_samples=2, batch_size=2, seed=0)


def _read_only(monkeypatch, root):
    """Fault injection for read-only storage under ``root`` (CI runs as root, which ignores permission bits):
    creating a directory or opening a file for writing there raises EROFS."""
    import builtins
    import errno

    root = os.path.abspath(root)
    inside = lambda p: os.path.abspath(os.fspath(p)).startswith(root)
    erofs = lambda p: OSError(errno.EROFS, "Read-only file system", os.fspath(p))
    real_mkdir, real_open, real_os_open = os.mkdir, builtins.open, os.open

    def mkdir(p, *a, **k):
        if inside(p):
            raise erofs(p)
        return real_mkdir(p, *a, **k)

    def open_(p, mode="r", *a, **k):
        if isinstance(p, (str, bytes, os.PathLike)) and inside(p) and any(c in mode for c in "wax+"):
            raise erofs(p)
        return real_open(p, mode, *a, **k)

    def os_open(p, flags, *a, **k):
        if inside(p) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise erofs(p)
        return real_os_open(p, flags, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "open", os_open)


def test_a_read_only_workdir_samples_and_evaluates_elsewhere(trained, tmp_path, monkeypatch):
    """Restoring for sampling reads only: a trained workdir on read-only storage samples and evaluates with --out
    elsewhere,
    and a write into it is the named read-only error (not a checkpoint writability check)."""
    from test_readme_commands import run

    _read_only(monkeypatch, trained)
    run(["experiments.sample", f"--workdir={trained}", f"--out={tmp_path / 's'}", "--num_samples=4"])
    assert os.path.exists(tmp_path / "s.npz") and os.path.exists(tmp_path / "s.png")
    run(["experiments.evaluate", f"--workdir={trained}", f"--samples={tmp_path / 's.npz'}",
         f"--out={tmp_path / 'm'}"])
    m = json.load(open(tmp_path / "m.json"))
    assert "fd" in m and any(k.startswith("test_bpd_") for k in m), sorted(m)  # with the VLB terms
    with pytest.raises(OSError, match="Read-only file system"):
        run(["experiments.sample", f"--workdir={trained}", "--num_samples=4"])


def test_outputs_are_written_whole_under_a_fresh_name(tmp_path, monkeypatch):
    """A full disk while an output is written leaves no file (no truncated .npz); two outputs of one name get
    two names, each whole."""
    import errno

    from jaxdiff.outputs import save_npz

    path = str(tmp_path / "x.npz")

    def full(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(OSError, match="No space left") as e:
        save_npz(path, a=np.zeros(3))
    assert e.value.filename == path  # the one-line error names the output
    assert os.listdir(tmp_path) == []  # neither the output nor its temporary file
    monkeypatch.undo()
    a, b = save_npz(path, a=np.zeros(3)), save_npz(path, a=np.ones(3))
    assert (a, b) == (path, str(tmp_path / "x.1.npz")) and sorted(os.listdir(tmp_path)) == ["x.1.npz", "x.npz"]
    assert np.load(b)["a"].tolist() == [1.0, 1.0, 1.0]


def test_a_cut_config_and_a_dangling_workdir_link_are_named(trained, tmp_path, data_dir):
    import shutil

    from jaxdiff.training.workdir import load_config

    wd = str(tmp_path / "copy")
    shutil.copytree(trained, wd)
    path = os.path.join(wd, "config.json")
    text = open(path).read()
    open(path, "w").write(text[: len(text) // 2])
    with pytest.raises(EnvironmentFailure, match=r"copy/config.json is not a readable config .*cut off"):
        load_config(wd)
    link = tmp_path / "link"
    os.symlink(tmp_path / "nowhere", link)
    with pytest.raises(EnvironmentFailure, match=r"is a link to .*nowhere, which does not exist"):
        train_and_evaluate(smoke(data_dir, num_steps=2), str(link))


def test_a_disk_without_room_for_a_checkpoint_is_refused_before_training(tmp_path, data_dir, monkeypatch):
    """Room for the first checkpoint is checked with the pre-flight (a full disk found by Orbax's background
    writers printed ~880 lines): the error names the directory and both figures, and the workdir is left as it
    was found; each later save is checked the same way."""
    import collections
    import shutil

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - (1 << 19), 1 << 19))
    wd = tmp_path / "run"
    with pytest.raises(EnvironmentFailure, match=r"no space for checkpoint 2 in .*run/checkpoints: it needs about "
                                                 r"[0-9.]+ MiB and the device has 0.5 MiB free; free space"):
        train_and_evaluate(smoke(data_dir, num_steps=2, checkpoint_every=2), str(wd))
    assert not wd.exists()


def test_a_cut_data_file_is_named_with_what_to_do(tmp_path, data_dir):
    import shutil

    from jaxdiff.data.pipeline import load_source

    shutil.copytree(os.path.join(data_dir, "digits"), tmp_path / "digits")
    (f,) = glob.glob(str(tmp_path / "digits" / "8" / "*" / "digits-train.array_record*"))
    os.truncate(f, os.path.getsize(f) // 2)  # a copy or a build cut off by a full disk or a kill
    with pytest.raises(EnvironmentFailure, match=r"the data files of digits split 'train' in .*digits/8/1.0.0 cannot "
                                                 r"be read \(.*\); they were cut short or damaged: delete .* and run "
                                                 r"again to rebuild them"):
        load_source("digits", "train", str(tmp_path), "8")


def test_known_environment_failures_end_in_one_line(monkeypatch, capfd):
    """A full or read-only disk (also where Orbax reports it only in a message), a damaged file, a JAX platform
    that cannot start: one line on stderr naming the path or setting and what to do, exit status 1; anything else,
    and everything under --verbose, keeps its traceback."""
    import errno
    import logging

    from absl import flags

    from experiments import common

    monkeypatch.setattr(common, "_silence_stderr", lambda: None)
    monkeypatch.setattr(common, "quiet_echoes", lambda: None)
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    orbax = ValueError('RESOURCE_EXHAUSTED: Error writing "ema_params.x/0" in OCDBT database at local file '
                       '"/w/checkpoints/2.orbax-checkpoint-tmp/state/": Failed to write 842 bytes to file 13: No '
                       "space left on device [os_error_code='28']")
    cases = [(orbax, "no space left on the device holding /w/checkpoints/2: free space there"),
             (OSError(errno.EROFS, "Read-only file system", "/ro/s.npz"), "/ro/s.npz is on read-only storage: "
                                                                          "write elsewhere (sample / evaluate: --out"),
             (EnvironmentFailure("the data files of digits split 'train' in /d cannot be read"), "in /d cannot")]
    for cause, want in cases:
        def main(argv, cause=cause):
            raise RuntimeError("the save failed") from cause

        with pytest.raises(SystemExit) as e:
            common._guarded(main, ["prog"])
        err = capfd.readouterr().err.strip().splitlines()
        assert e.value.code == 1 and len(err) == 1 and err[0].startswith("error: ") and want in err[0], err
    record = logging.LogRecord("absl", logging.ERROR, "/x/orbax/checkpoint/future.py", 1, str(orbax), None, None)
    assert not common.echo_filter(record)  # Orbax's echo of it is quiet
    record.pathname = "/x/jaxdiff/training/loop.py"
    assert common.echo_filter(record)

    def no_platform():
        raise AssertionError()

    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    monkeypatch.setattr(jax, "devices", no_platform)
    with pytest.raises(SystemExit):
        common._guarded(lambda argv: no_platform(), ["prog"])
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert "JAX cannot start the platform JAX_PLATFORMS=cuda (AssertionError); install its jax plugin" in line
    monkeypatch.undo()
    with pytest.raises(KeyError):  # not an environment failure: the traceback
        common._guarded(lambda argv: {}["x"], ["prog"])
    monkeypatch.setattr(common, "quiet_echoes", lambda: None)
    flags.FLAGS["verbose"].value = True  # (no validators: other drivers' flags may be defined)
    try:
        with pytest.raises(RuntimeError, match="the save failed"):
            common._guarded(main, ["prog"])
    finally:
        flags.FLAGS["verbose"].value = False


def test_a_workdir_whose_only_checkpoint_is_torn_is_named_and_kept(tmp_path):
    """No older checkpoint to fall back to: one error naming the directory and what to do; nothing is deleted."""
    from jaxdiff.training.checkpoint import Checkpointer

    ckpt = Checkpointer(str(tmp_path / "checkpoints"), save_every=1, async_save=False)
    ckpt.save(1, {"w": np.ones(300, np.float32)}, {"data": 1})
    ckpt.wait()
    for root, _, names in os.walk(tmp_path / "checkpoints" / "1"):
        for n in names:
            os.truncate(os.path.join(root, n), min(20, os.path.getsize(os.path.join(root, n))))
    with pytest.raises(EnvironmentFailure, match=r"no readable checkpoint in .*checkpoints \(steps \[1\].*move them "
                                                 r"away to train from the start"):
        Checkpointer(str(tmp_path / "checkpoints"), read_only=True).restore({"w": np.zeros(300, np.float32)})
    assert os.path.isdir(tmp_path / "checkpoints" / "1")
