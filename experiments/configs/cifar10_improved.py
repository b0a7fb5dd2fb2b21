"""Improved DDPM on CIFAR-10 (Nichol & Dhariwal 2021): cosine schedule (T = 4000), learned variance
(``learned_range``) trained by the hybrid loss L_simple + 0.001 L_vlb, 3 res blocks, 4-head attention at
16 and 8, scale-shift norm; sampled with 100 respaced DDPM steps.

    python -m experiments.train --config experiments/configs/cifar10_improved.py --workdir runs/cifar10_iddpm
    python -m experiments.sample --workdir runs/cifar10_iddpm --sampler ddpm --num_steps 100
"""

from experiments.configs import cifar10_ddpm


def get_config(variant: str = ""):
    c = cifar10_ddpm.get_config(variant)
    c.diffusion.schedule = "cosine"
    c.diffusion.num_steps = 4000
    c.diffusion.loss_type = "hybrid"
    c.diffusion.variance = "learned_range"
    c.model.num_res_blocks = 3
    c.model.attention_resolutions = (16, 8)
    c.model.num_heads = 4
    c.model.scale_shift = True
    c.model.dropout = 0.3
    c.optim.learning_rate = 1e-4
    c.optim.ema_decay = 0.9999
    c.optim.batch_size = 128 if not variant else c.optim.batch_size
    c.train.num_steps = 500_000 if not variant else c.train.num_steps
    c.sample.sampler = "ddpm"
    c.sample.num_steps = 100
    return c
