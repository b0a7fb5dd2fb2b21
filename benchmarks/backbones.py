"""U-Net against DiT on the digits at one training budget (4000 steps of batch 64, the main job's recipe):
parameters, FLOPs per train step (XLA's count on the lowered HLO: a multiply-add is 2), train-step time on
this machine (median of the jitted step, all backbones measured in this one process), and the FD protocol
(FD / floor with bootstrap intervals, confident share, class balance) at DPM-Solver++(2M) 20 steps, the mean
over sampling seeds. Writes ``benchmarks/results/backbones.md`` and ``.json``.

    python -m experiments.train --config experiments/configs/digits_ddpm.py --workdir runs/digits
    python -m experiments.train --config experiments/configs/digits_dit.py --workdir runs/digits_dit
    python -m experiments.train --config experiments/configs/digits_dit.py:bf16 --workdir runs/digits_dit_bf16
    python benchmarks/backbones.py --run "U-Net=runs/digits" --run "DiT=runs/digits_dit" \\
        --run "DiT, bfloat16 params=runs/digits_dit_bf16" --seeds 1,2,3
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def step_cost(config, reps: int) -> dict:
    """Parameters, FLOPs and median seconds of one train step of ``config`` at its batch size."""
    import jax
    import jax.numpy as jnp
    from stamp import median_time

    from jaxdiff.training.build import build_model, build_optimizer, example_input
    from jaxdiff.training.restore import state_template
    from jaxdiff.training.step import batch_loss, make_train_step
    from jaxdiff.training.tasks import DIFFUSION
    from jaxdiff.training.tasks.diffusion import make_denoising_loss

    model, _ = build_model(config)
    state = state_template(config, DIFFUSION, model)
    tx = build_optimizer(config, state.params)
    step = jax.jit(make_train_step(batch_loss(make_denoising_loss(config, model)), tx))
    b = config.optim.batch_size
    batch = {"x": jax.random.normal(jax.random.key(1), (b,) + example_input(config).shape[1:]), "index": jnp.arange(b)}
    cost = step.lower(state, batch).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"params": int(sum(p.size for p in jax.tree_util.tree_leaves(state.params))),
            "train_step_gflops": float(cost["flops"]) / 1e9,
            "train_step_s": median_time(lambda: step(state, batch)[1]["loss"], reps)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="append", required=True, help="LABEL=WORKDIR (repeat)")
    ap.add_argument("--seeds", default="1,2,3", help="sampling seeds, comma-separated: each FD is their mean")
    ap.add_argument("--reps", type=int, default=20, help="timed train steps per backbone")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "backbones"))
    args = ap.parse_args()
    from recipes import mean_over_seeds
    from stamp import floor_line, quality_cells, quality_fields, stamp, stamp_line, write_markdown

    from jaxdiff.apps.evaluate import evaluate
    from jaxdiff.training.workdir import load_config

    runs = [r.split("=", 1) for r in args.run]
    for r in runs:
        if len(r) != 2 or not os.path.isdir(os.path.join(r[1], "checkpoints")):
            raise SystemExit(f"--run {'='.join(r)!r}: expected LABEL=WORKDIR of a trained run")
    seeds = [int(v) for v in args.seeds.split(",")]
    command = "python benchmarks/backbones.py " + " ".join(f'--run "{a}"' for a in args.run) + \
        (f" --seeds {args.seeds}" if args.seeds != "1,2,3" else "")
    out = {"command": command, **stamp(), "rows": []}
    for label, wd in runs:
        c = load_config(wd)
        m = c.model
        arch = (f"DiT {m.hidden_size} wide, {m.depth} blocks, patch {m.patch_size}" if m.backbone == "dit" else
                f"U-Net {m.base_channels} x {tuple(m.channel_mult)}, {m.num_res_blocks} res blocks")
        arch += f", {m.param_dtype} params" if m.param_dtype != "float32" else ""
        row = {"run": label, "workdir": wd, "architecture": arch, "train_steps": c.train.num_steps,
               **step_cost(c, args.reps)}
        per_seed = [quality_fields(evaluate(wd, sampler="dpmpp_2m", num_steps=20, vlb=False, ode=False, clip_x0=1.0,
                                            seed=s)) for s in seeds]
        row.update(mean_over_seeds(per_seed), seeds=seeds, per_seed=per_seed)
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    with open(args.out + ".json", "w") as f:
        json.dump(out, f, indent=2)
    lines = ["# Backbones on the digits at one training budget", "", stamp_line(command), "",
             floor_line(out["rows"][0]), "",
             f"FD at DPM-Solver++(2M), 20 steps, clip_x0 = 1: the mean over sampling seeds {seeds} (1000 samples "
             "each); the interval is the mean of the seeds' bootstrap 95% intervals. GFLOPs per train step: XLA's "
             "count of the lowered step (a multiply-add is 2 FLOPs); seconds per step: the median of "
             f"{args.reps} jitted steps on this machine, every backbone measured in the same process.", "",
             "| run | architecture | params | GFLOPs / train step | s / train step | FD [95% interval] | FD / floor "
             "| confident (p >= 0.9) | class balance (chi^2 p) | FD / floor per seed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        per = " / ".join(f"{p['fd_ratio']:.2f}" for p in r["per_seed"])
        lines.append(f"| {r['run']} | {r['architecture']} | {r['params']} | {r['train_step_gflops']:.2f} | "
                     f"{r['train_step_s']:.3f} | {quality_cells(r)} | {per} |")
    write_markdown(args.out + ".md", lines)


if __name__ == "__main__":
    main()
