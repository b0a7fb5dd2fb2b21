"""What jaxdiff writes for a user: sample grids as PNG files, and fresh paths that never overwrite an
existing file."""

from __future__ import annotations

import math
import os

import numpy as np

COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))


def plot_sequence(seq, height: int = 48, width: int = 96, split: int | None = None) -> np.ndarray:
    """A line plot ``[height, width, 3]`` uint8 of one sequence ``[L, C]`` (channels in colours, range
    fitted to the sequence); a grey line at position ``split`` (e.g. where a forecast starts)."""
    from PIL import Image, ImageDraw

    seq = np.asarray(seq, np.float64)
    L = seq.shape[0]
    lo, hi = float(seq.min()), float(seq.max())
    span = max(hi - lo, 1e-6)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    xs = np.linspace(1, width - 2, L)
    if split is not None:
        d.line([(xs[split], 0), (xs[split], height)], fill=(180, 180, 180))
    for c in range(seq.shape[1]):
        ys = (height - 3) - (seq[:, c] - lo) / span * (height - 5)
        d.line(list(zip(xs.tolist(), ys.tolist())), fill=COLORS[c % len(COLORS)], width=1)
    return np.asarray(img)


def make_grid(x, ncol: int | None = None, pad: int = 1, scale: int | None = None) -> np.ndarray:
    """Tile images ``[N, H, W, C]`` in [-1, 1] into one uint8 image ``[H', W', C]`` (C = 1 or 3);
    small images are enlarged by pixel repetition to at least 32 pixels. Sequences ``[N, L, C]`` (series,
    audio) are drawn as line plots."""
    x = np.asarray(x, np.float32)
    if x.ndim == 3:
        x = np.stack([plot_sequence(s) for s in x]).astype(np.float32) / 127.5 - 1
        scale = 1
    if x.ndim != 4:
        raise ValueError(f"make_grid expects images [N, H, W, C] or sequences [N, L, C], got shape {x.shape}")
    n, h, w, c = x.shape
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    scale = scale or max(1, 32 // max(h, w))
    img = ((np.clip(x, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    img = img.repeat(scale, 1).repeat(scale, 2)
    h, w = h * scale, w * scale
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = img[i]
    return grid


def unique_path(path: str) -> str:
    """``path`` if free, else ``stem.1.ext``, ``stem.2.ext``, ...: saved results are never overwritten."""
    if not os.path.exists(path):
        return path
    stem, ext = os.path.splitext(path)
    i = 1
    while os.path.exists(f"{stem}.{i}{ext}"):
        i += 1
    return f"{stem}.{i}{ext}"


def save_grid(x, path: str, **kwargs) -> str:
    """Write a PNG grid of ``x`` to ``path`` (or a fresh sibling name if it exists); returns the path."""
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid = make_grid(x, **kwargs)
    path = unique_path(path)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path


def save_inpainting(x0, mask, samples, path: str) -> str:
    """A grid with one row per image: the masked input (unknown = -1), the original, then its samples."""
    n = len(x0)
    masked = x0 * mask + (1 - mask) * -1.0
    rows = np.concatenate([masked[:, None], x0[:, None], samples.reshape((n, -1) + x0.shape[1:])], axis=1)
    return save_grid(rows.reshape((-1,) + x0.shape[1:]), path, ncol=rows.shape[1])
