"""End to end on the smoke config: train a few steps on the offline digits builder, checkpoint, resume,
sample, evaluate -- through the scripts' library functions; and the errors a user can meet."""

import json
import os

import numpy as np
import pytest
from scipy import linalg

from experiments.configs.digits_ddpm import get_config
from jaxdiff.evaluation.fid import frechet_distance
from jaxdiff.training.generate import generate
from jaxdiff.training.loop import train_and_evaluate
from jaxdiff.training.restore import restore_trained

pytestmark = pytest.mark.e2e  # the drivers end to end: the newest-versions CI pass skips this file


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("e2e")
    c = get_config("smoke")
    c.data.data_dir = data_dir
    wd = str(root / "run")
    c.train.num_steps = 3
    m1 = train_and_evaluate(c, wd)
    c.train.num_steps = 6  # resume to 6
    m2 = train_and_evaluate(c, wd)
    return c, wd, m1, m2


def test_train_checkpoint_resume(smoke):
    c, wd, m1, m2 = smoke
    assert m1["step"] == 3 and m2["step"] == 6
    assert np.isfinite(m2["loss"])
    steps = sorted(int(p) for p in os.listdir(os.path.join(wd, "checkpoints")) if p.isdigit())
    assert steps == [3, 6]
    grids = sorted(os.listdir(os.path.join(wd, "samples")))
    assert "grid_0000006.png" in grids
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(wd))


def test_sample_and_evaluate(smoke):
    c, wd, _, _ = smoke
    from jaxdiff.apps.evaluate import evaluate

    config, model, schedule, params, step = restore_trained(wd)
    assert step == 6
    x = generate(config, model, schedule, params, sampler="ddim", num_steps=3, num_samples=8,
                 batch_size=8, seed=0)
    assert x.shape == (8, 8, 8, 1) and np.isfinite(x).all()
    m = evaluate(wd, sampler="dpmpp_2m", num_steps=3, vlb=True)
    for k in ("fd", "fd_floor_train_vs_test", "classifier_test_accuracy", "test_bpd_total"):
        assert np.isfinite(m[k]), k
    assert m["classifier_test_accuracy"] > 0.9  # the feature network itself works
    assert m["test_bpd_total"] > 0  # an untrained 6-step model: large but a valid bound
    with open(m["path"]) as f:
        assert json.load(f)["step"] == 6
    m2 = evaluate(wd, sampler="dpmpp_2m", num_steps=3, vlb=False)
    assert m2["path"] != m["path"]  # never overwritten


def test_workdir_with_other_config_is_refused(smoke):
    c, wd, _, _ = smoke
    c2 = get_config("smoke")
    c2.data.data_dir = c.data.data_dir
    c2.model.base_channels = 8
    with pytest.raises(ValueError, match="different config.*model.base_channels"):
        train_and_evaluate(c2, wd)


def test_dataset_shape_must_fit_model(smoke, tmp_path):
    c = get_config("smoke")
    c.data.data_dir = smoke[0].data.data_dir
    c.model.image_size = 16
    c.model.attention_resolutions = (8,)
    with pytest.raises(ValueError, match="does not fit the U-Net"):
        train_and_evaluate(c, str(tmp_path / "r"))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        restore_trained(str(tmp_path))


def test_unknown_config_field(tmp_path):
    c = get_config("smoke")
    c.lock()  # as config_flags does (lock_config=True): --config.x.y overrides of unknown fields fail
    with pytest.raises(AttributeError):
        c.model.nonexistent_field = 3
    c.unlock()
    c.model.nonexistent_field = 3  # and an unlocked config with an unknown model field is refused
    with pytest.raises(ValueError, match=r"unknown config fields \['model.nonexistent_field'\]"):
        train_and_evaluate(c, str(tmp_path / "r"))


def test_frechet_distance_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 4)), rng.normal(1.0, 2.0, size=(400, 4)) @ rng.normal(size=(4, 4))
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # independent computation via the eigenvalues of sqrt(S1) S2 sqrt(S1)
    r1 = linalg.sqrtm(s1).real
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)
    ref = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(ev, 0, None)))
    np.testing.assert_allclose(frechet_distance(m1, s1, m2, s2), ref, rtol=1e-8)
    # closed form for 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2
    np.testing.assert_allclose(frechet_distance([0.0], [[4.0]], [1.0], [[9.0]]), 1 + 1, rtol=1e-12)


def test_batch_not_divisible_by_devices(tmp_path):
    import jax

    c = get_config("smoke")
    c.parallel.mode = "pmap"
    c.optim.batch_size = jax.local_device_count() + 1
    with pytest.raises(ValueError, match=r"optim.batch_size=9 is not divisible by the 8 devices"):
        train_and_evaluate(c, str(tmp_path / "r"))


def test_classifier_guidance_pipeline(smoke, tmp_path):
    """The classifier task through the generic loop (EMA, Orbax, resume) -> load_classifier -> classifier-
    guided sampling of the unconditional smoke model."""
    from experiments.configs.digits_classifier import get_config as clf_config
    from jaxdiff.training.restore import load_classifier

    c, wd, _, _ = smoke
    cc = clf_config("smoke")
    cc.data.data_dir = c.data.data_dir
    out = str(tmp_path / "clf")
    m = train_and_evaluate(cc, out)
    assert m["step"] == 4 and np.isfinite(m["loss"]) and 0 <= m["accuracy"] <= 1
    assert os.path.isdir(os.path.join(out, "checkpoints", "4"))
    again = train_and_evaluate(cc, out)  # resumes at its last step: nothing trained, nothing overwritten
    assert again["step"] == 4 and again["history"] == []
    fn, _ = load_classifier(out)
    config, model, schedule, params, _ = restore_trained(wd)
    x = generate(config, model, schedule, params, sampler="ddim", num_steps=3, num_samples=4, batch_size=4,
                 seed=0, labels=np.arange(4), guidance_scale=3.0, classifier_fn=fn)
    plain = generate(config, model, schedule, params, sampler="ddim", num_steps=3, num_samples=4, batch_size=4,
                     seed=0)
    assert np.isfinite(x).all() and not np.allclose(x, plain)


