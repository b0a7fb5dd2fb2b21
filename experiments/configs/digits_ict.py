"""Consistency training from scratch with iCT's recipe (Song & Dhariwal 2023) on the 8x8 digits, at the main
job's network and budget: the EDM schedule (sigma in [0.002, 80]), the consistency parameterization around the
U-Net (``diffusion.preconditioning = "consistency"``: f(x, sigma_min) = x exactly), the pseudo-Huber distance,
weight 1 / (sigma_{i+1} - sigma_i), log-normal index sampling and the 10 -> 1280 doubling curriculum; sampled in
one step (``sampler = "consistency"``; ``--num_steps 2`` re-noises once).

    python -m experiments.train --config experiments/configs/digits_ict.py --workdir runs/digits_ict
"""

from experiments.configs import digits_edm


def get_config(variant: str = ""):
    c = digits_edm.get_config("smoke" if "smoke" in variant.split(",") else "")
    d = c.diffusion
    d.preconditioning = "consistency"
    d.weighting = "uniform"  # unused: the consistency loss has its own weighting
    c.task = "consistency_training"
    c.optim.posthoc_ema = ()
    c.train.snapshot_every = 0
    c.optim.learning_rate = 5e-4
    c.sample.sampler, c.sample.num_steps = "consistency", 1
    c.sample.options = {}
    if "smoke" in variant.split(","):
        c.consistency.s0, c.consistency.s1 = 2, 8
    return c
