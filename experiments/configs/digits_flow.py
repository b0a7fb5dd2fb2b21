"""Flow matching (rectified flow) on the 8x8 digits: the main job's network and budget, the linear path
x_t = (1 - t) x0 + t eps, velocity prediction trained by the velocity MSE with SD3's logit-normal t
(Lipman et al. 2023; Liu et al. 2023; Esser et al. 2024), trained on uniformly dequantized digits so the
probability-flow ODE gives a bits/dim. Every jaxdiff sampler runs on it from t = 1 (alpha = 0); ``ddim`` is
exactly Euler on the velocity, ``flow_sde`` the SDE with the same marginals.

    python -m experiments.train --config experiments/configs/digits_flow.py --workdir runs/digits_flow
    python -m experiments.sample --workdir runs/digits_flow --sampler ddim --num_steps 10

Variants: ``:gvp`` (SiT's GVP path cos / sin), ``:reflow`` (one reflow round: train on the parent's
(noise, x0) pairs from ``python -m experiments.reflow``, starting from the parent's weights; set
``data.pairs`` and ``train.init_from``), ``:smoke`` (seconds long); comma-separated.
"""

from experiments.configs import digits_ddpm


def get_config(variant: str = ""):
    variants = [v for v in variant.split(",") if v]
    for v in variants:
        if v not in ("smoke", "gvp", "reflow"):
            raise ValueError(f"unknown config variant {v!r}; allowed: 'smoke', 'gvp', 'reflow' (comma-separated)")
    c = digits_ddpm.get_config("smoke" if "smoke" in variants else "")
    c.data.dequantize = True
    d = c.diffusion
    d.schedule = "flow_gvp" if "gvp" in variants else "flow_linear"
    d.prediction = "velocity"
    d.weighting = "uniform"  # plain MSE of the velocity: the flow-matching loss
    d.t_sampling = "logit_normal"  # SD3: logit(t) ~ N(0, 1)
    d.logit_normal_loc = 0.0
    d.logit_normal_scale = 1.0
    d.t_min = 1e-5
    c.sample.sampler = "dpmpp_2m"  # from t = 1, first step uniform in t, then logSNR spacing
    c.eval.ode_bpd_examples = 300 if "smoke" not in variants else 8
    if "reflow" in variants:  # Liu et al. 2023: the pairs are continuous model samples, not dequantized data
        c.data.dequantize = False
        c.data.pairs = "runs/digits_flow/reflow/pairs_dpmpp_2m_20.npz"
        c.train.init_from = "runs/digits_flow"
        c.eval.ode_bpd_examples = 0  # the pairs' coupling is not the data's likelihood
    return c
