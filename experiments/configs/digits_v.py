"""The main job's recipe (cosine T = 1000, 4000 steps of batch 64, the same U-Net) with a v-prediction network
(Salimans & Ho 2022): the teacher of progressive distillation (an eps student cannot take large steps near
t = 1, where x0 = (x - sigma eps) / alpha amplifies its error).

    python -m experiments.train --config experiments/configs/digits_v.py --workdir runs/digits_v
    python -m experiments.distill --teacher runs/digits_v --workdir runs/digits_v_distill \
        --teacher_steps 256 --target_steps 1
"""

from experiments.configs import digits_ddpm


def get_config(variant: str = ""):
    c = digits_ddpm.get_config(variant)
    c.diffusion.prediction = "v"
    c.diffusion.weighting = "uniform"  # the plain v-MSE
    return c
