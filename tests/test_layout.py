"""The training / experiment layer's structure: no import cycles in jaxdiff (imports inside functions
included), a loop of at most 200 lines with no branch on the task, and workdirs written before the task
table restore unchanged."""

import ast
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "jaxdiff")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "prechange_workdirs")


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def import_graph() -> dict[str, set[str]]:
    """Edges module -> jaxdiff module it imports, at any depth of the file (functions included)."""
    modules = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                modules[_module_name(os.path.join(dirpath, f))] = os.path.join(dirpath, f)
    graph = {m: set() for m in modules}
    for m, path in modules.items():
        is_pkg = path.endswith("__init__.py")
        for node in ast.walk(ast.parse(open(path).read())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = m.split(".")
                    parent = parts if is_pkg else parts[:-1]
                    parent = parent[: len(parent) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                if n in modules and n != m:
                    graph[m].add(n)
    return graph


def find_cycle(graph):
    color, stack = {}, []

    def visit(u):
        color[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if color.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if not color.get(v):
                c = visit(v)
                if c:
                    return c
        color[u] = 2
        stack.pop()
        return None

    for u in sorted(graph):
        if not color.get(u):
            c = visit(u)
            if c:
                return c
    return None


def test_no_import_cycle_in_jaxdiff():
    graph = import_graph()
    assert "jaxdiff.training.build" in graph["jaxdiff.training.loop"]  # the walker sees real edges
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


LAYERS = {  # package -> packages it must not import (the library sits below its applications)
    "jaxdiff.evaluation": ("jaxdiff.training", "jaxdiff.apps"),
    "jaxdiff.interop": ("jaxdiff.training", "jaxdiff.apps"),
    "jaxdiff.training": ("jaxdiff.apps", "jaxdiff.evaluation"),
    "jaxdiff.samplers": ("jaxdiff.training", "jaxdiff.apps", "jaxdiff.evaluation"),
}


def test_the_layers_import_downwards_only():
    """evaluation/ and interop/ import nothing from training/ (loading a workdir and generating or evaluating
    from it lives in jaxdiff.apps, above both); training/ does not import evaluation/ or the applications."""
    graph = import_graph()
    bad = [(m, n) for m, deps in graph.items() for pkg, banned in LAYERS.items() if m.startswith(pkg + ".")
           or m == pkg for n in deps if n.startswith(banned)]
    assert not bad, bad


def test_no_seed_arithmetic():
    """Every key comes from run_key(seed, Stream.X) or a seed sequence (no ``seed + 1``)."""
    import re

    # Kept, with what changing them would cost: the digits classifier's cached weights define every committed
    # digits FD, and the fitted AR(1) imputer the committed imputation tables; change them with a re-run.
    allowed = {"rng.py", os.path.join("evaluation", "classifier.py"), os.path.join("testing", "imputation.py")}
    found = []
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py") and os.path.relpath(os.path.join(root, f), PKG) not in allowed:
                path = os.path.join(root, f)
                for i, line in enumerate(open(path), 1):
                    if re.search(r"seed \+ \d|PRNGKey\(seed", line):
                        found.append(f"{os.path.relpath(path, PKG)}:{i}: {line.strip()}")
    assert not found, found


def test_no_module_level_cache():
    """No module of the package keeps compiled functions or restored state between calls: no module-level name
    bound to an empty dict / list / set (filled later), no functools cache decorator. Callers own what they
    reuse (JAX's own jit cache aside)."""
    import ast

    found = []
    for root, _, files in os.walk(PKG):
        for f in (f for f in files if f.endswith(".py")):
            path = os.path.join(root, f)
            tree = ast.parse(open(path).read())
            for node in tree.body:
                value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
                empty = (isinstance(value, (ast.Dict, ast.List, ast.Set)) and not any(
                    getattr(value, k, None) for k in ("keys", "elts"))) or (
                    isinstance(value, ast.Call) and getattr(value.func, "id", "") in ("dict", "list", "set")
                    and not value.args and not value.keywords)
                if empty:
                    found.append(f"{os.path.relpath(path, PKG)}:{node.lineno}")
            for node in ast.walk(tree):
                for d in getattr(node, "decorator_list", []):
                    name = ast.unparse(d)
                    if "lru_cache" in name or name.endswith(("functools.cache", "cache")) and "jit" not in name:
                        found.append(f"{os.path.relpath(path, PKG)}:{node.lineno}: @{name}")
    assert not found, found


def test_the_walker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_loop_is_short_and_never_branches_on_the_task():
    src = open(os.path.join(PKG, "training", "loop.py")).read()
    assert len(src.splitlines()) <= 200
    for word in ("kind ==", "task ==", '"autoencoder"', '"classifier"', '"diffusion"'):
        assert word not in src, word


def _copy(tmp_path, name):
    dst = str(tmp_path / name)
    shutil.copytree(os.path.join(FIXTURES, name), dst)
    return dst


def test_prechange_diffusion_workdir_restores_and_samples(tmp_path):
    """A workdir written before the task table (config without the new fields, raw-key TrainState) restores
    to the same network output, samples, and refuses a changed config while accepting the same one."""
    from jaxdiff.training.generate import generate
    from jaxdiff.training.restore import restore_trained
    from jaxdiff.training.workdir import check_workdir, load_config

    wd = _copy(tmp_path, "diffusion")
    expected = json.load(open(os.path.join(FIXTURES, "expected.json")))
    config, model, schedule, params, step = restore_trained(wd)
    assert step == expected["step"] and config.task == "diffusion" and config.parallel.mode == "auto"
    x = jnp.linspace(-1, 1, 64).reshape(1, 8, 8, 1)
    out = model.apply({"params": params}, x, jnp.array([0.5]))
    np.testing.assert_allclose(np.ravel(out), expected["eps_at_linspace_t05"], rtol=1e-5, atol=1e-6)
    s = generate(config, model, schedule, params, sampler="ddim", num_steps=2, num_samples=2, batch_size=2, seed=0)
    assert s.shape == (2, 8, 8, 1) and np.isfinite(s).all()
    check_workdir(load_config(wd), wd)  # the stored config, filled with defaults, matches itself
    changed = load_config(wd)
    changed.model.base_channels = 16
    try:
        check_workdir(changed, wd)
        raise AssertionError("a changed config was accepted")
    except ValueError as e:
        assert "model.base_channels" in str(e)


def test_prechange_classifier_workdir_loads_msgpack(tmp_path):
    from jaxdiff.training.restore import load_classifier

    wd = _copy(tmp_path, "classifier")
    expected = json.load(open(os.path.join(FIXTURES, "expected.json")))
    fn, config = load_classifier(wd)
    assert config.task == "classifier" and config.classifier.num_classes == 10  # migrated from num_classes
    x = jnp.linspace(-1, 1, 64).reshape(1, 8, 8, 1)
    np.testing.assert_allclose(np.ravel(fn(x, jnp.array([0.5]))), expected["classifier_logits_at_linspace_t05"],
                               rtol=1e-5, atol=1e-6)


def test_unmigratable_workdir_says_how(tmp_path):
    from jaxdiff.training.workdir import load_config

    wd = _copy(tmp_path, "diffusion")
    path = os.path.join(wd, "config.json")
    c = json.load(open(path))
    c["model"]["fancy_unknown"] = 1
    json.dump(c, open(path, "w"))
    try:
        load_config(wd)
        raise AssertionError("an unknown stored field was accepted")
    except ValueError as e:
        assert "model.fancy_unknown" in str(e) and "migrate" in str(e)


# --- the task modules: every training method one task, one loss contract ------------------------------------

TRAINING = os.path.join(PKG, "training")


def _machinery_modules():
    """Every module of jaxdiff/training/ outside training/tasks/."""
    return sorted(os.path.join(TRAINING, f) for f in os.listdir(TRAINING) if f.endswith(".py"))


def test_every_training_method_is_a_task():
    from jaxdiff.training.tasks import TASKS

    assert set(TASKS) == {"diffusion", "autoencoder", "classifier", "progressive_distillation",
                          "consistency_training", "consistency_distillation", "imputation"}
    for name in TASKS:
        if name != "diffusion":
            assert os.path.exists(os.path.join(TRAINING, "tasks", {"progressive_distillation": "distill",
                                                                   "consistency_training": "consistency",
                                                                   "consistency_distillation": "consistency"}
                                               .get(name, name) + ".py")), name


def test_training_machinery_never_branches_on_the_method():
    """Outside training/tasks/ no module compares the task's name, reads a method's own config section or
    knows a method's hidden contract; in all of jaxdiff no loss reads a special batch key."""
    import re

    from jaxdiff.training.tasks import TASKS

    names = "|".join(TASKS)
    sections = "|".join(sorted({f.split(".")[0] for t in TASKS.values() for f in t.fields}))
    branch = [r"(config|c|cfg)\.task\s*(==|!=|\bin\b|\bnot in\b)", rf'(==|!=)\s*"({names})"',
              rf'"({names})"\s*(==|!=|\bin\b)', rf"\bconfig\.({sections})\.", r"task_name\("]
    hidden = [r"takes_target", r'"loss_mask"', r'batch\["step"\]', r'"noise" in batch', r'batch\.get\("noise"']
    for path in _machinery_modules():
        for i, line in enumerate(open(path), 1):
            for pat in branch + hidden:
                assert not re.search(pat, line), f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}"
    for dirpath, _, files in os.walk(PKG):
        for f in (f for f in files if f.endswith(".py")):
            src = open(os.path.join(dirpath, f)).read()
            for pat in hidden:
                assert not re.search(pat, src), (f, pat)


def test_build_keeps_only_shared_converters():
    src = open(os.path.join(TRAINING, "build.py")).read()
    assert len(src.splitlines()) <= 150
    for word in ("autoencoder", "classifier", "distill", "consistency", "imputation", "reflow", "teacher"):
        assert word not in src.lower(), word


def test_a_toy_task_trains_through_the_loop(tmp_path, data_dir, monkeypatch):
    """A task defined here, entered in the table, trains through the generic loop with no other edit: a mean
    estimator mu trained by plain SGD on L = mean_b mean_d (x_bd - mu_d)^2 / (1 + step), whose first update
    is mu_1 = mu_0 + lr * 2 (mean_b x_b - mu_0) / D exactly; its checkpoint restores generically, and the
    method's own field check and its own config section are honoured."""
    import jax

    from experiments.configs.digits_ddpm import get_config
    from jaxdiff.training.build import build_pipeline
    from jaxdiff.training.loop import train_and_evaluate
    from jaxdiff.training.restore import restore
    from jaxdiff.training.tasks import TASKS
    from jaxdiff.training.tasks.base import Task, inputs

    def loss(config, model, teacher):
        def loss_fn(params, batch, keys, *, step, target_params=None):
            per = ((batch["x"].reshape(len(keys), -1) - params["mu"]) ** 2).mean(-1) / (1.0 + step)
            return per.mean(), {"loss": per}

        return loss_fn

    def check(config):
        if config.optim.optimizer != "sgd":
            raise ValueError("the toy task trains with optim.optimizer='sgd'")

    toy = Task(model=lambda config: None, init=lambda config, model: {"mu": jnp.zeros((64,))}, loss=loss,
               data=lambda config: build_pipeline(config), check_input=lambda config, model, shape: None,
               prepare=lambda config: lambda batch, step: inputs(batch), grid=lambda config, model: None,
               check=check, fields=("classifier.t_min",))
    monkeypatch.setitem(TASKS, "toy", toy)
    c = get_config("smoke")
    c.task, c.data.data_dir = "toy", data_dir
    c.optim.update(optimizer="sgd", learning_rate=0.5, warmup_steps=0, grad_clip=0.0, ema_decay=0.0)
    c.train.update(num_steps=1, checkpoint_every=1, sample_every=1, log_every=1)
    with pytest.raises(ValueError, match="optim.optimizer='sgd'"):
        bad = c.copy_and_resolve_references()
        bad.optim.optimizer = "adamw"
        train_and_evaluate(bad, str(tmp_path / "bad"))
    train_and_evaluate(c, str(tmp_path / "toy"))
    config, _, params, _, step = restore(str(tmp_path / "toy"))
    x = np.asarray(build_pipeline(config).batch(0)["x"], np.float64).reshape(c.optim.batch_size, -1)
    np.testing.assert_allclose(np.asarray(params["mu"]), 0.5 * 2 * x.mean(0) / 64, rtol=1e-5, atol=1e-7)
    assert step == 1 and jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure({"mu": 0})
    other = get_config("smoke")
    other.classifier.t_min = 0.1  # a field the toy task owns, set in a diffusion config
    from jaxdiff.training.tasks import check_task

    with pytest.raises(ValueError, match=r"classifier.t_min=0.1 is a field of the tasks \['classifier', 'toy'\]"):
        check_task(other)


# --- workdirs of every method written before the task modules -----------------------------------------------

METHODS_DIR = os.path.join(FIXTURES, "methods")
METHODS = {"autoencoder": "autoencoder", "distill": "progressive_distillation", "cd": "consistency_distillation",
           "ct": "consistency_training", "imputation": "imputation", "reflow": "diffusion"}


def _method_copy(tmp_path, data_dir):
    """All method fixtures copied, their stored paths (data, teachers, pairs, parents) pointed at the copies."""
    root = str(tmp_path / "methods")
    shutil.copytree(METHODS_DIR, root)
    old = "/tmp/bw/before_tiny"  # where the fixtures were written
    for name in os.listdir(root):
        path = os.path.join(root, name, "config.json")
        if os.path.exists(path):
            text = open(path).read().replace(old, root).replace('"/tmp/jd_data"', json.dumps(data_dir))
            open(path, "w").write(text)
    return root


def _fixed_output(name, config, model, params):
    if name == "autoencoder":
        x = jnp.linspace(-1, 1, 32 * 32).reshape(1, 32, 32, 1)
        return model.apply({"params": params["autoencoder"]}, x)[0]
    x = jnp.linspace(-1, 1, 64).reshape(1, 8, 8, 1)
    if name == "imputation":
        mask = (jnp.arange(64).reshape(1, 8, 8, 1) % 3 == 0).astype(jnp.float32)
        return model.apply({"params": params}, x, jnp.array([0.5]), {"obs": mask * x, "mask": mask})
    return model.apply({"params": params}, x, jnp.array([0.5]))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_prechange_method_workdir_restores_and_samples(name, tmp_path, data_dir):
    """A workdir of each method written while flags beside ``task`` chose the method migrates to its task at
    load, restores to the same network output, samples (imputes, reconstructs) and accepts its own config."""
    from jaxdiff.training.generate import generate, generate_imputed
    from jaxdiff.training.restore import restore
    from jaxdiff.training.workdir import check_workdir, load_config

    wd = os.path.join(_method_copy(tmp_path, data_dir), name)
    expected = json.load(open(os.path.join(METHODS_DIR, "expected.json")))[name]
    config, model, params, _, step = restore(wd)
    assert config.task == METHODS[name] and step == expected["step"]
    out = _fixed_output(name, config, model, params)
    # float32 convolutions of another jax / XLA release round differently (newest jax: 1.5e-6 on the
    # autoencoder's output); a wrong restore differs by the output's own size
    np.testing.assert_allclose(np.ravel(out)[:256], expected["output"], rtol=2e-4, atol=2e-5)
    if name == "imputation":
        from jaxdiff.training.build import build_schedule

        known = np.zeros((8, 8, 1), np.float32)
        known[:, :4] = 1
        x = generate_imputed(config, model, build_schedule(config), params, np.zeros((2, 8, 8, 1)), known,
                             sampler="ddim", num_steps=2, seed=0)
        assert x.shape == (2, 8, 8, 1) and np.isfinite(x).all() and (x[:, :, :4] == 0).all()
    elif name != "autoencoder":
        from jaxdiff.training.build import build_schedule

        x = generate(config, model, build_schedule(config), params, sampler=config.sample.sampler, num_steps=1,
                     num_samples=2, batch_size=2, seed=0, **config.sample.options.to_dict())
        assert x.shape == (2, 8, 8, 1) and np.isfinite(x).all()
    check_workdir(load_config(wd), wd)  # the migrated config matches itself


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS))
def test_prechange_method_workdir_evaluates(name, tmp_path, data_dir):
    """Each method's workdir written before the task modules evaluates as its kind of model does: sample
    quality (Frechet distance, confidence, balance), reconstruction, or inpainting of test digits."""
    from jaxdiff.apps.evaluate import evaluate
    from jaxdiff.training.generate import inpaint_test_images
    from jaxdiff.training.restore import restore_trained

    wd = os.path.join(_method_copy(tmp_path, data_dir), name)
    if name == "imputation":  # its evaluation is inpainting (experiments.sample --inpaint, benchmarks/inpainting.py)
        config, model, schedule, params, _ = restore_trained(wd)
        out = inpaint_test_images(config, model, schedule, params, "right", sampler="ddim", num_steps=2, seed=0)
        keep = np.broadcast_to(out["mask"], out["samples"].shape[1:]) == 1  # the known pixels are kept
        assert np.isfinite(out["samples"]).all() and np.array_equal(out["samples"][:, keep], out["known"][:, keep])
        return
    r = evaluate(wd, vlb=False, ode=False)
    assert r and all(np.isfinite(v) for v in r.values() if isinstance(v, float))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["autoencoder", "cd", "ct"])
