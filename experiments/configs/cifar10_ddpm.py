"""DDPM on CIFAR-10 as in Ho et al. 2020: T = 1000 linear betas, the 35.7M U-Net, lr 2e-4 with 5000
warm-up steps, batch 128, dropout 0.1, EMA 0.9999, random horizontal flip, 800k steps.

    python -m experiments.train --config experiments/configs/cifar10_ddpm.py --workdir runs/cifar10
    python -m experiments.sample --workdir runs/cifar10 --sampler ddpm --num_steps 1000

Needs the TFDS ``cifar10`` files (downloaded by TFDS on first use on a machine with network).
"""

from experiments.configs import digits_ddpm


def get_config(variant: str = ""):
    c = digits_ddpm.get_config()
    c.data.name = "cifar10"
    c.data.config = None
    c.data.num_levels = 256
    c.data.random_flip = True

    c.model.image_size = 32
    c.model.in_channels = 3
    c.model.base_channels = 128
    c.model.channel_mult = (1, 2, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (16,)
    c.model.num_heads = 1
    c.model.dropout = 0.1
    c.model.scale_shift = False
    c.model.num_groups = 32

    c.diffusion.schedule = "linear"
    c.diffusion.num_steps = 1000

    c.optim.batch_size = 128
    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 5000
    c.optim.decay_steps = 0
    c.optim.ema_decay = 0.9999

    c.train.num_steps = 800_000
    c.train.log_every = 1000
    c.train.sample_every = 20_000
    c.train.checkpoint_every = 10_000

    c.sample.sampler = "ddpm"
    c.sample.num_steps = 1000
    c.sample.num_samples = 50_000
    c.sample.batch_size = 1000
    if variant == "smoke":  # the same code path in seconds (tests/test_cifar10.py on tfds.testing.mock_data)
        c.model.base_channels = 16
        c.model.channel_mult = (1, 2)  # 32 and 16 (attention at 16 stays)
        c.model.num_res_blocks = 1
        c.model.num_groups = 8
        c.diffusion.num_steps = 50
        c.optim.batch_size = 8
        c.optim.warmup_steps = 2
        c.train.num_steps = 4
        c.train.checkpoint_every = 4  # one save: the resume path has its own tests
        c.train.sample_every = 4
        c.sample.num_steps = 4
        c.sample.num_samples = c.sample.batch_size = c.eval.num_samples = c.train.num_grid_samples = 16
        c.eval.vlb_examples = 8
        c.eval.bootstrap = 20
        c.parallel.mode = "jit"
    elif variant:
        raise ValueError(f"unknown config variant {variant!r}; allowed: '', 'smoke'")
    return c
