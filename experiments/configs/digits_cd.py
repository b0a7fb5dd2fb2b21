"""Consistency distillation (Song et al. 2023) of the digits EDM model (``digits_edm.py``, trained first):
the student starts from the teacher's weights with the consistency parameterization, adjacent Karras levels
(N = 18) are linked by one Heun step of the teacher's PF-ODE, and the target network is the EMA (mu = 0.95, the
paper's; it is also the model sampled). One-step sampling by default.

    python -m experiments.train --config experiments/configs/digits_edm.py --workdir runs/digits_edm
    python -m experiments.train --config experiments/configs/digits_cd.py --workdir runs/digits_cd
"""

from experiments.configs import digits_edm


def get_config(variant: str = ""):
    c = digits_edm.get_config("smoke" if "smoke" in variant.split(",") else "")
    c.diffusion.preconditioning = "consistency"
    c.diffusion.weighting = "uniform"  # unused: the consistency loss has its own
    c.task = "consistency_distillation"
    c.consistency.teacher = "runs/digits_edm"
    c.consistency.teacher_solver = "heun"
    c.consistency.num_levels = 18
    c.consistency.distance = "l2"
    c.train.init_from = c.consistency.teacher  # the student starts as the teacher
    c.optim.ema_decay = 0.95  # the target network's mu
    c.optim.posthoc_ema = ()
    c.train.snapshot_every = 0
    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 0 if "smoke" in variant.split(",") else 100
    c.sample.sampler, c.sample.num_steps = "consistency", 1
    c.sample.options = {}
    return c
