"""Progressive distillation (Salimans & Ho 2022): the two-step target against the exact Gaussian-mixture teacher,
the loss of an exact student, the round schedule, the rounds through the loop (resumable, skipped when
finished) and the errors."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import distill, schedules
from jaxdiff.parameterization import from_x0_eps_at, x0_eps_fn
from jaxdiff.testing.gmm import random_mixture


@pytest.fixture
def gmm_teacher(x64):
    gmm = random_mixture(jax.random.key(0), 3, 4, dtype=jnp.float64)
    sched = schedules.get_schedule("cosine_continuous") if "cosine_continuous" in schedules.SCHEDULES else \
        schedules.get_schedule("vp")
    fn = x0_eps_fn(gmm.model_fn(sched, "v"), sched, "v")
    return sched, (lambda z, t: fn(z, t)[0])


@pytest.mark.parametrize("n", [1, 4, 64])
def test_target_is_two_teacher_steps_in_one(gmm_teacher, n):
    """One DDIM step with x0 = x_tilde lands where the exact teacher's two half steps land (1e-6)."""
    sched, teacher = gmm_teacher
    B = 64
    t = jnp.asarray(np.random.default_rng(1).integers(1, n + 1, B) / n)
    z = jax.random.normal(jax.random.key(2), (B, 4), jnp.float64) * 1.3
    x_tilde, z2 = distill.two_step_target(sched, teacher, z, t, n)
    one = distill.ddim_step_x0(sched, z, x_tilde, t, t - 1.0 / n)
    np.testing.assert_allclose(np.asarray(one), np.asarray(z2), atol=1e-6 * max(1.0, float(jnp.abs(z2).max())))
    # and by hand: the teacher's own steps
    t1 = t - 0.5 / n
    a = lambda s: sched.alpha(s)[:, None]
    sg = lambda s: sched.sigma(s)[:, None]
    x0a = teacher(z, t)
    z1 = a(t1) * x0a + sg(t1) / sg(t) * (z - a(t) * x0a)
    x0b = teacher(z1, t1)
    t2 = t - 1.0 / n
    want = a(t2) * x0b + jnp.where(sg(t2) > 0, sg(t2) / sg(t1), 0.0) * (z1 - a(t1) * x0b)
    np.testing.assert_allclose(np.asarray(z2), np.asarray(want), atol=1e-10)


def test_exact_student_has_zero_loss_and_a_perturbed_one_does_not(gmm_teacher):
    sched, teacher = gmm_teacher
    n = 8

    def exact_student(params, z, t, cond, keys):  # outputs v of the exact two-step map's x0
        x_tilde, _ = distill.two_step_target(sched, teacher, z, t, n)
        eps = (z - sched.alpha(t)[:, None] * x_tilde) / sched.sigma(t)[:, None]
        return from_x0_eps_at(x_tilde, eps, "v", sched, t) + params

    loss_fn = distill.make_distill_loss(exact_student, teacher, sched, n, "v")
    batch = {"x": jax.random.normal(jax.random.key(3), (128, 4), jnp.float64)}
    loss, m = loss_fn(0.0, batch, jax.random.key(4))
    assert float(loss) < 1e-16, float(loss)
    assert set(np.unique(np.round(np.asarray(m["t"]) * n, 9))) <= set(range(1, n + 1))  # the student's grid
    loss_p, _ = loss_fn(0.01, batch, jax.random.key(4))
    assert float(loss_p) > 1e-6
    # the weight is max(SNR, 1)
    t = jnp.asarray([0.05, 0.5, 0.95])
    np.testing.assert_allclose(np.asarray(distill.truncated_snr_weight(sched, t)),
                               np.maximum(np.asarray(sched.alpha(t) ** 2 / sched.sigma(t) ** 2), 1.0), rtol=1e-12)


def test_round_schedule():
    assert distill.round_schedule(256, 1) == [128, 64, 32, 16, 8, 4, 2, 1]
    assert distill.round_schedule(32, 4) == [16, 8, 4]
    for teacher, target, match in ((12, 1, "do not halve down to 1"), (256, 3, "do not halve down to 3"),
                                   (4, 4, "need teacher steps > target steps")):
        with pytest.raises(ValueError, match=match):
            distill.round_schedule(teacher, target)


@pytest.fixture(scope="module")
def v_teacher(tmp_path_factory, data_dir):
    from experiments.configs.digits_v import get_config
    from jaxdiff.training.loop import train_and_evaluate

    c = get_config("smoke")
    c.data.data_dir = data_dir
    c.train.num_steps, c.train.checkpoint_every, c.train.sample_every = 2, 2, 2
    wd = str(tmp_path_factory.mktemp("distill") / "teacher")
    train_and_evaluate(c, wd)
    return wd, data_dir


