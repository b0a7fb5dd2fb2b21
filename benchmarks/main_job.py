"""The main job's results table: train the default digits experiment (or reuse a trained workdir), then
evaluate it with each sampler row of the README's table, and write ``benchmarks/results/main_job.md`` and
``.json`` with the software versions, the device and the date.

    python benchmarks/main_job.py --workdir runs/digits_bench --train      # ~15-25 min on 2 CPU cores
    python benchmarks/main_job.py --workdir runs/digits                     # evaluate an existing run

Every number of the README's main-job table comes from this file's output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROWS = (  # (label, sampler, num_steps, clip_x0, options)
    ("dpmpp_2m (default)", "dpmpp_2m", 20, 0.0, {}),
    ("dpmpp_2m", "dpmpp_2m", 20, 1.0, {}),
    ("ddim", "ddim", 20, 1.0, {}),
    ("ddim", "ddim", 50, 1.0, {}),
    ("euler (Karras, sigma_max 80)", "euler", 20, 1.0, {"sigma_max": 80.0}),
    ("heun (Karras, sigma_max 80)", "heun", 10, 1.0, {"sigma_max": 80.0}),
    ("unipc (order 2)", "unipc", 10, 1.0, {"order": 2}),
    ("ddim", "ddim", 20, 0.0, {}),
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="runs/digits_bench")
    ap.add_argument("--train", action="store_true", help="train the default config first (timed)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "main_job"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from stamp import quality_cells, stamp, stamp_line, write_markdown

    from experiments.configs.digits_ddpm import get_config
    from jaxdiff.apps.evaluate import evaluate
    from jaxdiff.training.loop import train_and_evaluate

    command = "python benchmarks/main_job.py " + " ".join(sys.argv[1:])
    out = {"command": command, **stamp(), "rows": []}
    if args.train:
        t0 = time.time()
        m = train_and_evaluate(get_config(), args.workdir)
        out["train_seconds"] = time.time() - t0
        out["train_steps"] = m["step"]
        out["final_loss"] = m["loss"]
    for i, (label, sampler, steps, clip, options) in enumerate(ROWS):
        t0 = time.time()
        r = evaluate(args.workdir, sampler=sampler, num_steps=steps, vlb=(i == 0), clip_x0=clip, options=options)
        nfe = steps * (2 if sampler == "heun" else 1) - (1 if sampler == "heun" else 0)
        out["rows"].append({"label": label, "sampler": sampler, "num_steps": steps, "nfe": nfe, "clip_x0": clip,
                            "options": options, "seconds": time.time() - t0,
                            **{k: r[k] for k in ("fd", "fd_ci", "fd_ratio", "fd_floor_train_vs_test", "fd_floor_ci",
                                                 "sample_frac_confident_0.9", "sample_class_balance_pvalue",
                                                 "sample_class_counts", "step") if k in r},
                            **({"test_bpd_total": r["test_bpd_total"]} if "test_bpd_total" in r else {})})
        print(json.dumps(out["rows"][-1]), flush=True)
    with open(args.out + ".json", "w") as f:
        json.dump(out, f, indent=2)
    r0 = out["rows"][0]
    lines = ["# Main job: digits DDPM", "", stamp_line(command), ""]
    if args.train:
        lines += [f"Training: {out['train_steps']} steps in {out['train_seconds']:.0f} s "
                  f"({out['train_steps'] / out['train_seconds']:.2f} steps/s, including data, compilation, grids "
                  "and checkpoints)", ""]
    lines += [f"Floor (300 train images vs test): {r0['fd_floor_train_vs_test']:.1f} "
              f"[{r0['fd_floor_ci'][0]:.1f}, {r0['fd_floor_ci'][1]:.1f}]; test bits/dim (VLB, 1000 steps, "
              f"300 images): {r0.get('test_bpd_total', float('nan')):.3f}", "",
              "| sampler | NFE | clip x0 | FD [95% interval] | FD / floor | confident (p >= 0.9) "
              "| class balance (chi^2 p) |",
              "|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        lines.append(f"| {r['label']} | {r['nfe']} | {'yes' if r['clip_x0'] else 'no'} | {quality_cells(r)} |")
    write_markdown(args.out + ".md", lines)


if __name__ == "__main__":
    main()
