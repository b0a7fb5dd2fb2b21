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
# EDM's samplers on Karras' rho = 7 grid, the last step to sigma = 0 (Algorithm 1): Heun's N steps are 2N - 1
# evaluations, so an even NFE is run as the odd one below it (the row shows the NFE run).
EDM_SAMPLERS = (("heun (EDM)", "heun", {"step_to_zero": True}), ("euler (EDM)", "euler", {"step_to_zero": True}),
                ("dpmpp_2m", "dpmpp_2m", {}))
NFES = (2, 5, 10, 20)


def steps_for(sampler: str, nfe: int) -> tuple[int, int]:
    """``(num_steps, nfe run)`` of a sampler at a target NFE (Heun: 2N - 1 evaluations)."""
    if sampler == "heun":
        n = (nfe + 1) // 2
        return n, 2 * n - 1
    return nfe, nfe


def mean_over_seeds(rows: list[dict]) -> dict:
    """The mean of each protocol entry over seeds (intervals: the mean of the bounds); one seed as it is."""
    if len(rows) == 1:
        return dict(rows[0])
    out = {}
    for k, v in rows[0].items():
        vals = [r[k] for r in rows]
        out[k] = [sum(b[i] for b in vals) / len(vals) for i in range(len(v))] if isinstance(v, (list, tuple)) \
            else sum(vals) / len(vals)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="append", required=True, help="LABEL=WORKDIR (repeat)")
    ap.add_argument("--nfe", default=",".join(map(str, NFES)))
    ap.add_argument("--samplers", default="default", choices=("default", "edm"),
                    help="default: euler, dpmpp_2m (two grids), unipc; edm: heun and euler on EDM's grid, dpmpp_2m")
    ap.add_argument("--seeds", default="1", help="sampling seeds, comma-separated: each FD is their mean")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "recipes"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jax
    import numpy as np
    from stamp import floor_line, quality_cells, quality_fields, stamp, stamp_line, write_markdown

    from jaxdiff.apps.evaluate import evaluate
    from jaxdiff.models.model_fn import model_fn_for
    from jaxdiff.reflow import straightness
    from jaxdiff.rng import Stream, run_key
    from jaxdiff.schedules import alpha_vanishes
    from jaxdiff.training.build import example_input
    from jaxdiff.training.restore import restore_trained
    from jaxdiff.training.workdir import load_config

    runs = [r.split("=", 1) for r in args.run]
    for r in runs:
        if len(r) != 2 or not os.path.isdir(os.path.join(r[1], "checkpoints")):
            raise SystemExit(f"--run {'='.join(r)!r}: expected LABEL=WORKDIR of a trained run")
    nfes = [int(n) for n in args.nfe.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    extra = [f"--{k} {v}" for k, v, d in (("nfe", args.nfe, ",".join(map(str, NFES))),
                                          ("samplers", args.samplers, "default"), ("seeds", args.seeds, "1"))
             if v != d]
    if args.out != ap.get_default("out"):
        extra.append("--out " + os.path.relpath(args.out))
    command = "python benchmarks/recipes.py " + " ".join([f'--run "{a}"' for a in args.run] + extra)
    out = {"command": command, **stamp(), "rows": [], "straightness": {}}
    for label, wd in runs:
        c = load_config(wd)
        recipe = (f"{c.diffusion.schedule}, {c.diffusion.prediction}, {c.diffusion.t_sampling} t, "
                  f"{c.train.num_steps} steps" + (", reflow" if c.data.pairs else "")
                  + (f", {c.diffusion.preconditioning} preconditioning" if c.diffusion.preconditioning != "none"
                     else ""))
        config, model, schedule, params, _ = restore_trained(wd)  # Liu et al.'s S on 256 noise draws
        if alpha_vanishes(schedule):  # a flow path (on a VP path x_1 is not the noise: S is not defined)
            z = jax.random.normal(run_key(0, Stream.REFLOW), (256,) + example_input(config).shape[1:])
            s_run = jax.jit(lambda p, z: straightness(model_fn_for(model, p), schedule, z, num_steps=50,
                                                      prediction=config.diffusion.prediction))(params, z)
            out["straightness"][label] = float(np.mean(s_run))
            print(label, "straightness", out["straightness"][label], flush=True)
        for name, sampler, options in (SAMPLERS if args.samplers == "default" else EDM_SAMPLERS):
            for target in nfes:
                steps, n = steps_for(sampler, target)
                t0 = time.time()
                per_seed = [quality_fields(evaluate(wd, sampler=sampler, num_steps=steps, vlb=False, ode=False,
                                                    clip_x0=1.0, options=options, seed=seed)) for seed in seeds]
                row = {"run": label, "workdir": wd, "recipe": recipe, "sampler": name, "nfe": n,
                       "num_steps": steps, "seconds": time.time() - t0, **mean_over_seeds(per_seed),
                       "seeds": seeds, "per_seed": per_seed}
                out["rows"].append(row)
                print(json.dumps(row), flush=True)
    with open(args.out + ".json", "w") as f:
        json.dump(out, f, indent=2)
    r0 = out["rows"][0]
    lines = ["# Recipes on the digits at one training budget", "", stamp_line(command), "",
             floor_line(r0), ""]
    if len(seeds) > 1:
        lines += [f"Each row: the mean over sampling seeds {seeds} (1000 samples each) of FD, FD / floor, confident "
                  "share and class-balance p; the interval is the mean of the seeds' bootstrap 95% intervals; FD / "
                  "floor per seed in the last column.", ""]
    if out["straightness"]:
        lines += ["Straightness (Liu et al. 2023's S per dimension, 256 noise draws, Euler at 50 steps; 0 = "
                  "straight): " + "; ".join(f"{k}: {v:.4f}" for k, v in out["straightness"].items()), ""]
    lines += ["| run | recipe | sampler | NFE | FD [95% interval] | FD / floor | confident (p >= 0.9) "
             "| class balance (chi^2 p) |" + (" FD / floor per seed |" if len(seeds) > 1 else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if len(seeds) > 1 else "")]
    for r in out["rows"]:
        per = " / ".join(f"{p['fd_ratio']:.2f}" for p in r["per_seed"]) + " |" if len(seeds) > 1 else ""
        cells = f"| {r['run']} | {r['recipe']} | {r['sampler']} | {r['nfe']} | {quality_cells(r)} |"
        lines.append(cells + (" " + per if per else ""))
    write_markdown(args.out + ".md", lines)


if __name__ == "__main__":
    main()