@pytest.mark.e2e  # a config end to end through the drivers: the newest-versions CI pass skips it
def test_rounds_through_the_loop(v_teacher, tmp_path):
    """experiments.distill: rounds 2 -> 1 from a 4-step teacher; each student starts from its teacher's EMA
    params, samples with DDIM on its own trailing grid, and a second call skips the finished rounds."""
    from test_readme_commands import run

    from jaxdiff.training.restore import restore_trained
    from jaxdiff.training.workdir import load_config

    teacher, data_dir = v_teacher
    out = tmp_path / "rounds"
    argv = ["experiments.distill", f"--teacher={teacher}", f"--workdir={out}", "--teacher_steps=4",
            "--target_steps=1", "--steps_per_round=2"]
    run(argv)
    assert sorted(os.listdir(out)) == ["round_0001", "round_0002"]
    c1 = load_config(str(out / "round_0001"))
    assert c1.distill.teacher == str(out / "round_0002") and c1.distill.student_steps == 1
    assert c1.sample.sampler == "ddim" and c1.sample.num_steps == 1 and c1.sample.options.spacing == "trailing"
    config, model, schedule, params, step = restore_trained(str(out / "round_0001"))
    assert step == 2 and config.diffusion.prediction == "v"
    mtimes = {p: p.stat().st_mtime for p in out.rglob("*") if p.is_file()}
    run(argv)  # finished rounds are skipped: nothing is written again
    assert {p: p.stat().st_mtime for p in out.rglob("*") if p.is_file()} == mtimes


def test_distill_errors(v_teacher, tmp_path):
    from experiments.configs.digits_ddpm import get_config as eps_config
    from experiments.configs.digits_v import get_config
    from jaxdiff.training.loop import train_and_evaluate
    from jaxdiff.training.tasks import check_task

    teacher, data_dir = v_teacher
    c = get_config("smoke")
    c.data.data_dir = data_dir
    c.distill.teacher = teacher
    with pytest.raises(ValueError, match=r"distill.teacher=.* is a field of the tasks \['progressive_distil"):
        check_task(c)  # a distillation field in a diffusion config: refused, not silently another method
    c.task = "progressive_distillation"
    c.distill.student_steps = 2
    c.distill.teacher = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="distill.teacher=.*is not a workdir with checkpoints"):
        train_and_evaluate(c, str(tmp_path / "student"))
    assert not (tmp_path / "student").exists()  # refused before the workdir is made
    c.distill.teacher = teacher
    e = eps_config("smoke")
    e.task, e.distill.teacher, e.distill.student_steps = "progressive_distillation", teacher, 2
    with pytest.raises(ValueError, match="needs a v- or x0-prediction teacher"):
        check_task(e)
    c2 = get_config("smoke")
    c2.task, c2.distill.teacher, c2.distill.student_steps = "progressive_distillation", teacher, 2
    c2.diffusion.schedule = "linear"
    with pytest.raises(ValueError, match="diffusion.schedule='cosine'"):
        check_task(c2)
    c.distill.student_steps = 0
    with pytest.raises(ValueError, match="distill.student_steps=0"):
        check_task(c)


def _distill_cmd(teacher, wd, steps):
    return [sys.executable, "-m", "experiments.distill", f"--teacher={teacher}", f"--workdir={wd}",
            "--teacher_steps=2", "--target_steps=1", f"--steps_per_round={steps}"]


@pytest.mark.slow
def test_round_resumes_exactly_after_sigkill(v_teacher, tmp_path):
    """A round killed with SIGKILL after its first checkpoint and run again ends bitwise equal to an
    uninterrupted round."""
    from jaxdiff.training.restore import restore_trained

    teacher, data_dir = v_teacher
    root = os.path.dirname(os.path.dirname(__file__))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
               JAXDIFF_DATA_DIR=data_dir)
    subprocess.run(_distill_cmd(teacher, tmp_path / "full", 60), cwd=root, env=env, check=True, capture_output=True)
    wd = tmp_path / "killed"
    proc = subprocess.Popen(_distill_cmd(teacher, wd, 60), cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckdir = wd / "round_0001" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckdir.exists() and any(p.name.isdigit() for p in ckdir.iterdir()):
            break
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the round finished before it could be killed; lengthen it"
    subprocess.run(_distill_cmd(teacher, wd, 60), cwd=root, env=env, check=True, capture_output=True)
    *_, a, sa = restore_trained(str(tmp_path / "full" / "round_0001"))
    *_, b, sb = restore_trained(str(wd / "round_0001"))
    assert sa == sb == 60
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
