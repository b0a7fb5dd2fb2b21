"""The variational bound against the true NLL: quantized Gaussian-mixture data (K = 17 levels, d = 2, 4000
points) and the exact eps model of the continuous mixture, logSNR-linear schedule with endpoints fixed at
[-9, 7]; the full VLB (all T terms, ``jaxdiff.likelihood.full_vlb_bpd``) in bits/dim by T, with its terms
and its gap to the quantized data's true NLL (the same problem as
``tests/test_losses.py::test_vlb_bounds_true_nll_and_gap_shrinks``).

    python benchmarks/vlb_gap.py > benchmarks/results/vlb_gap.md
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import schedules as S
from jaxdiff.likelihood import full_vlb_bpd
from jaxdiff.testing import random_mixture

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamp import stamp_line  # noqa: E402

jax.config.update("jax_enable_x64", True)


def main(K=17, n=4000):
    print(stamp_line("python benchmarks/vlb_gap.py > benchmarks/results/vlb_gap.md") + "\n")
    gmm = random_mixture(jax.random.key(11), 3, 2, mean_scale=0.4, std_range=(0.25, 0.35), dtype=jnp.float64)
    x = gmm.sample(jax.random.key(12), n)
    x = jnp.clip(jnp.round((x + 1) / 2 * (K - 1)), 0, K - 1) / (K - 1) * 2 - 1
    true_nll = float(-gmm.quantized_log_prob(x, K).mean()) / (2 * np.log(2))
    sched = S.LogSNRLinearSchedule(logsnr_max=7.0, logsnr_min=-9.0)
    model = gmm.model_fn(sched, "eps")
    print(f"true NLL of the quantized data: {true_nll:.3f} bits/dim")
    print("| T | VLB bpd | diffusion | decoder | prior | gap |")
    print("|---|---|---|---|---|---|")
    for T in (2, 8, 32, 128, 512):
        out = jax.jit(lambda x: full_vlb_bpd(model, sched, x, jax.random.key(T), num_steps=T, num_levels=K))(x)
        m = {k: float(np.mean(v)) for k, v in out.items()}
        print(f"| {T} | {m['total']:.2f} | {m['diffusion']:.2f} | {m['decoder']:.3f} | {m['prior']:.3f} | "
              f"{m['total'] - true_nll:.2f} |")


if __name__ == "__main__":
    main()
