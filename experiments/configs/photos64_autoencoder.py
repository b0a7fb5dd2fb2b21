"""The LDM KL autoencoder (f = 4) on 64x64 crops of scikit-image's sample photographs (the ``photos``
builder; test = two held-out photographs): 64x64x3 <-> 16x16x3 latents, LDM's f = 4, c = 3 shape.

    python -m experiments.train --config experiments/configs/photos64_autoencoder.py --workdir runs/photos64_ae
    python -m experiments.evaluate --workdir runs/photos64_ae          # test PSNR / SSIM
"""

from experiments.configs import digits32_autoencoder


def get_config(variant: str = ""):
    c = digits32_autoencoder.get_config(variant)
    c.data.name = "photos"
    c.data.config = "64"
    c.data.num_levels = 256
    c.data.random_flip = True
    c.model.image_size = 64
    c.model.in_channels = 3
    c.model.out_channels = 3
    c.model.latent_channels = 3
    if not variant:
        c.model.block_out_channels = (32, 64, 128)
        c.model.layers_per_block = 2
        c.optim.batch_size = 16
        c.train.num_steps = 3000
        c.optim.decay_steps = 3000
        c.train.checkpoint_every = 500
    return c
