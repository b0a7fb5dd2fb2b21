"""EDM's training recipe (Karras et al. 2022) on the 8x8 digits, at the main job's network and budget: the
EDM schedule (alpha = 1, sigma in [0.002, 80]), the preconditioned denoiser D = c_skip x + c_out F(c_in x;
c_noise) of Table 1 (``diffusion.preconditioning = "edm"``, an x0-prediction), log-normal noise levels
ln sigma ~ N(P_mean = -1.2, P_std = 1.2) and EDM's weighting lambda = 1 / c_out^2; sampled by Heun's 2nd order
method on Karras' rho = 7 grid, 18 steps = 35 network evaluations (Algorithm 1). Two power-function EMAs
(sigma_rel 0.05 and 0.10, EDM2) are tracked and snapshotted every 250 steps for post-hoc EMA.

    python -m experiments.train --config experiments/configs/digits_edm.py --workdir runs/digits_edm
    python -m experiments.sample --workdir runs/digits_edm                   # heun, 18 steps (35 NFE)
    python -m experiments.posthoc_ema --workdir runs/digits_edm --sigma_rel 0.08

Variants: ``:churn`` (the stochastic sampler, Algorithm 2: S_churn = 10, S_noise = 1.003, churn in sigma
[0.05, 50]), ``:smoke`` (seconds long); comma-separated.
"""

from experiments.configs import digits_ddpm

DIGITS_STD = 0.75  # std of the digits scaled to [-1, 1] (EDM's sigma_data)


def get_config(variant: str = ""):
    variants = [v for v in variant.split(",") if v]
    for v in variants:
        if v not in ("smoke", "churn"):
            raise ValueError(f"unknown config variant {v!r}; allowed: 'smoke', 'churn' (comma-separated)")
    c = digits_ddpm.get_config("smoke" if "smoke" in variants else "")
    d = c.diffusion
    d.schedule = "edm"
    d.schedule_kwargs.sigma_min = 0.002
    d.schedule_kwargs.sigma_max = 80.0
    d.prediction = "x0"  # the preconditioned network is the denoiser D(x; sigma)
    d.preconditioning = "edm"
    d.sigma_data = DIGITS_STD
    d.weighting = "edm"  # lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 on the x0 error
    d.t_sampling = "edm_lognormal"
    d.p_mean = -1.2
    d.p_std = 1.2
    c.optim.posthoc_ema = (0.05, 0.10)
    c.train.snapshot_every = 250 if "smoke" not in variants else 2
    c.sample.sampler = "heun"  # Karras rho = 7 grid; 18 steps = 35 NFE (the last step is Euler to sigma = 0)
    c.sample.num_steps = 18 if "smoke" not in variants else 3
    c.sample.options.step_to_zero = True  # EDM's t_N = 0: the 18th step returns D(x; sigma_min)
    if "churn" in variants:  # EDM Table 5's stochastic settings scaled to the digits' 18 steps
        c.sample.options.S_churn = 10.0
        c.sample.options.S_min = 0.05
        c.sample.options.S_max = 50.0
        c.sample.options.S_noise = 1.003
    c.eval.vlb_examples = 0
    return c
