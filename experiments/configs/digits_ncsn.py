"""NCSN (Song & Ermon 2019) on the 8x8 digits: a noise-conditional score network over L = 10 geometric
noise levels sigma_i = 0.01 (10 / 0.01)^(i/L), i = 1..L, trained with the sigma^2-weighted denoising score
matching loss at those levels only, sampled by annealed Langevin dynamics (their Algorithm 1).

    python -m experiments.train --config experiments/configs/digits_ncsn.py --workdir runs/digits_ncsn
    python -m experiments.sample --workdir runs/digits_ncsn      # annealed Langevin, 10 levels x 30 steps
"""

from experiments.configs.digits_vpsde import score_sde_config


def get_config(variant: str = ""):
    c = score_sde_config("ve", variant, sigma_min=0.01, sigma_max=10.0)
    c.model.time_embedding = "fourier"
    c.diffusion.preconditioning = "input"
    c.diffusion.noise_levels = 10  # L: training t in {1/L, ..., 1}
    c.data.dequantize = False  # NCSN has no likelihood; it models the digits themselves
    c.sample.sampler = "annealed_langevin"
    c.sample.num_steps = 10  # = L: the annealed levels are exactly the training levels
    c.sample.options = {"n_steps_each": 30, "step_lr": 2e-5, "t_min": 0.0}
    if "smoke" in variant:
        c.sample.num_steps = c.diffusion.noise_levels = 3
        c.sample.options = {"n_steps_each": 2, "step_lr": 2e-5, "t_min": 0.0}
    return c
