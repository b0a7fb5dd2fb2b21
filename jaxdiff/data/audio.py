"""Audio: a loader of WAV folders (16-bit PCM, resampled to a configured rate, cut into fixed-length
segments), WAV writing, synthetic tones for offline demos, and spectrogram images.

Samples are floats in [-1, 1] shaped ``[length, channels]``; a folder becomes an in-memory source that
the deterministic :class:`jaxdiff.data.pipeline.Pipeline` reads like a TFDS data source (files sorted by name;
every ``test_every``-th file is the test split, so no segment of a test file is trained on).
"""

from __future__ import annotations

import math
import os
import wave

import numpy as np

from jaxdiff.data.pipeline import ArraySource


def read_wav(path: str) -> tuple[int, np.ndarray]:
    """``(rate, x [n, channels] float32 in [-1, 1))`` of a 16-bit PCM WAV file."""
    with wave.open(path, "rb") as f:
        width, ch, rate, n = f.getsampwidth(), f.getnchannels(), f.getframerate(), f.getnframes()
        if width != 2 or f.getcomptype() != "NONE":
            raise ValueError(f"{path}: {8 * width}-bit {f.getcomptype()} audio; only 16-bit PCM WAV is supported")
        data = np.frombuffer(f.readframes(n), dtype="<i2")
    return rate, (data.reshape(-1, ch).astype(np.float32) / 32768.0)


def write_wav(path: str, x, rate: int) -> str:
    """Write ``x [n] or [n, channels]`` in [-1, 1] as 16-bit PCM (clipped); never overwrites: returns the
    path written (a fresh sibling name if ``path`` exists)."""
    from jaxdiff.outputs import save_new

    x = np.asarray(x, np.float32)
    x = x[:, None] if x.ndim == 1 else x
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")

    def write(fh):
        with wave.open(fh, "wb") as f:
            f.setnchannels(x.shape[1])
            f.setsampwidth(2)
            f.setframerate(int(rate))
            f.writeframes(pcm.tobytes())

    return save_new(path, write)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy ``resample_poly`` with its Kaiser-windowed anti-aliasing filter) along
    axis 0 by the reduced ratio rate_out / rate_in."""
    from scipy.signal import resample_poly

    if rate_in == rate_out:
        return x
    g = math.gcd(int(rate_in), int(rate_out))
    return resample_poly(x, rate_out // g, rate_in // g, axis=0).astype(np.float32)


def segment(x: np.ndarray, length: int, hop: int | None = None) -> np.ndarray:
    """Cut ``[n, C]`` into ``[N, length, C]`` segments every ``hop`` (default ``length``) samples; the
    shorter tail is dropped."""
    hop = hop or length
    if len(x) < length:
        return np.zeros((0, length, x.shape[1]), np.float32)
    starts = range(0, len(x) - length + 1, hop)
    return np.stack([x[s:s + length] for s in starts])


def load_wav_folder(folder: str, split: str, *, rate: int, length: int, channels: int = 1,
                    hop: int | None = None, test_every: int = 10) -> ArraySource:
    """Segments ``{"audio": [N, length, channels], "file": [N]}`` of the WAV files in ``folder`` (recursive),
    resampled to ``rate``; ``channels = 1`` averages stereo to mono. Split by file: every ``test_every``-th
    file (sorted) is ``test``."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; allowed: 'train', 'test'")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"audio folder {folder!r} does not exist")
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs if f.lower().endswith(".wav"))
    if not files:
        raise ValueError(f"no .wav files in {folder!r}")
    chosen = [f for i, f in enumerate(files) if (i % test_every == test_every - 1) == (split == "test")]
    segs, ids = [], []
    for i, path in enumerate(chosen):
        r, x = read_wav(path)
        if channels == 1:
            x = x.mean(1, keepdims=True)
        elif x.shape[1] != channels:
            raise ValueError(f"{path} has {x.shape[1]} channels; the config wants {channels}")
        s = segment(resample(x, r, rate), length, hop)
        segs.append(s)
        ids += [i] * len(s)
    if not ids:
        raise ValueError(f"no {split} file in {folder!r} holds one segment of {length} samples at {rate} Hz "
                         f"({length / rate:.3f} s)")
    return ArraySource({"audio": np.concatenate(segs).astype(np.float32), "file": np.array(ids, np.int32),
                        "label": np.zeros(len(ids), np.int32)})


