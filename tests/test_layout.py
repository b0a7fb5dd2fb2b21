"""The training / experiment layer's structure: no import cycles in jaxdiff (imports inside functions
included), a loop of at most 200 lines with no branch on the task, and workdirs written before the task
table restore unchanged."""

import ast
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np

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
    from jaxdiff.training.tasks import restore_trained
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
    from jaxdiff.training.tasks import load_classifier

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
