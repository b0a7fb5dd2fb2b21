"""Conditional inpainting of the 8x8 digits (CSDI-style): the main job's network and recipe, but the U-Net
sees the observed pixels and the mask (3 input channels) and trains on random masks: 70% one rectangle of
random size and place (up to the whole image: halves, centres and corners are special cases), 30% random
pixels at a ratio ~ U(0, 1); the loss is on the missing pixels only.

    python -m experiments.train --config experiments/configs/digits_csdi.py --workdir runs/digits_csdi
    python -m experiments.sample --workdir runs/digits_csdi --inpaint right --sampler dpmpp_2m --num_steps 20
"""

from experiments.configs import digits_ddpm


def get_config(variant: str = ""):
    c = digits_ddpm.get_config(variant)
    c.task = "imputation"
    c.imputation.mask_probs = (0.3, 0.7, 0.0)  # random pixels, rectangles, forecast-shaped (bottom rows)
    c.imputation.max_block = 1.0
    return c
