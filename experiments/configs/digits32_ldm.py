"""Latent diffusion on the digits at 32x32: the U-Net of digits32_ddpm.py on the 8x8x2 latents of the
f = 4 KL autoencoder (experiments/configs/digits32_autoencoder.py, trained first), latents scaled by the
autoencoder's stored scale factor; samples are decoded (one jitted sampler -> decoder program), so
sample.py and evaluate.py see images.

    python -m experiments.train --config experiments/configs/digits32_autoencoder.py --workdir runs/digits32_ae
    python -m experiments.train --config experiments/configs/digits32_ldm.py --workdir runs/digits32_ldm
    python -m experiments.evaluate --workdir runs/digits32_ldm

``--config.latent.autoencoder=<workdir>`` points at another autoencoder; the encoded dataset is cached in
its ``latents/`` folder.
"""


from experiments.configs import digits32_ddpm


def get_config(variant: str = ""):
    c = digits32_ddpm.get_config(variant)
    c.latent.autoencoder = "runs/digits32_ae"
    c.model.image_size = 8  # 32 / f
    c.model.in_channels = 2  # the autoencoder's latent channels
    c.model.attention_resolutions = (2,) if not variant else (4,)  # the lowest resolution, as in the pixel model
    c.sample.clip_x0 = 0.0  # latents are not bounded to [-1, 1]
    return c
