"""DiT presets at 256x256 (32x32x4 latents, 1000 classes plus the null class, learned sigma): jaxdiff's
parameter count against facebookresearch/DiT's ``models.py`` (layer by layer; its fixed position embedding is a
frozen ``nn.Parameter`` that ``parameters()`` counts, jaxdiff's is a constant) and the forward pass's FLOPs (XLA's
count on the lowered HLO, a multiply-add = 2) against the paper's Gflops (Peebles & Xie 2023, Table 4; a
multiply-add = 1) where the paper states them. Writes ``benchmarks/results/dit_presets.md``.

    python benchmarks/dit_presets.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The paper's Table 1 (I = 32, p = 4: S 1.4, B 5.6, L 19.7, XL 29.1 Gflops) and its DiT-XL/2's 118.6 Gflops.
PAPER_GFLOPS = {"S/4": 1.4, "B/4": 5.6, "L/4": 19.7, "XL/4": 29.1, "XL/2": 118.6}
PRESETS = [f"{s}/{p}" for s in ("S", "B", "L", "XL") for p in (2, 4, 8)]


def main():
    import jax
    import jax.numpy as jnp
    from stamp import stamp_line, write_markdown

    from jaxdiff.models.dit import DiT, dit_config, flops_per_forward, reference_param_count
    from jaxdiff.models.unet import count_params

    lines = ["# DiT presets against the reference", "", stamp_line("python benchmarks/dit_presets.py"), "",
             "| preset | jaxdiff params | reference params (with its 2-D sin-cos pos_embed) | pos_embed entries "
             "| forward GFLOPs (XLA, x2) | paper Gflops | ratio / 2 |", "|---|---|---|---|---|---|---|"]
    for name in PRESETS:
        paper = PAPER_GFLOPS.get(name)
        cfg = dit_config(name, image_size=32, in_channels=4, num_classes=1000, learned_variance=True)
        shapes = jax.eval_shape(lambda cfg=cfg: DiT(cfg).init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)),
                                                              jnp.zeros(1)))["params"]
        n, ref = count_params(shapes), reference_param_count(cfg)
        assert n == reference_param_count(cfg, count_pos_embed=False), name
        g = flops_per_forward(cfg) / 1e9
        cmp = f"{paper} | {g / 2 / paper:.4f}" if paper else "- | -"
        lines.append(f"| DiT-{name} | {n} | {ref} | {cfg.num_patches * cfg.hidden_size} | {g:.2f} | {cmp} |")
    write_markdown(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "dit_presets.md"), lines)


if __name__ == "__main__":
    main()
