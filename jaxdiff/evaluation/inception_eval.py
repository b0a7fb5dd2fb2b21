"""The literature's FID protocol on any image workdir: N samples (50,000 by convention), 2048-d FID Inception
features, FID against reference statistics (a published ``.npz`` of mu / sigma, or the workdir's training
images), KID and precision / recall where reference features exist.

Generation is sample-indexed: sample i draws its prior noise and its sampler key from
``fold_in(run_key(seed, SAMPLE), i)`` (one sampler run per index under ``vmap``), so its value does not depend on
the chunk size, the device count or the host count. Indices are written in chunks
``<out>/chunk_<start>.npz`` (samples as uint8 and their features), each by one process (chunk c by process
c mod process_count), the batch sharded over that process's devices, and each file written atomically (a
temporary file renamed when complete): a run killed at any point resumes with the chunks it finished, and
every index is generated exactly once.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.evaluation.inception import FIDInceptionV3, to_inception_input
from jaxdiff.rng import Stream, run_key


def index_keys(seed: int, start: int, stop: int):
    """The per-sample keys of indices ``start..stop-1``."""
    base = run_key(seed, Stream.SAMPLE)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(start, stop))


def features_fn(inception_params, batch_size: int = 50):
    """``fn(images) -> [N, 2048]`` FID features of images (uint8 levels or floats in [-1, 1]), in batches."""
    net = FIDInceptionV3()
    apply = jax.jit(lambda p, x: net.apply({"params": p}, x))

    def fn(images, num_levels: int = 256):
        x = to_inception_input(images, num_levels)
        out = []
        for i in range(0, len(x), batch_size):
            b = x[i:i + batch_size]
            pad = batch_size - len(b)  # one compiled shape: the last batch is padded
            f = apply(inception_params, jnp.asarray(np.concatenate([b, np.repeat(b[-1:], pad, 0)]) if pad else b))
            out.append(np.asarray(f)[:len(b)])
        return np.concatenate(out)

    return fn


def _write_atomic(path: str, **arrays):
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # a file under the final name is always complete


def chunk_path(out_dir: str, start: int) -> str:
    return os.path.join(out_dir, f"chunk_{start:08d}.npz")


def generate_chunks(sample_fn, params, out_dir: str, *, num_samples: int, chunk_size: int, seed: int,
                    num_levels: int = 256, feature_fn=None, log=print) -> list[str]:
    """Write samples 0..num_samples-1 in chunks (see the module docstring); existing chunks are kept. Returns
    this process's chunk paths. ``feature_fn`` (if given) adds each chunk's features."""
    n_dev = jax.local_device_count()
    if chunk_size < 1 or chunk_size % n_dev:
        raise ValueError(f"chunk_size={chunk_size} must be a positive multiple of the {n_dev} local devices")
    os.makedirs(out_dir, exist_ok=True)
    manifest = os.path.join(out_dir, "manifest.json")
    want = {"num_samples": num_samples, "chunk_size": chunk_size, "seed": seed}
    if os.path.exists(manifest):
        have = json.load(open(manifest))
        if have != want:
            raise ValueError(f"{out_dir} holds chunks of another generation ({have}, asked {want}); use another "
                             "output directory: chunks are never overwritten")
    elif jax.process_index() == 0:
        json.dump(want, open(manifest, "w"))
    mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("d",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    paths = []
    for c, start in enumerate(range(0, num_samples, chunk_size)):
        if c % jax.process_count() != jax.process_index():
            continue
        path = chunk_path(out_dir, start)
        paths.append(path)
        if os.path.exists(path):
            continue
        stop = min(start + chunk_size, num_samples)
        keys = index_keys(seed, start, start + chunk_size)  # a full chunk (one compiled shape); cut below
        x = np.asarray(sample_fn(params, jax.device_put(keys, sharding)))[:stop - start]
        levels = np.clip(np.round((x + 1) / 2 * (num_levels - 1)), 0, num_levels - 1).astype(np.uint8)
        arrays = {"samples": levels, "indices": np.arange(start, stop)}
        if feature_fn is not None:
            arrays["features"] = feature_fn(levels, num_levels).astype(np.float32)
        _write_atomic(path, **arrays)
        log(f"wrote {path} (indices {start}..{stop - 1})")
    return paths


def read_chunks(out_dir: str, num_samples: int, chunk_size: int, key: str = "features") -> np.ndarray:
    """``key`` of all chunks in index order; an error naming the missing chunks."""
    paths = [chunk_path(out_dir, s) for s in range(0, num_samples, chunk_size)]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} chunks missing in {out_dir} (e.g. {missing[0]}): run the generation "
                                "again to finish them")
    parts = []
    for p in paths:
        with np.load(p) as f:
            parts.append(f[key])
    return np.concatenate(parts)