def make_tones(folder: str, num_files: int = 200, rate: int = 16000, seconds: float = 1.0, seed: int = 0):
    """Write ``num_files`` synthetic notes (a pentatonic pitch, 3 decaying harmonics, attack/decay
    envelope, a little noise) as 16-bit WAV files: offline audio for demos and tests. Skips existing files."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    scale = 220.0 * 2 ** (np.array([0, 2, 4, 7, 9, 12, 14, 16]) / 12)
    for i in range(num_files):
        f0 = rng.choice(scale)
        amps = rng.uniform(0.2, 1.0, 3) * np.array([1.0, 0.5, 0.25])
        env = np.minimum(t / 0.01, 1.0) * np.exp(-t * rng.uniform(2.0, 6.0))
        x = sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t + rng.uniform(0, 2 * np.pi)) for k, a in enumerate(amps))
        x = 0.5 * env * x / np.abs(x).max() + 0.003 * rng.standard_normal(len(t))
        path = os.path.join(folder, f"tone_{i:04d}.wav")
        if not os.path.exists(path):
            write_wav(path, x, rate)
    return folder


def spectrogram_image(x: np.ndarray, rate: int, height: int = 128, nperseg: int = 128,
                      dynamic_range_db: float = 60.0) -> np.ndarray:
    """A log-magnitude spectrogram ``[height, width]`` uint8 (low frequencies at the bottom, black = the
    loudest bin - ``dynamic_range_db`` or below, white = the loudest) of a mono signal ``[n]`` or ``[n, 1]``;
    frames every nperseg/8 samples."""
    from PIL import Image
    from scipy.signal import spectrogram

    x = np.asarray(x, np.float64).reshape(len(x), -1).mean(1)
    nperseg = min(nperseg, len(x))
    _, _, S = spectrogram(x, fs=rate, nperseg=nperseg, noverlap=nperseg - max(nperseg // 8, 1))
    db = 10 * np.log10(S + 1e-12)
    db = np.clip(db - db.max() + dynamic_range_db, 0, dynamic_range_db) / dynamic_range_db
    img = (255 * db[::-1]).astype(np.uint8)
    w = max(img.shape[1] * 4, 64)
    return np.asarray(Image.fromarray(img).resize((w, height), Image.NEAREST))


def spectral_flatness(x: np.ndarray) -> float:
    """Wiener entropy of the power spectrum (geometric / arithmetic mean): ~0 for a pure tone, ~1 for
    white noise."""
    x = np.asarray(x, np.float64).reshape(len(x), -1).mean(1)
    p = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2 + 1e-20
    return float(np.exp(np.mean(np.log(p))) / np.mean(p))


def write_audio_samples(x, stem: str, rate: int, reference, num: int = 4) -> list[str]:
    """The first ``num`` samples ``[N, L, C]`` as WAV files and one PNG of spectrograms: ``reference`` (a
    training segment, left) then the samples. Never overwrites a file."""
    from PIL import Image

    from jaxdiff.outputs import unique_path

    n = min(num, len(x))
    paths = [write_wav(f"{stem}_{i}.wav", x[i], rate) for i in range(n)]
    specs = [spectrogram_image(reference, rate)] + [spectrogram_image(x[i], rate) for i in range(n)]
    gap = np.full((specs[0].shape[0], 4), 255, np.uint8)
    row = np.concatenate([p for s in specs for p in (s, gap)][:-1], axis=1)
    png = unique_path(stem + "_spectrograms.png")
    Image.fromarray(row).save(png)
    return paths + [png]
