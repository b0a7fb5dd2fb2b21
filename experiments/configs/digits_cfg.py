"""Class-conditional DDPM on the 8x8 digits with condition dropout (p_uncond = 0.1), sampled with
classifier-free guidance (Ho & Salimans 2022).

    python -m experiments.train --config experiments/configs/digits_cfg.py --workdir runs/digits_cfg
    python -m experiments.sample --workdir runs/digits_cfg --label -1 --guidance_scale 2.0
"""

from experiments.configs import digits_ddpm


def get_config(variant: str = ""):
    c = digits_ddpm.get_config(variant)
    c.data.use_labels = True
    c.model.num_classes = 10  # label 10 is the null class
    c.diffusion.p_uncond = 0.1
    c.sample.guidance_scale = 2.0
    return c
