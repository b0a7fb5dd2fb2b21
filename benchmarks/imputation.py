"""Bias of imputation against the exact conditional of a Gaussian: an AR(1)-like series of 8 values (cov
0.25 * 0.9^|i-j|), the first 5 known, the last 3 sampled (linear schedule, T = 1000; 4000 samples, mean
standard error ~0.005). Prints the largest error of the imputed mean and covariance entries:

1. replacement / RePaint with the exact unconditional eps model, by resampling passes r (jump length 10) and
   sampler;
2. conditional imputation (CSDI), one pass of the sampler with the observed values as the network's input:
   the exact conditional model (what perfect training reaches) and an MLP trained on the series with
   forecast-shaped masks (``jaxdiff.testing.train_mlp_imputer``, 3000 Adam steps of 256), at the same NFE
   as r = 1.

    python benchmarks/imputation.py > benchmarks/results/imputation.md
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import schedules as S
from jaxdiff.imputation import conditional_impute, impute
from jaxdiff.testing import ar1_problem, exact_conditional_model_fn, train_mlp_imputer

jax.config.update("jax_enable_x64", True)


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamp import stamp_line  # noqa: E402

SETTINGS = (("ddpm", 100), ("ddpm", 250), ("ddim", 100), ("dpmpp_2m", 20))


def main(n=4000, mlp_steps=3000):
    print(stamp_line("python benchmarks/imputation.py > benchmarks/results/imputation.md") + "\n")
    g, known, xk = ar1_problem()
    m_true, c_true = g.conditional(known, xk)
    sched = S.get_schedule("linear")
    xs = jnp.broadcast_to(jnp.asarray(xk), (n, 8))
    mask = jnp.asarray(known, jnp.float64)

    def errors(x):
        xu = np.asarray(x).reshape(n, -1)[:, ~known]
        return f"{np.abs(xu.mean(0) - m_true).max():.3f} / {np.abs(np.cov(xu.T) - c_true).max():.3f}"

    rs = (1, 2, 5, 10, 20)
    std = np.sqrt(np.diag(c_true))
    print(f"exact conditional mean {np.round(m_true, 3).tolist()}, std {np.round(std, 3).tolist()}\n")
    print("Replacement (r = 1) and RePaint, exact unconditional eps model: largest mean / cov error")
    print("| sampler | steps | " + " | ".join(f"r={r} mean / cov err" for r in rs) + " |")
    print("|---|---|" + "---|" * len(rs))
    for sampler, steps in SETTINGS:
        cells = []
        for r in rs:
            x = jax.jit(lambda k: impute(g.model_fn(sched), sched, xs, mask, k, sampler=sampler, num_steps=steps,
                                         resample=r, jump_length=10))(jax.random.key(0))
            cells.append(errors(x))
        print(f"| {sampler} | {steps} | " + " | ".join(cells) + " |")

    t0 = time.time()
    model, params = train_mlp_imputer(g, sched, horizon=int((~known).sum()), steps=mlp_steps)
    jax.block_until_ready(params)
    train_s = time.time() - t0
    exact = exact_conditional_model_fn(g, known, sched)
    mlp = lambda x, t, c: model.apply({"params": params}, x[..., None], t,
                                      {k: v[..., None] for k, v in c.items()})[..., 0]
    print(f"\nConditional imputation (CSDI), one pass (NFE as r = 1): largest mean / cov error; the MLP trained "
          f"{mlp_steps} steps in {train_s:.0f} s")
    print("| sampler | steps | exact conditional model | trained MLP conditional model |")
    print("|---|---|---|---|")
    for sampler, steps in SETTINGS:
        cells = [errors(jax.jit(lambda k: conditional_impute(fn, sched, xs, mask, k, sampler=sampler,
                                                             num_steps=steps))(jax.random.key(0)))
                 for fn in (exact, mlp)]
        print(f"| {sampler} | {steps} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
