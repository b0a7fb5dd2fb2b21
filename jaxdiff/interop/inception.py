"""pytorch-fid's Inception weights -> :class:`jaxdiff.evaluation.inception.FIDInceptionV3` params.

pytorch-fid's file ``pt_inception-2015-12-05-6726825d.pth`` (https://github.com/mseitzer/pytorch-fid/releases/
download/fid_weights/pt_inception-2015-12-05-6726825d.pth; download it yourself: jaxdiff downloads nothing) is a
PyTorch state dict of torchvision's Inception3 with FID's blocks. :func:`convert_state_dict` maps it by name
(``Mixed_5b.branch1x1.conv.weight`` -> ``Mixed_5b/branch1x1/kernel``, OIHW -> HWIO; ``.bn.weight / bias /
running_mean / running_var`` -> ``bn_scale / bn_bias / bn_mean / bn_var``); a missing or mis-shaped tensor is
an error naming it, before anything is compiled. Reading a ``.pth`` needs torch (the ``[bench]`` extra); a
``.npz`` of the same state dict (``python -m jaxdiff.interop.inception --to_npz W.pth W.npz`` once, where
torch is installed) reads with numpy alone.

:func:`random_state_dict` makes the test fixture's weights from a seed, identically here and beside
pytorch-fid (``tests/fixture_makers/make_inception_fixture.py``), so that no 90 MB file is committed.
"""

from __future__ import annotations

import os
import zlib

import jax
import numpy as np

from jaxdiff.evaluation.inception import FIDInceptionV3

BN_NAMES = {"bn_scale": "bn.weight", "bn_bias": "bn.bias", "bn_mean": "bn.running_mean", "bn_var": "bn.running_var"}
IGNORED = ("fc.", "AuxLogits.")  # the classifier head: not part of the FID features


def param_shapes() -> dict:
    """The Flax params' shapes (nested dict of tuples), without computing anything."""
    import jax.numpy as jnp

    shapes = jax.eval_shape(lambda: FIDInceptionV3().init(jax.random.key(0), jnp.zeros((1, 299, 299, 3))))
    return jax.tree_util.tree_map(lambda s: tuple(s.shape), shapes["params"])


def torch_name(path: tuple) -> str:
    """The PyTorch state-dict key of a Flax param path (``('Mixed_5b', 'branch1x1', 'kernel')``)."""
    *mods, leaf = path
    return ".".join(mods) + "." + ("conv.weight" if leaf == "kernel" else BN_NAMES[leaf])


def torch_shape(leaf: str, shape: tuple) -> tuple:
    return (shape[3], shape[2], shape[0], shape[1]) if leaf == "kernel" else shape


def _paths(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def convert_state_dict(state_dict: dict) -> dict:
    """Flax params from pytorch-fid's state dict (arrays or tensors keyed by PyTorch names).

    ValueError naming the first missing tensor, or the first whose shape differs (with both shapes)."""
    sd = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")
          and not k.startswith(IGNORED)}
    params: dict = {}
    used = set()
    for path, shape in _paths(param_shapes()):
        name = torch_name(path)
        if name not in sd:
            raise ValueError(f"the Inception state dict has no tensor {name!r} (needed for {'/'.join(path)}); is it "
                             "pytorch-fid's pt_inception-2015-12-05 file?")
        v = np.asarray(sd[name].detach().cpu().numpy() if hasattr(sd[name], "detach") else sd[name], np.float32)
        want = torch_shape(path[-1], shape)
        if v.shape != want:
            raise ValueError(f"tensor {name!r} has shape {v.shape}, the FID Inception needs {want}")
        node = params
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v.transpose(2, 3, 1, 0) if path[-1] == "kernel" else v
        used.add(name)
    extra = sorted(set(sd) - used)
    if extra:
        raise ValueError(f"the Inception state dict has tensors the FID Inception does not use: {extra[:5]}"
                         f"{' ...' if len(extra) > 5 else ''}; is it pytorch-fid's pt_inception-2015-12-05 file?")
    return params


def read_state_dict(path: str) -> dict:
    """A state dict from pytorch-fid's ``.pth`` (needs torch) or from an ``.npz`` of it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no Inception weights at {path}: download pytorch-fid's "
                                "pt_inception-2015-12-05-6726825d.pth (see jaxdiff.interop.inception)")
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs torch (pip install -e '.[bench]'), or convert it once to .npz "
                          "with python -m jaxdiff.interop.inception --to_npz") from None
    return torch.load(path, map_location="cpu", weights_only=True)


def load_fid_inception(path: str) -> dict:
    """Flax params of the FID Inception from pytorch-fid's weight file (``.pth`` or ``.npz``)."""
    return convert_state_dict(read_state_dict(path))


def random_state_dict(seed: int, shapes: dict | None = None) -> dict:
    """A pytorch-fid-shaped state dict of random weights, each tensor drawn from its own numpy generator
    seeded by (seed, crc32(name)), so the PyTorch and the Flax side get the same values: He-normal convs and
    batch-norm statistics near the identity (activations stay O(1) through the 94 layers)."""
    if shapes is None:
        shapes = {torch_name(p): torch_shape(p[-1], s) for p, s in _paths(param_shapes())}
    out = {}
    for name, shape in sorted(shapes.items()):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if name.endswith("conv.weight"):
            fan_in = int(np.prod(shape[1:]))
            v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif name.endswith("bn.weight") or name.endswith("running_var"):
            v = rng.uniform(0.8, 1.2, shape)
        else:  # bn.bias, running_mean
            v = rng.normal(0.0, 0.1, shape)
        out[name] = v.astype(np.float32)
    return out


def _main():
    import argparse

    ap = argparse.ArgumentParser(description="Convert pytorch-fid's Inception .pth to .npz (needs torch).")
    ap.add_argument("--to_npz", nargs=2, metavar=("PTH", "NPZ"), required=True)
    a = ap.parse_args()
    sd = read_state_dict(a.to_npz[0])
    convert_state_dict(sd)  # checked before writing
    np.savez(a.to_npz[1], **{k: v.detach().cpu().numpy() if hasattr(v, "detach") else v for k, v in sd.items()})


if __name__ == "__main__":
    _main()
