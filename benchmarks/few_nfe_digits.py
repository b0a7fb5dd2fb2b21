"""Training-free sampling at 4-10 network evaluations on the digits: FD / floor, confident share and class
balance of the main job's model (eps, cosine, 4000 steps) under each few-step solver and grid; writes
``benchmarks/results/few_nfe_digits.md`` and ``.json`` (versions, device and date inside).

    python -m experiments.train --config experiments/configs/digits_ddpm.py --workdir runs/digits
    python benchmarks/few_nfe_digits.py --workdir runs/digits

Each FD carries its bootstrap 95% interval over the 1000 samples (sampler seed 1, clip_x0 = 1, the data's
range; the README's protocol). Every setting here has NFE = num_steps: the grid ends with the step to t = 0,
whose result is the data prediction (the final denoising step).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# label -> (sampler, options); the first row is each sampler at its registry defaults.
SETTINGS = (
    ("ddim (defaults: uniform grid)", "ddim", {}),
    ("dpmpp_2m (defaults: logSNR grid)", "dpmpp_2m", {}),
    ("dpmpp_2m, uniform grid", "dpmpp_2m", {"spacing": "uniform"}),
    ("dpmpp_2m, trailing grid", "dpmpp_2m", {"spacing": "trailing"}),
    ("dpmpp_3m, trailing grid", "dpmpp_3m", {"spacing": "trailing"}),
    ("unipc-2 bh2 (defaults: logSNR grid)", "unipc", {}),
    ("unipc-2 bh2, trailing grid", "unipc", {"spacing": "trailing"}),
    ("unipc-2 bh1, trailing grid", "unipc", {"spacing": "trailing", "variant": "bh1"}),
    ("unipc-3 bh2, trailing grid", "unipc", {"spacing": "trailing", "order": 3}),
    ("ipndm-4 (defaults: trailing grid)", "ipndm", {}),
    ("ipndm-4, uniform grid", "ipndm", {"spacing": "uniform"}),
    ("ipndm-3, trailing grid", "ipndm", {"order": 3}),
    ("deis-3 (defaults: trailing grid)", "deis", {}),
    ("deis-3, uniform grid", "deis", {"spacing": "uniform"}),
    ("lms-4 (defaults: trailing grid)", "lms", {}),
)
NFES = (4, 5, 6, 8, 10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True, help="a trained digits run (the main job's)")
    ap.add_argument("--only", default=None, help="labels of SETTINGS to run, separated by | (default: all)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "few_nfe_digits"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from stamp import floor_line, quality_cells, quality_fields, stamp, stamp_line, write_markdown

    from jaxdiff import samplers
    from jaxdiff.apps.evaluate import evaluate

    if not os.path.isdir(os.path.join(args.workdir, "checkpoints")):
        raise SystemExit(f"--workdir {args.workdir!r}: expected a trained run (with checkpoints/)")
    settings = SETTINGS if args.only is None else [s for s in SETTINGS if s[0] in args.only.split("|")]
    command = f"python benchmarks/few_nfe_digits.py --workdir {args.workdir}"
    out = {"command": command, **stamp(), "rows": []}
    for label, sampler, options in settings:
        for n in NFES:
            t0 = time.time()
            try:
                r = evaluate(args.workdir, sampler=sampler, num_steps=n, vlb=False, ode=False, clip_x0=1.0,
                             options=options)
            except ValueError as e:  # e.g. fewer steps than the order needs
                print(label, n, "skipped:", e, flush=True)
                continue
            row = {"setting": label, "sampler": sampler, "options": options, "nfe": n, "seconds": time.time() - t0,
                   **quality_fields(r)}
            assert samplers.nfe(sampler, _schedule(args.workdir), num_steps=n, **options) == n
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
    with open(args.out + ".json", "w") as f:
        json.dump(out, f, indent=2)
    r0 = out["rows"][0]
    lines = ["# Few-step sampling of the main job's model", "", stamp_line(command), "",
             f"{floor_line(r0)}; model step {r0['step']}", "",
             "| setting | NFE | FD [95% interval] | FD / floor | confident (p >= 0.9) | class balance (chi^2 p) |",
             "|---|---|---|---|---|---|"]
    for r in out["rows"]:
        lines.append(f"| {r['setting']} | {r['nfe']} | {quality_cells(r)} |")
    write_markdown(args.out + ".md", lines)


def _schedule(workdir):
    from jaxdiff.training.build import build_schedule
    from jaxdiff.training.workdir import load_config

    return build_schedule(load_config(workdir))


if __name__ == "__main__":
    main()
