"""Input pipeline over TFDS ``data_source`` (random access, no TensorFlow).

Batches are a pure function of (seed, step): each epoch is a permutation of the split drawn from
``fold_in(seed, epoch)``, the global batch ``step`` takes the next ``global_batch`` indices of it (drop
remainder), and each process reads its own contiguous slice of the global batch
(``jax.process_index()``). So the data position is the step itself and resuming at step s reproduces
the run exactly.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import jax
import numpy as np

from jaxdiff.rng import Stream, run_key

DIGITS_LEVELS = 17  # scikit-learn's digits take the values 0..16 (also in builders, which imports no pipeline)

# K levels of known datasets (uint8 images: 256).
NUM_LEVELS = {"digits": DIGITS_LEVELS, "photos": 256, "mnist": 256, "cifar10": 256, "celeb_a": 256}


def default_data_dir() -> str:
    return os.environ.get("JAXDIFF_DATA_DIR", os.path.join(os.path.expanduser("~"), "jaxdiff_data"))


def load_source(name: str, split: str, data_dir: Optional[str] = None, config: Optional[str] = None):
    """A random-access TFDS data source; offline builders are prepared on first use. ``name = "arrays"``
    reads ``config`` instead: an ``.npz`` file holding ``<split>_<feature>`` arrays (your own data, or a
    prepared dataset exported with :func:`export_arrays`; needs no TFDS)."""
    if name == "arrays":
        return arrays_source(config, split)
    import tensorflow_datasets as tfds  # imported here: array sources need no TFDS

    from jaxdiff.data.builders import OFFLINE_BUILDERS

    data_dir = data_dir or default_data_dir()
    base = name.split("/")[0]
    if base in OFFLINE_BUILDERS:
        builder = OFFLINE_BUILDERS[base](data_dir=data_dir, config=config, file_format="array_record")
    else:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    source = builder.as_data_source(split=split)
    check_readable(source, f"{name} split {split!r}", builder.data_dir)
    return source


def check_readable(source, what: str, where: str):
    """Read the first and the last record, so that a data file cut short (a full disk or a killed copy while it
    was written) or damaged is named with its directory now, not as the record reader's bare error mid-run."""
    from jaxdiff.errors import EnvironmentFailure

    try:
        for i in {0, len(source) - 1} if len(source) else ():
            source[i]
    except (RuntimeError, OSError, ValueError) as e:
        raise EnvironmentFailure(f"the data files of {what} in {where} cannot be read ({e}); they were cut short or "
                                 f"damaged: delete {where} and run again to rebuild them (offline datasets are "
                                 "prepared again, TFDS datasets downloaded again)") from e


class ArraySource:
    """A random-access source over in-memory arrays (``source[i] -> {key: array[i]}``)."""

    def __init__(self, arrays: dict):
        self.arrays = arrays
        self._n = len(next(iter(arrays.values())))

    def __len__(self):
        return self._n

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.arrays.items()}

    def __getitems__(self, idx):
        return [self[i] for i in idx]


def arrays_source(path: str, split: str):
    """A random-access source over the ``<split>_<feature>`` arrays of an ``.npz`` file (features
    ``image``, ``label``, or any other the config's ``data.key`` names)."""
    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"data.name='arrays' needs data.config = an existing .npz file, got {path!r}")
    with np.load(path) as f:
        keys = list(f.keys())
        arrays = {k[len(split) + 1:]: f[k] for k in keys if k.startswith(split + "_")}
    if not arrays:
        raise ValueError(f"{path} has no {split}_<feature> arrays; it holds {keys}")
    return ArraySource(arrays)


def export_arrays(name: str, path: str, data_dir: Optional[str] = None, config: Optional[str] = None,
                  splits=("train", "test")) -> str:
    """Write a dataset's splits to an ``.npz`` (``<split>_<feature>`` for each feature) readable by the
    ``arrays`` source, e.g. to train on a machine without TFDS. Refuses to overwrite."""
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; choose another path")
    out = {}
    for split in splits:
        ex = list(load_source(name, split, data_dir, config))
        out.update({f"{split}_{k}": np.stack([e[k] for e in ex]) for k in ex[0]})
    np.savez(path, **out)
    return path


