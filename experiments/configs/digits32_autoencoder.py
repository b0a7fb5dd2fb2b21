"""The LDM KL autoencoder (f = 4) on the digits at 32x32: 32x32x1 images <-> 8x8x2 latents, trained with L1
reconstruction + KL (weight 1e-6, LDM's) through the usual loop (EMA, Orbax checkpoints, exact resume).
The final checkpoint stores the latent scale factor (1 / std of the training latents). An optional
patch discriminator (``--config.loss.discriminator=True``) adds LDM's hinge-loss GAN term after
``loss.disc_start`` steps.

    python -m experiments.train --config experiments/configs/digits32_autoencoder.py --workdir runs/digits32_ae
    python -m experiments.evaluate --workdir runs/digits32_ae          # test PSNR / SSIM

Then latent diffusion on it: experiments/configs/digits32_ldm.py.
"""

import ml_collections

from experiments.configs import default


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = default.get_config()
    c.task = "autoencoder"
    c.seed = 0

    c.data.name = "digits"
    c.data.config = "32"
    c.data.data_dir = ""
    c.data.num_levels = 17
    c.data.random_flip = False
    c.data.use_labels = False

    c.model.image_size = 32
    c.model.in_channels = 1
    c.model.out_channels = 1
    c.model.block_out_channels = (32, 64, 64)  # f = 2^(3 - 1) = 4
    c.model.layers_per_block = 1
    c.model.latent_channels = 2
    c.model.norm_num_groups = 8
    c.model.mid_block_add_attention = True

    c.loss.kl_weight = 1e-6
    # Optional patch discriminator (hinge loss), switched on at step disc_start (LDM: 50k of its runs).
    c.loss.discriminator = False
    c.loss.disc_weight = 0.1
    c.loss.disc_start = 1000
    c.loss.disc_channels = 32
    c.loss.disc_layers = 2
    c.loss.disc_groups = 8

    c.optim.batch_size = 32
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 100
    c.optim.decay_steps = 2000
    c.optim.grad_clip = 1.0
    c.optim.weight_decay = 0.0
    c.optim.ema_decay = 0.999

    c.train.num_steps = 2000
    c.train.steps_per_jit = 1
    c.train.log_every = 100
    c.train.sample_every = 500
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 2
    c.train.num_grid_samples = 16

    if variant == "smoke":
        c.model.block_out_channels = (8, 16, 16)
        c.model.norm_num_groups = 4
        c.optim.batch_size = 8
        c.optim.warmup_steps = 2
        c.optim.decay_steps = 0
        c.train.num_steps = 4
        c.train.log_every = 2
        c.train.sample_every = 4
        c.train.checkpoint_every = 2
        c.train.num_grid_samples = 4
        c.parallel.mode = "jit"  # one device: smoke runs test the code path, pmap / mesh have their own tests
    elif variant:
        raise ValueError(f"unknown config variant {variant!r}; allowed: '', 'smoke'")
    return c
