"""Which default for ``lower_order_final``: RMSE with it off over RMSE with it on, at NFE 5 and 10, on the six
exact-mixture problems of ``sampler_peers.py`` (same reference, same x_T), for the solvers where it matters.

    python benchmarks/lower_order_final.py > benchmarks/results/lower_order_final.md

A ratio below 1 means the rule (the last steps at most as many points as steps remain) hurts. Measured under
diffusers' threshold (the rule on grids of fewer than 15 steps), so that both columns show its effect; the
library applies it below 10 steps (``samplers.common.LOWER_ORDER_FINAL_BELOW``): it helps 3M / UniPC-3 on
the logSNR grid at 5 steps and hurts them at 10.
"""

from __future__ import annotations

import os
import sys

import jax

from jaxdiff.samplers import common

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sampler_peers as sp  # noqa: E402
from stamp import stamp_line  # noqa: E402

NFES = (5, 10)
CASES = [("dpmpp_3m", "logsnr"), ("dpmpp_3m", "trailing"), ("unipc-2 bh2", "logsnr"), ("unipc-3 bh2", "logsnr"),
         ("unipc-3 bh2", "trailing"), ("ipndm-4", "trailing"), ("ipndm-4", "logsnr"), ("deis-3", "trailing"),
         ("lms-4", "trailing")]


def main():
    print(stamp_line("python benchmarks/lower_order_final.py > benchmarks/results/lower_order_final.md") + "\n")
    jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
    sp.NFES = NFES
    common.LOWER_ORDER_FINAL_BELOW = 15  # diffusers' rule, read when the samplers are traced
    print("RMSE with lower_order_final off / with it on, the rule below 15 steps (grids end with the step to "
          "t = 0)\n")
    print("| problem | solver | grid | NFE 5 on | NFE 5 off / on | NFE 10 on | NFE 10 off / on |")
    print("|---|---|---|---|---|---|---|")
    with jax.enable_x64(True):
        for spec in sp.PROBLEMS:
            p = sp.Problem(*spec)
            for label, grid in CASES:
                name, opts = sp.JAXDIFF[label]
                on = sp.jaxdiff_row(p, name, dict(opts, lower_order_final=True), grid)
                off = sp.jaxdiff_row(p, name, dict(opts, lower_order_final=False), grid)
                print(f"| {p.short} | {label} | {grid} | {on[0]:.3e} | {off[0] / on[0]:.2f} | {on[1]:.3e} | "
                      f"{off[1] / on[1]:.2f} |", flush=True)
            sp._runner.cache_clear()
            jax.clear_caches()


if __name__ == "__main__":
    main()
