"""The CIFAR-10 path (DDPM's flagship experiment) end to end on ``tfds.testing.mock_data``: the TFDS
``cifar10`` builder read through ``data_source`` (array_record), ``cifar10_ddpm.py:smoke`` trained, sampled
and evaluated; and the offline preparation of CIFAR-10 from the official python archive
(:mod:`jaxdiff.data.cifar10`)."""

import functools
from unittest import mock

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")


def _getitems(*args, generator, serialized=False):
    """TFDS 4.9.10's mock binds ``__getitems__`` without ``self`` (its ``_getitems(self, record_keys, ...)``
    is then called as ``_getitems(record_keys)``); accept either form."""
    del serialized
    return [generator[k] for k in args[-1]]


@pytest.fixture
def mock_cifar10():
    from tensorflow_datasets.testing import mocking

    with mock.patch.object(mocking, "_getitems", _getitems), \
            tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


@pytest.mark.e2e  # a config end to end through the drivers: the newest-versions CI pass skips it
def test_cifar10_smoke_trains_samples_and_evaluates(tmp_path, mock_cifar10, monkeypatch):
    from experiments.configs.cifar10_ddpm import get_config
    from jaxdiff.apps.evaluate import evaluate
    from jaxdiff.data.pipeline import load_source
    from jaxdiff.evaluation import classifier
    from jaxdiff.training.generate import generate
    from jaxdiff.training.loop import train_and_evaluate
    from jaxdiff.training.restore import restore_trained

    src = load_source("cifar10", "train", str(tmp_path / "data"))
    ex = src[0]
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8 and 0 <= int(ex["label"]) < 10
    c = get_config("smoke")
    c.data.data_dir = str(tmp_path / "data")
    workdir = str(tmp_path / "run")
    train_and_evaluate(c, workdir)
    config, model, schedule, params, step = restore_trained(workdir)
    assert step == 4 and config.data.name == "cifar10"
    x = generate(config, model, schedule, params, sampler="ddpm", num_steps=4, num_samples=16, batch_size=16, seed=0)
    assert x.shape == (16, 32, 32, 3) and np.isfinite(x).all()  # the program the training grid compiled
    # the feature network of the Fréchet distance trains 1500 steps; 20 suffice to exercise the path here
    monkeypatch.setattr(classifier, "train_classifier", functools.partial(classifier.train_classifier, steps=20))
    m = evaluate(workdir, vlb=False)  # (the VLB over T steps has its own tests; its compile would double this)
    # mock_data's train and test splits are the same random examples: the floor is 0
    assert m["num_samples"] == 16 and np.isfinite(m["fd"]) and m["fd"] > 0 and abs(m["fd_floor_train_vs_test"]) < 1e-6


def synthetic_batches(n=3, seed=0):
    rng = np.random.default_rng(seed)
    from jaxdiff.data.cifar10 import TEST_BATCHES, TRAIN_BATCHES

    return {name: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n))
            for name in TRAIN_BATCHES + TEST_BATCHES}


def test_cifar10_builder_reads_the_python_archive(tmp_path):
    """jaxdiff's TensorFlow-free CIFAR-10 builder prepares array_record files from an archive in the official
    layout (pickled [N, 3072] rows of red, green, blue planes) and load_source('cifar10') reads them back
    pixel for pixel."""
    from jaxdiff.data import cifar10
    from jaxdiff.data.pipeline import load_source

    batches = synthetic_batches()
    manual = tmp_path / "data" / "downloads" / "manual"
    manual.mkdir(parents=True)
    cifar10.write_archive(str(manual / cifar10.ARCHIVE), batches)
    row = batches["data_batch_2"][0][1].transpose(2, 0, 1).reshape(-1)  # the archive's own layout
    images, _ = cifar10.read_batches(str(manual / cifar10.ARCHIVE), ["data_batch_2"])
    assert np.array_equal(images[1].transpose(2, 0, 1).reshape(-1), row)
    train = load_source("cifar10", "train", str(tmp_path / "data"))
    test = load_source("cifar10", "test", str(tmp_path / "data"))
    assert len(train) == 15 and len(test) == 3
    want = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    want_y = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    got = sorted((e["image"].tobytes(), int(e["label"])) for e in (train[i] for i in range(len(train))))
    assert got == sorted((im.tobytes(), int(y)) for im, y in zip(want, want_y))
    assert train[0]["image"].dtype == np.uint8 and train[0]["image"].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="no batch 'data_batch_9'"):
        cifar10.read_batches(str(manual / cifar10.ARCHIVE), ["data_batch_9"])


def test_cifar10_failed_preparation_says_what_to_do(tmp_path, monkeypatch):
    from jaxdiff.data.pipeline import load_source

    def offline(self, *args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds.download.DownloadManager, "download", offline)
    with pytest.raises(RuntimeError, match=r"put it at .*downloads/manual/cifar-10-python\.tar\.gz"):
        load_source("cifar10", "train", str(tmp_path / "data"))
