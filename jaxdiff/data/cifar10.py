"""CIFAR-10 as array_record files without TensorFlow.

TFDS's own ``cifar10`` builder needs TensorFlow twice: it reads the binary archive with ``tf.io.gfile`` and
encodes every image as PNG with ``tf.image.encode_png`` (``tfds.features.Image``); without TensorFlow its
preparation fails with ``No module named 'tensorflow'``. This builder reads the official python archive
(``cifar-10-python.tar.gz``: pickled batches of ``[10000, 3072]`` uint8 rows, the red, green and blue 32x32
planes one after another) with ``tarfile`` and ``pickle`` and stores raw uint8 tensors, so it needs only
numpy. ``data.name = "cifar10"`` uses it (``OFFLINE_BUILDERS`` of :mod:`jaxdiff.data.builders`).

The archive is downloaded on first use (TFDS's download manager), or read from the manual directory
(``<data_dir>/downloads/manual/cifar-10-python.tar.gz``) where a machine has no network.
"""

from __future__ import annotations

import os
import pickle
import tarfile

import numpy as np
import tensorflow_datasets as tfds

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)


def read_batches(archive: str, names) -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, 32, 32, 3] uint8, labels [N] int64)`` of the named pickled batches of the archive."""
    images, labels = [], []
    with tarfile.open(archive, "r:gz") as tar:
        members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
        for name in names:
            if name not in members:
                raise ValueError(f"{archive}: no batch {name!r} (has {sorted(members)}); is it "
                                 f"cifar-10-python.tar.gz from {URL}?")
            batch = pickle.load(tar.extractfile(members[name]), encoding="bytes")
            data = np.asarray(batch[b"data"], np.uint8)
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[b"labels"], np.int64))
    return np.concatenate(images), np.concatenate(labels)


def write_archive(path: str, batches: dict):
    """Write an archive in the official layout from ``{name: (images [N, 32, 32, 3] uint8, labels [N])}``
    (synthetic archives for tests; never over an existing file)."""
    import io

    with tarfile.open(path, "x:gz") as tar:
        for name, (images, labels) in batches.items():
            rows = np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1)
            raw = pickle.dumps({b"batch_label": name.encode(), b"labels": [int(y) for y in labels],
                                b"data": rows, b"filenames": [f"{name}_{i}.png".encode() for i in range(len(rows))]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


class Cifar10Python(tfds.core.GeneratorBasedBuilder):
    """CIFAR-10 (Krizhevsky 2009) from the official python archive, as uint8 tensors (no TensorFlow)."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"Where there is no network, put {ARCHIVE} ({URL}) in the manual directory."

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="CIFAR-10: 60000 32x32 colour images in 10 classes (50000 train, 10000 test)",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(32, 32, 3), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=list(CLASSES))}),
            supervised_keys=("image", "label"), homepage="https://www.cs.toronto.edu/~kriz/cifar.html")

    def _archive(self, dl_manager) -> str:
        manual = os.path.join(self.data_dir_root, "downloads", "manual", ARCHIVE)
        if os.path.exists(manual):
            return manual
        try:
            return os.fspath(dl_manager.download(URL))
        except Exception as e:  # no network, a proxy, a truncated file ...
            raise RuntimeError(f"CIFAR-10 could not be downloaded from {URL} ({type(e).__name__}: {e}); download "
                               f"{ARCHIVE} on a machine with network and put it at {manual}, then run again") from e

    def _split_generators(self, dl_manager):
        archive = self._archive(dl_manager)
        return {"train": self._generate_examples(archive, TRAIN_BATCHES),
                "test": self._generate_examples(archive, TEST_BATCHES)}

    def _generate_examples(self, archive, names):
        images, labels = read_batches(archive, names)
        for i, (im, y) in enumerate(zip(images, labels)):
            yield i, {"image": im, "label": int(y)}
