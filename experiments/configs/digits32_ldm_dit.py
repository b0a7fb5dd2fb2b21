"""Latent DiT on the digits at 32x32: digits32_ldm.py's recipe (the f = 4 KL autoencoder's 8x8x2 latents,
scaled by its stored scale factor; samples decoded) with digits_dit.py's transformer (patch 2: 16 tokens).

    python -m experiments.train --config experiments/configs/digits32_autoencoder.py --workdir runs/digits32_ae
    python -m experiments.train --config experiments/configs/digits32_ldm_dit.py --workdir runs/digits32_ldm_dit

Variants as digits_dit.py (``bf16``, ``remat``, ``smoke``; comma-separated).
"""

from experiments.configs import digits32_ldm, digits_dit


def get_config(variant: str = ""):
    c = digits32_ldm.get_config("smoke" if "smoke" in variant.split(",") else "")
    d = digits_dit.get_config(variant)
    for k in ("backbone", "patch_size", "hidden_size", "depth", "num_heads", "mlp_ratio", "remat", "dtype",
              "param_dtype"):
        c.model[k] = d.model[k]
    c.optim.learning_rate = d.optim.learning_rate
    return c