def test_prechange_method_retrains_bitwise(name, tmp_path, data_dir):
    """The runs whose loss takes the step (iCT's curriculum, the discriminator's start) or the target network
    (CD), trained again now from their stored (migrated) configs and seeds, end bitwise equal to the
    checkpoints the code before the task modules wrote (every method was compared so once, on its smoke config
    and on these fixtures); CD since to its ``retrained`` record, which says what changed its last bits."""
    import hashlib

    import jax

    from jaxdiff.training.loop import train_and_evaluate
    from jaxdiff.training.restore import restore
    from jaxdiff.training.workdir import load_config

    root = _method_copy(tmp_path, data_dir)
    expected = json.load(open(os.path.join(METHODS_DIR, "expected.json")))[name]
    m = train_and_evaluate(load_config(os.path.join(root, name)), str(tmp_path / "again"))
    _, _, params, _, _ = restore(str(tmp_path / "again"))
    leaves = jax.tree_util.tree_leaves(jax.device_get(params))
    expected = expected.get("retrained", expected)  # the run's record since a deliberate change of its arithmetic
    assert hashlib.sha256(b"".join(np.asarray(v).tobytes() for v in leaves)).hexdigest()[:16] == expected["hash"]
    assert [list(h) for h in m["history"]] == expected["loss_history"]
