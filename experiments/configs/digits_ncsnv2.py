"""NCSNv2 (Song & Ermon 2020, "Improved techniques for training score-based generative models") on the 8x8
digits, every choice from the training data by :func:`jaxdiff.ncsn.ncsnv2_settings` (checked against it in
tests/test_ncsn.py): sigma_1 = 9.63, the largest distance between two training digits (Technique 1);
gamma = 1.348 from the overlap rule in D = 64 dimensions, so L = 24 geometric levels down to sigma_L = 0.01
(Technique 2); an unconditional U-Net whose output is divided by sigma (Technique 3,
``diffusion.preconditioning = "sigma_scaled"``); T = 5 Langevin steps per level with eps = 2.37e-5, the
step size whose variance ratio after T steps is closest to 1 (Technique 4; jaxdiff's step_lr = 2 eps); the
EMA of the weights (Technique 5). ``digits_ncsn.py`` keeps NCSN for comparison.

    python -m experiments.train --config experiments/configs/digits_ncsnv2.py --workdir runs/digits_ncsnv2
    python -m experiments.sample --workdir runs/digits_ncsnv2          # annealed Langevin, 24 levels x 5 steps

Variants: ``:long`` (T = 20 steps per level, eps = 9.8e-6 by the same rule: 480 evaluations),
``:denoise`` (the final denoising step x + sigma_L^2 s(x), Jolicoeur-Martineau et al. 2021),
``:cas`` (their consistent annealed sampling: 120 geometric levels, one step each, then the denoising step),
``:smoke``; comma-separated.
"""

from experiments.configs.digits_vpsde import score_sde_config

SIGMA_1 = 9.629868898380705  # ncsnv2_settings(train digits in [-1, 1])["sigma_1"]
SIGMA_L = 0.01
LEVELS = 24
GAMMA = (SIGMA_1 / SIGMA_L) ** (1 / (LEVELS - 1))
STEPS_PER_LEVEL = 5
EPS = 2.3678886760179574e-05  # ncsnv2_settings(...)["eps"] for T = 5
LONG_STEPS = 20
LONG_EPS = 9.818747171351878e-06  # langevin_step_size(GAMMA, SIGMA_L, 20): "T as large as the budget allows"


def get_config(variant: str = ""):
    variants = [v for v in variant.split(",") if v]
    for v in variants:
        if v not in ("smoke", "denoise", "cas", "long"):
            raise ValueError(f"unknown config variant {v!r}; allowed: 'smoke', 'denoise', 'cas', 'long' "
                             "(comma-separated)")
    c = score_sde_config("ve", "smoke" if "smoke" in variants else "", sigma_min=SIGMA_L / GAMMA, sigma_max=SIGMA_1)
    d = c.diffusion
    d.prediction = "score"  # s(x, sigma) = F(x) / sigma
    d.preconditioning = "sigma_scaled"
    d.noise_levels = LEVELS  # training sigmas: sigma_L gamma^(i - 1), i = 1..L (t = i / L)
    c.data.dequantize = False
    c.sample.sampler = "annealed_langevin"
    c.sample.num_steps = LEVELS
    c.sample.options = {"n_steps_each": STEPS_PER_LEVEL, "step_lr": 2 * EPS, "t_min": 0.0,
                        "denoise_final": "denoise" in variants or "cas" in variants}
    if "long" in variants:
        c.sample.options.update(n_steps_each=LONG_STEPS, step_lr=2 * LONG_EPS)
    if "cas" in variants:  # the same 120 evaluations on a 5x finer geometric grid over sigma_1 .. sigma_L:
        n = LEVELS * STEPS_PER_LEVEL  # levels t = 1 - k (1 - t_min) / n, k < n, end at t = 1 / L
        c.sample.num_steps = n
        c.sample.options.update(n_steps_each=1, consistent=True, t_min=(n / LEVELS - 1) / (n - 1))
    if "smoke" in variants:
        c.sample.num_steps = c.diffusion.noise_levels = 3
        c.sample.options.update(n_steps_each=1 if "cas" in variants else 2)
    return c
