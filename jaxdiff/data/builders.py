"""Offline TFDS builders (array_record files, no TensorFlow): data that ships in a package, prepared on
first use into the data dir and read back with ``tfds.data_source``.

``digits``: scikit-learn's 8x8 handwritten digits (1797 images, 17 levels 0..16, labels 0-9); configs
``8`` (as shipped), ``16`` and ``32`` (bilinear upsampling, re-quantized to the 17 levels). The test split
is every 6th image (300 images), the rest is train (1497).

``series``: six real series that statsmodels ships (sunspots, CO2, El Nino, Nile, US unemployment and
inflation; :mod:`jaxdiff.data.series`) as context-normalised windows ``[window, 1]`` (float32) with the
series id as label; configs ``<window>_<horizon>`` (``32_8``, ``48_8``, ``64_16``); train = windows before the last
20% of each series, test = rolling forecast origins inside it. ``32_8_val`` / ``48_8_val`` are the same cut of
each series' training part alone (its "test" split is a validation split by time, for choosing settings
without looking at the test part).

``photos``: 64x64 crops (stride 32) of the real photographs scikit-image ships (astronaut, cat, rocket,
Hubble deep field, retina, ...; grey ones repeated to RGB), 256 levels; the test split is the crops of
two held-out photos (coffee, gravel), so no test pixel is ever trained on.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

DIGITS_LEVELS = 17  # scikit-learn's digits take the values 0..16


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``[N, 8, 8]`` float images to ``[N, size, size]`` (scipy's order-1 zoom)."""
    from scipy.ndimage import zoom

    if size == images.shape[1]:
        return images
    return np.stack([zoom(im, size / im.shape[0], order=1, mode="nearest", grid_mode=True)
                     for im in images])


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits as a TFDS dataset of uint8 tensors with 17 levels."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=str(s), description=f"{s}x{s}") for s in (8, 16, 32)]

    @property
    def size(self) -> int:
        return int(self.builder_config.name)

    def _info(self):
        s = self.size
        return tfds.core.DatasetInfo(
            builder=self,
            description="scikit-learn 8x8 handwritten digits (UCI), 17 grey levels 0..16",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(s, s, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        from sklearn.datasets import load_digits

        d = load_digits()
        images = _resize(d.images.astype(np.float64), self.size)
        images = np.clip(np.round(images), 0, DIGITS_LEVELS - 1).astype(np.uint8)[..., None]
        idx = np.arange(len(images))
        test = idx % 6 == 0
        return {"train": self._generate_examples(images[~test], d.target[~test], idx[~test]),
                "test": self._generate_examples(images[test], d.target[test], idx[test])}

    def _generate_examples(self, images, labels, ids):
        for im, lab, i in zip(images, labels, ids):
            yield int(i), {"image": im, "label": int(lab)}


class Series(tfds.core.GeneratorBasedBuilder):
    """Windows of real time series (statsmodels datasets), normalised by their context."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n, description=f"window_horizon {n}")
                       for n in ("32_8", "48_8", "64_16")] + [
        tfds.core.BuilderConfig(name=f"{n}_val", description=f"window_horizon {n}, validation: the test part "
                                "removed, the last 20% of the training part held out in its place")
        for n in ("32_8", "48_8")]  # 64_16_val: the Nile's 80 training values hold no 64-window before the cut

    @property
    def window_horizon(self) -> tuple[int, int]:
        w, h = self.builder_config.name.split("_")[:2]
        return int(w), int(h)

    @property
    def validation(self) -> bool:
        return self.builder_config.name.endswith("_val")

    def _info(self):
        from jaxdiff.data.series import SERIES_NAMES

        w, _ = self.window_horizon
        return tfds.core.DatasetInfo(
            builder=self,
            description="statsmodels time series as context-normalised windows",
            features=tfds.features.FeaturesDict({
                "series": tfds.features.Tensor(shape=(w, 1), dtype=np.float32),
                "label": tfds.features.ClassLabel(names=list(SERIES_NAMES)),
                "loc": tfds.features.Tensor(shape=(), dtype=np.float32),
                "scale": tfds.features.Tensor(shape=(), dtype=np.float32),
                "start": tfds.features.Tensor(shape=(), dtype=np.int32)}))

    def _split_generators(self, dl_manager):
        from jaxdiff.data.series import SERIES_NAMES, load_series, make_windows, training_part

        w, h = self.window_horizon
        parts = {"train": [], "test": []}
        for i, name in enumerate(SERIES_NAMES):
            values = load_series(name)
            tr, te = make_windows(training_part(values) if self.validation else values, w, h)
            parts["train"].append((i, tr))
            parts["test"].append((i, te))
        return {k: self._generate_examples(v) for k, v in parts.items()}

    def _generate_examples(self, parts):
        for label, d in parts:
            for j in range(len(d["z"])):
                yield f"{label}_{j}", {"series": d["z"][j][:, None], "label": label, "loc": d["loc"][j],
                                       "scale": d["scale"][j], "start": d["start"][j]}


PHOTOS_TRAIN = ("astronaut", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                "colorwheel", "camera", "coins", "moon", "brick", "grass", "clock")
PHOTOS_TEST = ("coffee", "gravel")


def photo_crops(name: str, size: int = 64, stride: int = 32) -> np.ndarray:
    """``[N, size, size, 3]`` uint8 crops of scikit-image's sample image ``name`` (shipped with the
    package), halved first when its short side exceeds 600 pixels."""
    import skimage.data
    from skimage.transform import rescale

    im = getattr(skimage.data, name)()
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=-1)
    im = im[..., :3]
    if min(im.shape[:2]) > 600:
        im = (rescale(im, 0.5, channel_axis=-1, anti_aliasing=True) * 255).round().astype(np.uint8)
    H, W = im.shape[:2]
    return np.stack([im[i:i + size, j:j + size] for i in range(0, H - size + 1, stride)
                     for j in range(0, W - size + 1, stride)])


class Photos(tfds.core.GeneratorBasedBuilder):
    """Crops of scikit-image's sample photographs (real photos, offline) as uint8 tensors."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="64", description="64x64 crops, stride 32")]

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="64x64 crops of scikit-image's sample photographs",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(64, 64, 3), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=list(PHOTOS_TRAIN + PHOTOS_TEST))}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(PHOTOS_TRAIN), "test": self._generate_examples(PHOTOS_TEST)}

    def _generate_examples(self, names):
        all_names = list(PHOTOS_TRAIN + PHOTOS_TEST)
        for name in names:
            for j, crop in enumerate(photo_crops(name)):
                yield f"{name}_{j}", {"image": crop, "label": all_names.index(name)}


def _cifar10(**kwargs):
    from jaxdiff.data.cifar10 import Cifar10Python

    kwargs.pop("config", None)
    return Cifar10Python(**kwargs)


# jaxdiff's builders by data.name; cifar10 is jaxdiff's TensorFlow-free builder (jaxdiff/data/cifar10.py)
OFFLINE_BUILDERS = {"digits": Digits, "series": Series, "photos": Photos, "cifar10": _cifar10}
