"""Pixel-space DDPM on the digits at 32x32: the baseline of the latent-diffusion comparison
(experiments/configs/digits32_ldm.py runs the same U-Net on the autoencoder's 8x8x2 latents).

    python -m experiments.train --config experiments/configs/digits32_ddpm.py --workdir runs/digits32
    python -m experiments.evaluate --workdir runs/digits32 --novlb
"""

from experiments.configs import digits_ddpm


def get_config(variant: str = ""):
    c = digits_ddpm.get_config(variant)
    c.data.config = "32"
    c.model.image_size = 32
    c.model.channel_mult = (1, 2, 2)
    c.model.attention_resolutions = (8,)  # the lowest resolution
    # batch 64, 4000 steps, lr 2e-3 with cosine decay: the main job's protocol (digits_ddpm.py)
    if variant == "smoke":
        c.model.channel_mult = (1, 2)
        c.model.attention_resolutions = (16,)
    return c
