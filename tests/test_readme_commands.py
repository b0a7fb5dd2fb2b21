"""The README's command lines run as written, in smoke form: the same flags, the config's ``:smoke`` variant,
workdirs under a temporary directory and documented values in place of placeholders, parsed by absl
in-process. Three run in the default suite (the main job, its sampling command, the FSDP command); the
rest run with ``-m slow``. Multi-host lines (``--coordinator``) are covered by the two-process test; lines that
need what these machines cannot download (CIFAR-10, pytorch-fid's Inception weights, a diffusers checkpoint) are
skipped, their code paths tested on mock data and fixtures (``tests/test_inception.py``, ``test_cifar10.py``,
``test_diffusers_unet.py``)."""

import importlib
import os
import re
import shlex
import sys

import pytest
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLACEHOLDERS = {"S": None, "N": "4", "W": "2"}  # --sampler S / --guidance_scale S, --num_steps N, scale W

pytestmark = pytest.mark.e2e  # the drivers end to end: the newest-versions CI pass skips this file


def readme_commands() -> list[str]:
    """Every ``python -m experiments.*`` command of the README: inline code spans (joined across line
    breaks) and lines of code blocks (comments dropped)."""
    text = open(os.path.join(ROOT, "README.md")).read()
    found = []  # (position, command): in the README's order, so that a command finds its workdir trained
    for b in re.finditer(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        pos = b.start(1)
        for ln in b.group(1).splitlines(keepends=True):
            if "python -m experiments" in ln:
                found.append((pos, ln[ln.index("python -m experiments"):].split("  #")[0].strip()))
            pos += len(ln)
    inline = re.sub(r"```.*?```", lambda m: " " * len(m.group(0)), text, flags=re.S)
    found += [(m.start(), " ".join(m.group(1).split()))
              for m in re.finditer(r"`(python -m experiments\.[^`]*)`", inline)]
    out = [c for _, c in sorted(found)]
    return [c.split(" && ")[-1] for c in out]


def workdir_names(cmd: str) -> set[str]:
    """The workdirs a README command touches, by their top folder under ``runs/``: those of its flags and those
    its config files name (a latent model's autoencoder, a CD teacher, reflow's pairs)."""
    text = cmd
    for stem in re.findall(r"experiments/configs/([\w{},]+)\.py", cmd):
        m = re.match(r"(\w*)\{([\w,]+)\}(\w*)", stem)
        for name in [m.group(1) + x + m.group(3) for x in m.group(2).split(",")] if m else [stem]:
            text += open(os.path.join(ROOT, "experiments", "configs", name + ".py")).read()
    return set(re.findall(r"runs/(\w+)", text))


def readme_groups(n: int = 2) -> list[list[str]]:
    """The README's commands in ``n`` groups that share no workdir (:func:`workdir_names`), each in the README's
    order, about equal in trainings: the slow test runs the groups on two workers at once."""
    cmds = readme_commands()
    parent = list(range(len(cmds)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    owner = {}
    for i, c in enumerate(cmds):
        for w in workdir_names(c):
            if w in owner:
                parent[find(i)] = find(owner[w])
            owner[w] = i
    parts = {}
    for i in range(len(cmds)):
        parts.setdefault(find(i), []).append(i)
    cost = lambda part: sum(1 + (" experiments.train" in cmds[i] or "distill" in cmds[i]) for i in part)
    groups = [[] for _ in range(n)]
    for part in sorted(parts.values(), key=cost, reverse=True):
        min(groups, key=lambda g: cost(g)).extend(part)
    return [[cmds[i] for i in sorted(g)] for g in groups]


def smoke_argv(cmd: str, tmp: str, data_dir: str) -> list[list[str]] | None:
    """``[module, *args]`` lists of one README command in smoke form (several for a ``{a,b}`` config
    pattern); None for a multi-host line."""
    if "--coordinator" in cmd or "--inception_weights" in cmd or "configs/cifar10" in cmd or "--from_diffusers" in cmd:
        return None
    cmd = re.sub(r"\[([^\]]*)\]", r"\1", cmd)  # optional flags are given
    m = re.search(r"digits_\{([a-z,]+)\}\.py", cmd)
    if m:
        return [a for name in m.group(1).split(",") for a in smoke_argv(
            cmd.replace(m.group(0), f"digits_{name}.py").replace("runs/digits_X", f"runs/digits_{name}"), tmp,
            data_dir)]
    words = shlex.split(cmd)
    module, args = words[2], words[3:]
    out = []
    for i, w in enumerate(args):
        prev = args[i - 1] if i else ""
        if prev == "--config" and (w.endswith(".py") or ".py:" in w):
            w = os.path.join(ROOT, w) + (",smoke" if ".py:" in w else ":smoke")
        elif prev in ("--workdir", "--classifier_workdir") or w.startswith("runs/"):
            w = os.path.join(tmp, w)
        elif w in PLACEHOLDERS:
            w = PLACEHOLDERS[w] or ("dpmpp_2m" if prev == "--sampler" else "2")
        elif prev == "--num_steps" and int(w) > 20:
            w = "20"  # the smoke configs' schedules have T = 50 steps
        elif prev == "--num_pairs":
            w = "32"  # reflow pairs of a smoke model: a handful
        elif prev == "--teacher_steps":
            w = "4"  # distillation: rounds 2 -> 1
        elif prev == "--steps_per_round":
            w = "2"
        elif w.startswith(("--config.train.num_steps=", "--config.optim.decay_steps=")):
            continue  # a longer run's length: the smoke config keeps its own
        elif w.startswith("--config.parallel.fsdp="):
            w = "--config.parallel.fsdp=2"  # 8 simulated devices: data 4 x fsdp 2
        out.append(w)
    if module in ("experiments.train", "experiments.train_classifier"):
        out.append(f"--config.data.data_dir={data_dir}")
    return [[module] + out]


def _driver_flags() -> set[str]:
    """Flags defined by the experiment drivers (``experiments.*``), whatever module absl files them under."""
    fv = flags.FLAGS
    return {n for n in fv if (fv.find_module_defining_flag(n) or "").startswith("experiments")
            or n == "config" or n.startswith("config.")}


def run(argv: list[str]):
    """Parse ``argv`` with the module's absl flags (defined afresh: every driver is imported anew) and call
    its ``main``."""
    name, args = argv[0], argv[1:]
    fv = flags.FLAGS
    for n in _driver_flags():
        delattr(fv, n)
    for m in [m for m in sys.modules if m.startswith("experiments.") and not m.startswith("experiments.configs")]:
        del sys.modules[m]
        if "experiments" in sys.modules:  # "from experiments import common" would find the old module
            sys.modules["experiments"].__dict__.pop(m.split(".")[1], None)
    module = importlib.import_module(name)
    driver = importlib.import_module("experiments.train") if name == "experiments.train_classifier" else module
    saved, sys.argv = sys.argv, ["prog"] + args  # config_flags reads --config.* overrides from sys.argv
    try:
        fv(sys.argv)
        driver.main(["prog"])
    finally:
        sys.argv = saved
        fv.unparse_flags()
        _free_compiled()


def _free_compiled():
    """Each command compiles its own programs; free them before the next (a whole README's worth of
    trainings in one process would otherwise exhaust memory)."""
    import gc

    import jax

    jax.clear_caches()
    gc.collect()


def test_the_readme_has_the_commands_this_file_runs():
    cmds = readme_commands()
    assert any("--config.parallel.mode=mesh --config.parallel.fsdp=" in c for c in cmds)
    assert sum(c.startswith("python -m experiments.train ") for c in cmds) >= 5
    for c in cmds:
        assert "--config ..." not in c, f"placeholder config in README command: {c}"


PRODUCERS = ("experiments.train", "experiments.train_classifier", "experiments.distill", "experiments.reflow",
             "experiments.posthoc_ema")  # the drivers that write a workdir


def test_every_workdir_a_readme_command_reads_is_written_by_an_earlier_one():
    """The slow test runs the README's commands in order: a command that reads a workdir (sample, evaluate,
    forecast, a distillation's teacher) must find it written by a command above it (or be a line the slow test
    skips). Checked here without running anything, so that a README edit cannot break the slow test unseen."""
    written, missing = set(), []
    for cmd in readme_commands():
        for argv in smoke_argv(cmd, "T", "D") or []:
            module, args = argv[0], argv[1:]
            values = {k: v for k, v in zip(args, args[1:]) if k.startswith("--")}  # "--flag value" pairs
            produces = module in PRODUCERS
            read_flags = ("--teacher", "--classifier_workdir") + (() if produces else ("--workdir",))
            for w in [values[k] for k in read_flags if k in values]:
                if not any(w == p or w.startswith(p + "/") for p in written):  # or a folder inside it
                    missing.append(f"{cmd}  (reads {w})")
            if produces and "--workdir" in values:
                written.add(values["--workdir"])
    assert not missing, "README commands that read a workdir no command above them writes:\n" + "\n".join(missing)


DEFAULT = ("experiments/configs/digits_ddpm.py --workdir runs/digits",  # the main job
           "experiments.sample --workdir runs/digits --sampler dpmpp_2m",
           "--config.parallel.mode=mesh")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return str(tmp_path_factory.mktemp("readme"))


@pytest.mark.parametrize("needle", DEFAULT)
def test_default_readme_commands(needle, tmp, data_dir):
    cmds = [c for c in readme_commands() if needle in c]
    assert cmds, needle
    for argv in smoke_argv(cmds[0], tmp, data_dir):
        run(argv)
    if "mesh" in needle:
        assert os.path.isdir(os.path.join(tmp, "runs", "digits_fsdp", "checkpoints"))


def test_the_readme_groups_share_no_workdir():
    groups = readme_groups()
    assert sorted(c for g in groups for c in g) == sorted(readme_commands()) and all(groups)
    names = [set().union(*(workdir_names(c) for c in g)) for g in groups]
    assert not names[0] & names[1], names[0] & names[1]
    assert {"digits32_ae", "digits32_ldm"} <= names[0] or {"digits32_ae", "digits32_ldm"} <= names[1]


@pytest.mark.slow
@pytest.mark.parametrize("group", [0, 1])
def test_every_readme_command(group, tmp_path, data_dir, monkeypatch):
    """The README's commands in two groups that share no workdir (``-n 2 --dist load``: one worker each)."""
    monkeypatch.chdir(tmp_path)  # configs name workdirs relatively (latent.autoencoder = "runs/digits32_ae")
    done = []
    for cmd in readme_groups()[group]:
        argvs = smoke_argv(cmd, str(tmp_path), data_dir)
        for argv in argvs or []:
            try:
                run(argv)
            except Exception as e:
                raise AssertionError(f"README command failed in smoke form: {cmd}\n  argv {argv}\n  {e!r}") from e
            done.append(argv)
    assert len(done) >= 10
