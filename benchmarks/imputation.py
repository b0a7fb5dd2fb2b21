"""Bias of imputation (replacement and RePaint) against the exact conditional of a Gaussian: an AR(1)-like
series of 8 values (cov 0.25 * 0.9^|i-j|), the first 5 known, the last 3 sampled with the exact eps model
(linear schedule, T = 1000). Prints the largest error of the imputed mean and covariance entries by
resampling passes r (jump length 10) and sampler; 4000 samples (mean standard error ~0.005).

    python benchmarks/imputation.py
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import schedules as S
from jaxdiff.imputation import impute
from jaxdiff.testing import Gaussian

jax.config.update("jax_enable_x64", True)


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamp import stamp_line  # noqa: E402


def main(n=4000):
    print(stamp_line("python benchmarks/imputation.py > benchmarks/results/imputation.md") + "\n")
    d = 8
    idx = np.arange(d)
    g = Gaussian(jnp.full((d,), 0.1), jnp.asarray(0.25 * 0.9 ** np.abs(idx[:, None] - idx[None])))
    known = idx < 5
    xk = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0, 0, 0])
    m_true, c_true = g.conditional(known, xk)
    sched = S.get_schedule("linear")
    xs = jnp.broadcast_to(jnp.asarray(xk), (n, d))
    mask = jnp.asarray(known, jnp.float64)
    rs = (1, 2, 5, 10, 20)
    std = np.sqrt(np.diag(c_true))
    print(f"exact conditional mean {np.round(m_true, 3).tolist()}, std {np.round(std, 3).tolist()}")
    print("| sampler | steps | " + " | ".join(f"r={r} mean / cov err" for r in rs) + " |")
    print("|---|---|" + "---|" * len(rs))
    for sampler, steps in (("ddpm", 100), ("ddpm", 250), ("ddim", 100), ("dpmpp_2m", 20)):
        cells = []
        for r in rs:
            x = jax.jit(lambda k: impute(g.model_fn(sched), sched, xs, mask, k, sampler=sampler, num_steps=steps,
                                         resample=r, jump_length=10))(jax.random.key(0))
            xu = np.asarray(x)[:, ~known]
            cells.append(f"{np.abs(xu.mean(0) - m_true).max():.3f} / {np.abs(np.cov(xu.T) - c_true).max():.3f}")
        print(f"| {sampler} | {steps} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
