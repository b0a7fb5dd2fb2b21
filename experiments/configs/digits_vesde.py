"""Score-based model with the VE SDE (Song et al. 2021b eq. 9) on the 8x8 digits: sigma from 0.01 to 10 (the
largest distance between two digits is 9.6; Song & Ermon 2020, technique 1), NCSN++'s Fourier time
features and skip rescaling, the input scaled by 1/sqrt(1 + sigma^2) (EDM's c_in).

    python -m experiments.train --config experiments/configs/digits_vesde.py --workdir runs/digits_vesde
"""

from experiments.configs.digits_vpsde import score_sde_config


def get_config(variant: str = ""):
    c = score_sde_config("ve", variant, sigma_min=0.01, sigma_max=10.0)
    c.model.time_embedding = "fourier"
    c.diffusion.preconditioning = "input"
    return c
