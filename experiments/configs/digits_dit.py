"""A pixel-space DiT on the 8x8 digits: the main job's recipe (cosine T = 1000, eps-MSE, 4000 steps of batch 64,
DPM-Solver++(2M) at 20 steps) with the transformer backbone (``model.backbone = "dit"``): patch 2 (16 tokens),
width 128, 6 blocks, 4 heads, adaLN-Zero.

    python -m experiments.train --config experiments/configs/digits_dit.py --workdir runs/digits_dit

Variants: ``:bf16`` (bfloat16 parameters and compute, float32 master weights and EMA), ``:remat`` (each block
recomputed in the backward pass), ``:smoke``; combine them with commas.
"""

from experiments.configs import digits_ddpm


def get_config(variant: str = ""):
    c = digits_ddpm.get_config("smoke" if "smoke" in variant.split(",") else "")
    c.model.backbone = "dit"
    c.model.patch_size = 2
    c.model.hidden_size = 128
    c.model.depth = 6
    c.model.num_heads = 4
    c.model.mlp_ratio = 4.0
    c.optim.learning_rate = 1e-3
    c.optim.weight_decay = 0.0
    for v in [v for v in variant.split(",") if v]:
        if v == "bf16":
            c.model.dtype = c.model.param_dtype = "bfloat16"
        elif v == "remat":
            c.model.remat = True
        elif v == "smoke":
            c.model.hidden_size, c.model.depth, c.model.num_heads = 32, 2, 4
        else:
            raise ValueError(f"unknown config variant {v!r}; allowed: 'bf16', 'remat', 'smoke' (comma-separated)")
    return c
