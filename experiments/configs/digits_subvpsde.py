"""Score-based model with the sub-VP SDE (Song et al. 2021b eq. 11) on the 8x8 digits; as digits_vpsde.

    python -m experiments.train --config experiments/configs/digits_subvpsde.py --workdir runs/digits_subvpsde
"""

from experiments.configs.digits_vpsde import score_sde_config


def get_config(variant: str = ""):
    return score_sde_config("subvp", variant, beta_min=0.1, beta_max=20.0)
