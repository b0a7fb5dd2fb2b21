"""Song & Ermon's score models on the digits: NCSN (``digits_ncsn.py``) against NCSNv2 (``digits_ncsnv2.py``,
every choice from the data by ``jaxdiff.ncsn``) sampled by annealed Langevin alone, with the final denoising
step, and by consistent annealed sampling (Jolicoeur-Martineau et al. 2021): FD / floor, confident share,
class balance and NFE, each the mean over three sampling seeds; writes ``benchmarks/results/ncsnv2.md`` and
``.json`` (versions, device and date inside).

    python -m experiments.train --config experiments/configs/digits_ncsn.py --workdir runs/digits_ncsn
    python -m experiments.train --config experiments/configs/digits_ncsnv2.py --workdir runs/digits_ncsnv2
    python benchmarks/ncsnv2.py --ncsn runs/digits_ncsn --ncsnv2 runs/digits_ncsnv2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ncsn", required=True, help="a trained digits_ncsn workdir")
    ap.add_argument("--ncsnv2", required=True, help="a trained digits_ncsnv2 workdir")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "ncsnv2"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from recipes import mean_over_seeds
    from stamp import floor_line, quality_cells, quality_fields, stamp, stamp_line, write_markdown

    from experiments.configs import digits_ncsn, digits_ncsnv2
    from jaxdiff import samplers
    from jaxdiff.apps.evaluate import evaluate
    from jaxdiff.training.build import build_schedule

    seeds = [int(s) for s in args.seeds.split(",")]
    rows_spec = [("NCSN: annealed Langevin (10 levels x 30 steps, denoising step)", args.ncsn,
                  digits_ncsn.get_config())]
    for label, variant in (("NCSNv2: annealed Langevin (24 levels x 5 steps)", ""),
                           ("NCSNv2: annealed Langevin (24 levels x 20 steps)", "long"),
                           ("NCSNv2: + final denoising step", "denoise"),
                           ("NCSNv2: consistent annealed sampling (120 levels) + denoising step", "cas")):
        rows_spec.append((label, args.ncsnv2, digits_ncsnv2.get_config(variant)))
    command = f"python benchmarks/ncsnv2.py --ncsn {args.ncsn} --ncsnv2 {args.ncsnv2}"
    out = {"command": command, **stamp(), "rows": []}
    for label, wd, c in rows_spec:
        s = c.sample
        options = s.options.to_dict()
        t0 = time.time()
        per_seed = [quality_fields(evaluate(wd, sampler=s.sampler, num_steps=s.num_steps, vlb=False, ode=False,
                                            options=options, seed=seed)) for seed in seeds]
        nfe = samplers.nfe(s.sampler, build_schedule(c), num_steps=s.num_steps, **options)
        row = {"sampler": label, "workdir": wd, "num_steps": s.num_steps, "options": options, "nfe": nfe,
               "seconds": time.time() - t0, **mean_over_seeds(per_seed), "per_seed": per_seed}
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    with open(args.out + ".json", "w") as f:
        json.dump(out, f, indent=2)
    lines = ["# NCSN and NCSNv2 on the digits", "", stamp_line(command), "", floor_line(out["rows"][0]), "",
             f"Each row: the mean over sampling seeds {seeds} (1000 samples each, no clipping: the configs' "
             "clip_x0 = 0) of FD, FD / floor, confident share and class-balance p; the interval is the mean of the "
             "seeds' bootstrap 95% intervals.", "",
             "| model and sampler | NFE | FD [95% interval] | FD / floor | confident (p >= 0.9) "
             "| class balance (chi^2 p) | FD / floor per seed |", "|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        per = " / ".join(f"{p['fd_ratio']:.2f}" for p in r["per_seed"])
        lines.append(f"| {r['sampler']} | {r['nfe']} | {quality_cells(r)} | {per} |")
    write_markdown(args.out + ".md", lines)


if __name__ == "__main__":
    main()
