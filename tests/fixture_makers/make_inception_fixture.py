"""Write ``tests/fixtures/inception_fid_fixture.npz``: pytorch-fid's own features of a few images under random
Inception weights made from a seed (:func:`jaxdiff.interop.inception.random_state_dict`), so that the Flax
network is checked against pytorch-fid without committing its 90 MB weight file. Needs the ``[fid]`` extra
(pytorch-fid, torch 2.14.1, torchvision 0.29.1); run once:

    pip install -e ".[fid]" && python tests/fixture_makers/make_inception_fixture.py

The file holds the seed, two 32x32 images (uint8; a 333x310 one comes from :func:`large_image`: the resize to
299 is part of what is checked, up and down) and
pytorch-fid's 2048-d pool features and 768-d Mixed_6e features of them (float32), a few tens of KB.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from jaxdiff.interop.inception import random_state_dict

SEED = 20151205


def pytorch_fid_features(images_uint8: np.ndarray, seed: int = SEED) -> dict:
    """pytorch-fid's ``InceptionV3`` outputs (blocks 2 and 3) of NHWC uint8 images, with the random weights
    of ``seed`` in place of the downloaded ones."""
    import pytorch_fid.inception as pfi
    import torch

    template = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    for name, cls, arg in (("Mixed_5b", pfi.FIDInceptionA, (192, 32)), ("Mixed_5c", pfi.FIDInceptionA, (256, 64)),
                           ("Mixed_5d", pfi.FIDInceptionA, (288, 64)), ("Mixed_6b", pfi.FIDInceptionC, (768, 128)),
                           ("Mixed_6c", pfi.FIDInceptionC, (768, 160)), ("Mixed_6d", pfi.FIDInceptionC, (768, 160)),
                           ("Mixed_6e", pfi.FIDInceptionC, (768, 192)), ("Mixed_7b", pfi.FIDInceptionE_1, (1280,)),
                           ("Mixed_7c", pfi.FIDInceptionE_2, (2048,))):
        setattr(template, name, cls(*arg))  # the structure fid_inception_v3() builds, without its download
    shapes = {k: tuple(v.shape) for k, v in template.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd = {k: torch.from_numpy(v) for k, v in random_state_dict(seed, shapes).items()}
    sd.update({k: torch.zeros((), dtype=torch.long) for k in template.state_dict()
               if k.endswith("num_batches_tracked")})
    pfi.load_state_dict_from_url = lambda *a, **k: sd  # fid_inception_v3() "downloads" the random weights
    model = pfi.InceptionV3([2, 3]).eval()
    x = torch.from_numpy(images_uint8.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        mixed_6e, pool = model(x)
    return {"mixed_6e": mixed_6e.mean((2, 3)).numpy(), "pool": pool[:, :, 0, 0].numpy()}


def large_image() -> np.ndarray:
    """A [1, 333, 310, 3] uint8 image from a formula (larger than 299 and not square; not stored)."""
    i, j, c = np.meshgrid(np.arange(333), np.arange(310), np.arange(3), indexing="ij")
    return np.round(127.5 + 127.0 * np.sin(0.07 * i + 0.9 * c) * np.cos(0.11 * j - 0.4 * c))[None].astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures",
                                                  "inception_fid_fixture.npz"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 32)
    small = np.stack([np.clip(ramp[None, :, None] * np.ones((32, 32, 3)) * [1, 0.5, 0.2], 0, 255),
                      rng.integers(0, 256, (32, 32, 3))]).astype(np.uint8)  # a gradient and noise, 32x32
    large = large_image()
    import pytorch_fid
    import torch

    out = {"seed": np.int64(SEED), "images_32": small,
           "versions": np.array(f"pytorch-fid {pytorch_fid.__version__}, torch {torch.__version__}")}
    for key, imgs in (("32", small), ("333x310", large)):
        f = pytorch_fid_features(imgs)
        out[f"pool_{key}"], out[f"mixed_6e_{key}"] = f["pool"], f["mixed_6e"]
    np.savez_compressed(args.out, **out)
    print(f"wrote {os.path.abspath(args.out)}: {sorted(out)}")


if __name__ == "__main__":
    main()
