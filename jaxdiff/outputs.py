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


def _fsync_dir(directory: str):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_new(path: str, write) -> str:
    """The one writer of what jaxdiff saves for a user: ``write(f)`` fills a temporary file in ``path``'s
    directory, which is flushed to disk and then linked to ``path``, or to the first free sibling name
    (``stem.1.ext``, ...) when ``path`` exists; the link is atomic and exclusive, so a file is there whole or
    not at all (a full disk or a kill leaves no truncated output) and two writers never pick the same name.
    Returns the path written."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        stem, ext = os.path.splitext(path)
        i = 0
        while True:
            target = path if i == 0 else f"{stem}.{i}{ext}"
            try:
                os.link(tmp, target)
                break
            except FileExistsError:
                i += 1
        _fsync_dir(directory)
        return target
    except OSError as e:  # a full or read-only disk found while writing: name the output
        if e.filename is None:
            e.filename = path
        raise
    finally:
        os.unlink(tmp)


def save_json(obj, path: str) -> str:
    """``obj`` as indented JSON at ``path`` or a fresh sibling name (:func:`save_new`)."""
    import json

    return save_new(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def save_npz(path: str, **arrays) -> str:
    """A compressed ``.npz`` at ``path`` or a fresh sibling name (:func:`save_new`)."""
    return save_new(path, lambda f: np.savez_compressed(f, **arrays))


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

    grid = make_grid(x, **kwargs)
    image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    return save_new(path, lambda f: image.save(f, format="PNG"))


def save_inpainting(x0, mask, samples, path: str) -> str:
    """A grid with one row per image: the masked input (unknown = -1), the original, then its samples."""
    n = len(x0)
    masked = x0 * mask + (1 - mask) * -1.0
    rows = np.concatenate([masked[:, None], x0[:, None], samples.reshape((n, -1) + x0.shape[1:])], axis=1)
    return save_grid(rows.reshape((-1,) + x0.shape[1:]), path, ncol=rows.shape[1])
