"""Write the committed fixture of the AutoencoderKL weight-import test: a randomly initialised diffusers
``AutoencoderKL`` (tiny config), its state dict, inputs, and diffusers' encoder mean / log-variance and
decoder outputs. Needs the ``[interop]`` extra (torch, diffusers).

    pip install -e ".[interop]"
    python tests/fixture_makers/make_vae_fixture.py tests/fixtures/autoencoder_kl_tiny.npz
"""

import sys

import numpy as np

TINY = dict(in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1, latent_channels=4,
            norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2)


def diffusers_vae(seed: int = 0, **config):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**(config or TINY)).eval()
    with torch.no_grad():  # random (not the zero-init defaults) so every tensor matters
        for p in vae.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return vae


def run(vae, x: np.ndarray, z: np.ndarray):
    """diffusers' (mean, logvar, decoded) for NHWC inputs (converted to NCHW and back)."""
    import torch

    with torch.no_grad():
        post = vae.encode(torch.from_numpy(x.transpose(0, 3, 1, 2))).latent_dist
        dec = vae.decode(torch.from_numpy(z.transpose(0, 3, 1, 2))).sample
    t = lambda a: a.numpy().transpose(0, 2, 3, 1)
    return t(post.mean), t(post.logvar), t(dec)


def main(path: str):
    rng = np.random.default_rng(0)
    vae = diffusers_vae()
    x = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    z = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
    mean, logvar, dec = run(vae, x, z)
    sd = {f"sd/{k}": v.numpy() for k, v in vae.state_dict().items()}
    np.savez_compressed(path, x=x, z=z, mean=mean, logvar=logvar, decoded=dec, **sd)
    print(f"wrote {path}: {len(sd)} tensors")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/autoencoder_kl_tiny.npz")
