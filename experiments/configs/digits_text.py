"""Text-conditioned DDPM on the 8x8 digits: a small byte-level Transformer encodes generated captions
("a handwritten seven", "the number 7", "digit 7", ...) into the U-Net's cross-attention; condition
dropout (empty caption) for classifier-free guidance.

    python -m experiments.train --config experiments/configs/digits_text.py --workdir runs/digits_text
    python -m experiments.sample --workdir runs/digits_text --prompt "a handwritten seven" --guidance_scale 2
"""


from experiments.configs import digits_ddpm


def get_config(variant: str = ""):
    c = digits_ddpm.get_config(variant)
    c.data.use_labels = True  # captions are generated from the labels
    c.model.context_dim = 64 if not variant else 16
    c.model.attention_resolutions = (4,)  # self- and cross-attention at 4x4
    if not variant:  # 3000 steps: ~10 min on 2 CPU cores
        c.train.num_steps = 3000
        c.optim.decay_steps = 3000
    c.text.enabled, c.text.layers, c.text.heads, c.text.max_len = True, 2, 4, 24
    c.diffusion.p_uncond = 0.1
    c.sample.guidance_scale = 2.0
    return c
