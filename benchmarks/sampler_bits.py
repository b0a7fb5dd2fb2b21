"""Hashes of every sampler's output on the exact Gaussian-mixture model (float32): every sampler x the vp,
linear, edm and flow_linear schedules x 1, 3 and 7 steps (a refusal prints its error). Run it before and after a
refactor of the samplers and diff the two outputs: the refactor is bitwise neutral when they are equal.

    python benchmarks/sampler_bits.py > /tmp/before.txt   # then again after, and diff

Takes about 8 minutes on 2 CPU cores (one compile per row).
"""

import hashlib

import jax
import numpy as np

from jaxdiff import samplers
from jaxdiff import schedules as S
from jaxdiff.testing import random_mixture


def main():
    gmm = random_mixture(jax.random.key(0), 3, 4)
    for sn in ["vp", "linear", "edm", "flow_linear"]:
        sched = S.get_schedule(sn)
        x_T = samplers.prior_sample(sched, jax.random.key(1), (16, 4))
        for name in samplers.SAMPLERS:
            if name == "ode":  # adaptive: its step count is not a grid's
                continue
            opts = {"annealed_langevin": {"n_steps_each": 2}}.get(name, {})
            if name in ("euler", "heun", "dpm_solver") and sn == "flow_linear":
                opts = {"t_max": 0.99}  # they step in x / alpha, infinite at a flow's t = 1
            for n in (1, 3, 7):
                try:
                    x = samplers.sample(name, gmm.model_fn(sched), sched, x_T, jax.random.key(2), num_steps=n,
                                        **opts)
                    h = hashlib.sha256(np.asarray(x).tobytes()).hexdigest()[:12]
                except Exception as e:  # a refusal (too few steps for the order): its message is the record
                    h = "ERR " + type(e).__name__ + str(e)[:60]
                print(f"{sn} {name} {n} {h}", flush=True)


if __name__ == "__main__":
    main()