def test_guidance_errors(smoke):
    c, wd, _, _ = smoke
    config, model, schedule, params, _ = restore_trained(wd)
    with pytest.raises(ValueError, match="guidance_scale=3.0 needs a condition"):  # nothing to guide towards
        generate(config, model, schedule, params, sampler="ddim", num_steps=2, num_samples=2, batch_size=2,
                 seed=0, guidance_scale=3.0)
    config.model.num_classes = 10  # pretend: a class-conditional model trained without condition dropout
    with pytest.raises(ValueError, match="condition dropout"):
        generate(config, model, schedule, params, sampler="ddim", num_steps=2, num_samples=2, batch_size=2,
                 seed=0, labels=np.array([1, 2]), guidance_scale=2.0)
    config.diffusion.p_uncond = 0.1
    with pytest.raises(ValueError, match=r"unknown labels \[12\]; allowed: 0..9"):
        generate(config, model, schedule, params, sampler="ddim", num_steps=2, num_samples=2, batch_size=2,
                 seed=0, labels=np.array([1, 12]), guidance_scale=2.0)


def test_text_conditioned_pipeline(smoke, tmp_path):
    """digits_text smoke: captions -> tokens -> TextUNet trained, then prompted CFG sampling."""
    from experiments.configs.digits_text import get_config as text_config
    from jaxdiff.models.text import tokenize

    c = text_config("smoke")
    c.data.data_dir = smoke[0].data.data_dir
    c.train.num_steps = 2
    c.train.checkpoint_every = 2
    c.train.sample_every = 2
    wd = str(tmp_path / "text")
    assert train_and_evaluate(c, wd)["step"] == 2
    config, model, schedule, params, _ = restore_trained(wd)
    tok = tokenize(["a handwritten seven", "two"], config.text.max_len)
    x = generate(config, model, schedule, params, sampler="ddim", num_steps=2, num_samples=2, batch_size=2,
                 seed=0, labels=tok, guidance_scale=2.0)
    assert x.shape == (2, 8, 8, 1) and np.isfinite(x).all()


def test_misspelled_field_names_the_nearest_declared_one():
    from jaxdiff.training.schema import check_config

    c = get_config("smoke")
    c.optim.learnin_rate = 1e-3  # a config file's typo
    with pytest.raises(ValueError, match=r"optim.learnin_rate.*did you mean \['optim.learning_rate'"):
        check_config(c)
    from jaxdiff.training.tasks import get_task

    c = get_config("smoke")
    c.task = "gan"
    with pytest.raises(ValueError, match=r"unknown config.task 'gan'; allowed: \['diffusion', 'autoencoder'"):
        get_task(c)


def test_every_config_declares_only_schema_fields():
    """Every experiment config (and its smoke variant) starts from the declared defaults and sets only
    declared fields, so every field can be overridden on the command line."""
    import glob
    import importlib

    from jaxdiff.training.schema import check_config, check_task_fields, declared_fields
    from jaxdiff.training.tasks import TASKS

    names = [os.path.basename(f)[:-3] for f in glob.glob(os.path.join(os.path.dirname(__file__), "..",
                                                                       "experiments", "configs", "*.py"))]
    for name in sorted(n for n in names if not n.startswith("_") and n != "default"):
        mod = importlib.import_module(f"experiments.configs.{name}")
        for variant in ("", "smoke"):
            c = mod.get_config(variant)
            check_config(c)
            check_task_fields(c, c.task, {n: t.fields for n, t in TASKS.items()})  # one method per config
            flat = sorted(k for k in declared_fields())
            assert "parallel.fsdp" in flat and c.parallel.fsdp == 1, name


def test_sdedit_driver_and_condition_labels(smoke):
    """generate_sdedit keeps an input near itself from a small t_start and far from it from t_start = 1;
    condition_labels names what it needs."""
    from jaxdiff.training.generate import condition_labels, generate_sdedit

    c, wd, _, _ = smoke
    config, model, schedule, params, _ = restore_trained(wd)
    x = generate(config, model, schedule, params, sampler="ddim", num_steps=3, num_samples=6, batch_size=6, seed=0)
    near = generate_sdedit(config, model, schedule, params, x, t_start=0.1, sampler="ddim", num_steps=3,
                           batch_size=4)
    with pytest.raises(ValueError, match="room for one step"):  # 1/T: three steps would repeat a time
        generate_sdedit(config, model, schedule, params, x, t_start=1.0 / schedule.num_steps, sampler="ddim",
                        num_steps=3, batch_size=4)
    far = generate_sdedit(config, model, schedule, params, x, t_start=1.0, sampler="ddim", num_steps=3, batch_size=4)
    assert near.shape == x.shape and np.isfinite(far).all()
    assert np.abs(near - x).mean() < 0.5 * np.abs(far - x).mean()
    assert condition_labels(config, 4) is None
    with pytest.raises(ValueError, match="class-conditional"):
        condition_labels(config, 4, label=3)
    with pytest.raises(ValueError, match="text-conditioned"):
        condition_labels(config, 4, prompt="a handwritten seven")
