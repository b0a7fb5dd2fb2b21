"""Sampler benchmarks: accuracy per NFE against the exact probability-flow ODE, and loop overhead.

    python benchmarks/samplers.py            # both tables (a few minutes on 2 CPU cores)
    python benchmarks/samplers.py --only accuracy|overhead
    python benchmarks/samplers.py --only peers   # against diffusers and k-diffusion (sampler_peers.py)

Accuracy: RMSE of each deterministic sampler's endpoint to the exact PF-ODE solution (diffrax Dopri8,
rtol = atol = 1e-12, float64) from the same x_T, on Gaussian mixtures with the exact eps model (VP SDE,
t_min = 1e-3), at NFE 5, 10, 15, 20, 50. Overhead: wall time of a full jitted sampling run divided by
NFE x the time of one jitted model call, for a ~1M-parameter MLP at batch 256; and compile time at
1000 vs 10 steps.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import samplers
from jaxdiff import schedules as S
from jaxdiff.testing import random_mixture

NFES = (5, 10, 15, 20, 50)
# name -> (options, NFE per step)
SAMPLERS = {
    "ddim": ({}, 1), "euler": ({}, 1), "heun": ({}, 2), "dpm_solver-2": ({"order": 2}, 2),
    "dpm_solver-3": ({"order": 3}, 3), "dpmpp_2m": ({}, 1), "dpmpp_3m": ({}, 1),
    "unipc-2": ({"order": 2}, 1), "unipc-3": ({"order": 3}, 1), "dpmpp_2s": ({}, 2), "ipndm": ({}, 1),
    "deis": ({}, 1), "lms": ({}, 1),
}


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamp import stamp_line  # noqa: E402


def accuracy_table(dim: int, n: int = 256, t_min: float = 1e-3):
    with jax.enable_x64(True):
        gmm = random_mixture(jax.random.key(dim), 4, dim, mean_scale=1.0, dtype=jnp.float64)
        sched = S.get_schedule("vp")
        model = gmm.model_fn(sched)
        x_T = samplers.prior_sample(sched, jax.random.key(1), (n, dim), jnp.float64)
        ref = samplers.sample_ode(model, sched, x_T, None, rtol=1e-12, atol=1e-12, solver="dopri8",
                                  t_min=t_min, max_steps=200_000)
        rows = {}
        for label, (opts, per) in SAMPLERS.items():
            name = label.split("-")[0]
            errs = []
            for nfe in NFES:
                steps = nfe // per
                if steps < 1 or (per == 2 and nfe % 2):
                    errs.append(None)
                    continue
                x = samplers.sample(name, model, sched, x_T, None, num_steps=steps, t_min=t_min, **opts)
                errs.append(float(jnp.sqrt(jnp.mean((x - ref) ** 2))))
            rows[label] = errs
    return rows


def print_accuracy(dim, rows):
    print(f"\nRMSE to the exact PF-ODE endpoint, GMM d={dim}, VP SDE, float64")
    print("| sampler | " + " | ".join(f"NFE {k}" for k in NFES) + " |")
    print("|---|" + "---|" * len(NFES))
    for label, errs in rows.items():
        print(f"| {label} | " + " | ".join("-" if e is None else f"{e:.2e}" for e in errs) + " |")


def mlp_model(dim=64, hidden=512, depth=4, seed=0):
    """A ~1M-parameter MLP eps-model with a time input (random weights)."""
    key = jax.random.key(seed)
    sizes = [dim + 1] + [hidden] * depth + [dim]
    params = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        k = jax.random.fold_in(key, i)
        params.append((jax.random.normal(k, (a, b)) / np.sqrt(a), jnp.zeros(b)))

    def apply(params, x, t):
        h = jnp.concatenate([x, t[:, None]], -1)
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.silu(h)
        return h

    return params, apply


def _median_time(fn, *args, reps=7):
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def overhead_table(batch=256, dim=64, nfe=50):
    params, apply = mlp_model(dim)
    n_params = sum(w.size + b.size for w, b in params)
    sched = S.get_schedule("vp")
    x = jax.random.normal(jax.random.key(0), (batch, dim))
    t = jnp.full((batch,), 0.5)
    one = jax.jit(apply)
    t_call = _median_time(one, params, x, t)
    print(f"\nOverhead: MLP {n_params / 1e6:.2f}M params, batch {batch}, one jitted call "
          f"{t_call * 1e3:.3f} ms (median of 7)")
    print("| sampler | NFE | wall (ms) | wall / (NFE x call) |")
    print("|---|---|---|---|")
    for label, (opts, per) in SAMPLERS.items():
        name = label.split("-")[0]
        steps = nfe // per

        @jax.jit
        def run(params, x_T, key, steps=steps, name=name, opts=opts):
            mf = lambda x, t, c=None: apply(params, x, t)
            return samplers.sample(name, mf, sched, x_T, key, num_steps=steps, **opts)

        wall = _median_time(run, params, x, jax.random.key(1))
        n = steps * per
        print(f"| {label} | {n} | {wall * 1e3:.2f} | {wall / (n * t_call):.3f} |")
    print("\nCompile time (lowering + XLA) of a jitted DPM-Solver++(2M) run:")
    print("| num_steps | compile (s) |")
    print("|---|---|")
    for steps in (10, 1000):
        run = jax.jit(lambda params, x_T, steps=steps: samplers.sample_dpmpp_2m(
            lambda x, t, c=None: apply(params, x, t), sched, x_T, None, num_steps=steps))
        t0 = time.perf_counter()
        run.lower(params, x).compile()
        print(f"| {steps} | {time.perf_counter() - t0:.2f} |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--only", choices=["accuracy", "overhead", "peers"], default=None)
    a = p.parse_args()
    if a.only == "peers":  # needs the [bench] extra and k-diffusion (sampler_peers.py's docstring)
        import sampler_peers

        print(stamp_line("python benchmarks/samplers.py --only peers > benchmarks/results/samplers_peers.md"))
        with jax.enable_x64(True):
            sampler_peers.main()
        return
    print(stamp_line("python benchmarks/samplers.py > benchmarks/results/samplers.md") + "\n")
    if a.only in (None, "accuracy"):
        for dim in (2, 64):
            print_accuracy(dim, accuracy_table(dim))
    if a.only in (None, "overhead"):
        overhead_table()


if __name__ == "__main__":
    main()
