"""Score-based model with the VP SDE (Song et al. 2021b; beta from 0.1 to 20) on the 8x8 digits: the main
job's network, continuous-time denoising score matching with t ~ U(1e-5, 1) and the sigma^2 weighting
(eps-MSE), trained on uniformly dequantized digits so the probability-flow ODE gives a bits/dim.

    python -m experiments.train --config experiments/configs/digits_vpsde.py --workdir runs/digits_vpsde
    python -m experiments.evaluate --workdir runs/digits_vpsde        # FD (ODE sampler) + ODE bits/dim

Variant ``:likelihood`` trains with the likelihood weighting g(t)^2 and importance-sampled t (Song et al.
2021a, "Maximum likelihood training of score-based diffusion models"); ``:smoke`` is seconds long.
"""

from experiments.configs import digits_ddpm


def score_sde_config(schedule: str, variant: str = "", **schedule_kwargs):
    """The digits main-job config turned into a continuous-time score model of ``schedule``."""
    variants = [v for v in variant.split(",") if v]
    for v in variants:
        if v not in ("smoke", "likelihood"):
            raise ValueError(f"unknown config variant {v!r}; allowed: 'smoke', 'likelihood' (comma-separated)")
    c = digits_ddpm.get_config("smoke" if "smoke" in variants else "")
    c.data.dequantize = True
    c.model.skip_rescale = True  # DDPM++ / NCSN++: residual and skip sums scaled by 1/sqrt(2)
    d = c.diffusion
    d.schedule = schedule
    d.schedule_kwargs = dict(schedule_kwargs)
    d.t_min = 1e-5  # training t ~ U(t_min, 1) (score_sde's eps)
    d.weighting = "simple"  # lambda(t) = sigma^2 on the score error = eps-MSE
    d.t_sampling = "uniform"
    d.preconditioning = "none"
    if "likelihood" in variants:
        d.weighting = "likelihood"  # lambda(t) = g(t)^2
        d.t_sampling = "importance"
    c.sample.sampler = "ode"  # adaptive probability-flow ODE (diffrax Tsit5, rtol = atol = 1e-5)
    c.sample.options = {"rtol": 1e-5, "atol": 1e-5}
    c.sample.clip_x0 = 0.0  # sample the model's own ODE (clipping changes the flow)
    c.eval.ode_bpd_examples = 300 if "smoke" not in variants else 8
    return c


def get_config(variant: str = ""):
    return score_sde_config("vp", variant, beta_min=0.1, beta_max=20.0)