def to_float(images: np.ndarray, num_levels: int) -> np.ndarray:
    """K-level integers 0..K-1 -> [-1, 1] (the values the discretized decoder and bits/dim assume);
    ``num_levels = 0`` marks continuous data (time series, audio), returned as float32 unchanged."""
    if not num_levels:
        return np.asarray(images, np.float32)
    return images.astype(np.float32) / (num_levels - 1) * 2.0 - 1.0


def to_levels(x: np.ndarray, num_levels: int) -> np.ndarray:
    """[-1, 1] floats -> the nearest of the K levels as integers 0..K-1."""
    return np.clip(np.round((np.asarray(x) + 1) / 2 * (num_levels - 1)), 0, num_levels - 1).astype(np.int32)


@dataclasses.dataclass
class Pipeline:
    """Deterministic batches of a split held as numpy arrays (small data) or read by index."""

    source: object
    global_batch: int
    num_levels: int
    seed: int
    image_key: str = "image"
    label_key: Optional[str] = "label"
    random_flip: bool = False
    process_index: int = 0
    process_count: int = 1
    transform: Optional[Callable] = None  # batch dict -> batch dict (e.g. captions as tokens)

    def __post_init__(self):
        self.num_examples = len(self.source)
        if self.global_batch < 1 or self.global_batch % self.process_count:
            raise ValueError(f"global batch {self.global_batch} must be >= 1 and divisible by the "
                             f"process count {self.process_count}")
        if self.global_batch > self.num_examples:
            raise ValueError(f"global batch {self.global_batch} exceeds the split's "
                             f"{self.num_examples} examples")
        self.batches_per_epoch = self.num_examples // self.global_batch
        self._cache = None
        if self.num_examples <= 100_000:  # small data: read once
            self._cache = self._read(np.arange(self.num_examples))
        self._perm_epoch, self._perm = -1, None

    def _read(self, idx):
        ex = self.source.__getitems__(list(map(int, idx))) if hasattr(self.source, "__getitems__") \
            else [self.source[int(i)] for i in idx]
        images = np.stack([e[self.image_key] for e in ex])
        labels = np.array([e[self.label_key] for e in ex]) if self.label_key else None
        return images, labels

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            key = jax.random.fold_in(run_key(self.seed, Stream.DATA_ORDER), epoch)
            self._perm = np.asarray(jax.random.permutation(key, self.num_examples))
            self._perm_epoch = epoch
        return self._perm

    def position(self, step: int) -> dict:
        return {"epoch": step // self.batches_per_epoch, "index": step % self.batches_per_epoch}

    def batch(self, step: int) -> dict:
        """This process's part of global batch ``step``: ``x`` in [-1, 1], ``label``, ``index`` (the
        example's index within the global batch, for per-example noise keys)."""
        pos = self.position(step)
        perm = self._permutation(pos["epoch"])
        per = self.global_batch // self.process_count
        lo = pos["index"] * self.global_batch + self.process_index * per
        idx = perm[lo:lo + per]
        if self._cache is not None:
            images = self._cache[0][idx]
            labels = self._cache[1][idx] if self._cache[1] is not None else None
        else:
            images, labels = self._read(idx)
        x = to_float(images, self.num_levels)
        if self.random_flip:
            key = jax.random.fold_in(jax.random.fold_in(run_key(self.seed, Stream.FLIP), step),
                                     self.process_index)
            flip = np.asarray(jax.random.bernoulli(key, 0.5, (per,)))
            x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
        out = {"x": x, "index": np.arange(per, dtype=np.int32) + self.process_index * per}
        if labels is not None:
            out["label"] = labels.astype(np.int32)
        return self.transform(out) if self.transform is not None else out

    def all_images(self) -> np.ndarray:
        """The whole split as K-level integers (evaluation)."""
        return (self._cache[0] if self._cache is not None
                else self._read(np.arange(self.num_examples))[0])

    def all_labels(self):
        return self._cache[1] if self._cache is not None else self._read(np.arange(self.num_examples))[1]
