"""Latent diffusion on 64x64 photo crops: a U-Net on the 16x16x3 latents of photos64_autoencoder.py
(train that first), conditioned on nothing; samples are decoded to 64x64 RGB.

    python -m experiments.train --config experiments/configs/photos64_autoencoder.py --workdir runs/photos64_ae
    python -m experiments.train --config experiments/configs/photos64_ldm.py --workdir runs/photos64_ldm
    python -m experiments.sample --workdir runs/photos64_ldm

The photos are few (15 training photographs), so report the autoencoder's PSNR / SSIM there and the
Fréchet distance only on the digits (digits32_ldm.py).
"""


from experiments.configs import digits_ddpm


def get_config(variant: str = ""):
    c = digits_ddpm.get_config(variant)
    c.data.name = "photos"
    c.data.config = "64"
    c.data.num_levels = 256
    c.data.random_flip = True
    c.latent.autoencoder = "runs/photos64_ae"
    c.model.image_size = 16  # 64 / f
    c.model.in_channels = 3
    c.model.base_channels = 64 if not variant else c.model.base_channels
    c.model.channel_mult = (1, 2, 2)
    c.model.attention_resolutions = (4,)
    c.sample.clip_x0 = 0.0  # latents are not bounded to [-1, 1]
    return c
