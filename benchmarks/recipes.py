"""Training recipes on the digits at one budget (the main job's network, 4000 steps, batch 64): FD / floor,
confident share and class balance at NFE 2, 5, 10 and 20, with Euler (``ddim``: Euler on the velocity for a
flow, Euler in x / alpha for the eps model) and with DPM-Solver++(2M) (on its logSNR grid and on the
uniform grid) and UniPC; writes
``benchmarks/results/recipes.md`` and ``.json`` (versions, device, date inside).

    python -m experiments.train --config experiments/configs/digits_flow.py --workdir runs/digits_flow
    python -m experiments.reflow --workdir runs/digits_flow --num_pairs 20000
    python -m experiments.train --config experiments/configs/digits_flow.py:reflow \
        --workdir runs/digits_flow_reflow
    python benchmarks/recipes.py --run "main job (eps, cosine)=runs/digits" \\
        --run "flow (linear path)=runs/digits_flow" --run "flow + reflow=runs/digits_flow_reflow"

Each FD carries its bootstrap 95% interval over the 1000 samples (one training seed per recipe; the interval
is about +-40% of one FD, so only non-overlapping intervals separate recipes). Every run is sampled with
clip_x0 = 1 (the data's range).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

SAMPLERS = (("euler", "ddim", {}), ("dpmpp_2m", "dpmpp_2m", {}), ("dpmpp_2m, uniform grid", "dpmpp_2m",
                                                                    {"spacing": "uniform"}),
            ("unipc", "unipc", {"order": 2}))
NFES = (2, 5, 10, 20)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="append", required=True, help="LABEL=WORKDIR (repeat)")
    ap.add_argument("--nfe", default=",".join(map(str, NFES)))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "recipes"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jax
    import numpy as np
    from stamp import floor_line, quality_cells, quality_fields, stamp, stamp_line, write_markdown

    from jaxdiff.evaluation.workdir import evaluate
    from jaxdiff.reflow import straightness
    from jaxdiff.rng import Stream, run_key
    from jaxdiff.schedules import alpha_vanishes
    from jaxdiff.training.build import example_input, model_fn_for
    from jaxdiff.training.tasks import restore_trained
    from jaxdiff.training.workdir import load_config

    runs = [r.split("=", 1) for r in args.run]
    for r in runs:
        if len(r) != 2 or not os.path.isdir(os.path.join(r[1], "checkpoints")):
            raise SystemExit(f"--run {'='.join(r)!r}: expected LABEL=WORKDIR of a trained run")
    nfes = [int(n) for n in args.nfe.split(",")]
    command = "python benchmarks/recipes.py " + " ".join(f'--run "{a}"' for a in args.run)
    out = {"command": command, **stamp(), "rows": [], "straightness": {}}
    for label, wd in runs:
        c = load_config(wd)
        recipe = (f"{c.diffusion.schedule}, {c.diffusion.prediction}, {c.diffusion.t_sampling} t, "
                  f"{c.train.num_steps} steps" + (", reflow" if c.data.pairs else ""))
        config, model, schedule, params, _ = restore_trained(wd)  # Liu et al.'s S on 256 noise draws
        if alpha_vanishes(schedule):  # a flow path (on a VP path x_1 is not the noise: S is not defined)
            z = jax.random.normal(run_key(0, Stream.REFLOW), (256,) + example_input(config).shape[1:])
            s_run = jax.jit(lambda p, z: straightness(model_fn_for(model, p), schedule, z, num_steps=50,
                                                      prediction=config.diffusion.prediction))(params, z)
            out["straightness"][label] = float(np.mean(s_run))
            print(label, "straightness", out["straightness"][label], flush=True)
        for name, sampler, options in SAMPLERS:
            for n in nfes:
                t0 = time.time()
                r = evaluate(wd, sampler=sampler, num_steps=n, vlb=False, ode=False, clip_x0=1.0, options=options)
                row = {"run": label, "workdir": wd, "recipe": recipe, "sampler": name, "nfe": n,
                       "seconds": time.time() - t0,
                       **quality_fields(r)}
                out["rows"].append(row)
                print(json.dumps(row), flush=True)
    with open(args.out + ".json", "w") as f:
        json.dump(out, f, indent=2)
    r0 = out["rows"][0]
    lines = ["# Recipes on the digits at one training budget", "", stamp_line(command), "",
             floor_line(r0), "",
             "Straightness (Liu et al. 2023's S per dimension, 256 noise draws, Euler at 50 steps; 0 = straight): "
             + "; ".join(f"{k}: {v:.4f}" for k, v in out["straightness"].items()), "",
             "| run | recipe | sampler | NFE | FD [95% interval] | FD / floor | confident (p >= 0.9) "
             "| class balance (chi^2 p) |", "|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        lines.append(f"| {r['run']} | {r['recipe']} | {r['sampler']} | {r['nfe']} | {quality_cells(r)} |")
    write_markdown(args.out + ".md", lines)


if __name__ == "__main__":
    main()
