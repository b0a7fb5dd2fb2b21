"""Few-step generation on the digits: progressively distilled students at NFE 1, 2, 4 and 8 (DDIM on their own
trailing grids) beside their teacher at 20 NFE (DPM-Solver++(2M), the main job's sampler) and the best of the
training-free samplers on the teacher at the same NFE (DDIM, DPM-Solver++(2M), UniPC, each on the trailing
grid); FD / floor, confident share and class balance, the mean over sampling seeds; each round's training cost.
Writes ``benchmarks/results/few_step.md`` and ``.json``.

    python -m experiments.train --config experiments/configs/digits_v.py --workdir runs/digits_v
    python -m experiments.distill --teacher runs/digits_v --workdir runs/digits_v_distill --teacher_steps 256 \\
        --target_steps 1 --steps_per_round 2000
    python -m experiments.train --config experiments/configs/digits_ict.py --workdir runs/digits_ict
    python benchmarks/few_step.py --teacher runs/digits_v --rounds runs/digits_v_distill --seeds 1,2,3 \
        --ict runs/digits_ict

Consistency distillation has its own teacher (the EDM digits model); its rows, beside that teacher at 20 NFE
(DPM-Solver++(2M)) and the training-free samplers on it, come from a run without --rounds:

    python -m experiments.train --config experiments/configs/digits_edm.py --workdir runs/digits_edm
    python -m experiments.train --config experiments/configs/digits_cd.py --workdir runs/digits_cd
    python benchmarks/few_step.py --teacher runs/digits_edm --cd runs/digits_cd --out benchmarks/results/few_step_cd

``--search`` adds consistency rows at NFE 2 .. ``--search_levels`` + 1 whose re-noising levels (the sampler's
``sigmas``) are chosen one at a time by FD on a sampling seed the reported rows do not use (``--search_seed``,
default 0), as Song et al. (2023) and iCT chose their multistep times.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

NFES = (1, 2, 4, 8)
SIGMA_CANDIDATES = (0.1, 0.2, 0.4, 0.7, 1.0, 1.5, 2.5, 4.0, 8.0)  # re-noising levels tried by --search
FREE = (("ddim", {"spacing": "trailing"}), ("dpmpp_2m", {"spacing": "trailing"}),
        ("unipc", {"spacing": "trailing", "order": 2}))


def round_cost(workdir: str) -> dict:
    """Steps and wall seconds of a round (its config.json written -> its last checkpoint written)."""
    ck = [d for d in glob.glob(os.path.join(workdir, "checkpoints", "*")) if os.path.basename(d).isdigit()]
    last = max(ck, key=lambda d: int(os.path.basename(d)))
    return {"steps": int(os.path.basename(last)),
            "seconds": os.path.getmtime(last) - os.path.getmtime(os.path.join(workdir, "config.json"))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--rounds", default=None, help="experiments.distill's --workdir (round_<N> inside)")
    ap.add_argument("--ict", default=None, help="an iCT workdir (digits_ict.py): rows at NFE 1, 2, 4")
    ap.add_argument("--cd", default=None, help="a consistency-distillation workdir (digits_cd.py): rows at NFE 1, 2, 4")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--search", action="store_true",
                    help="consistency rows also at re-noising levels searched greedily on --search_seed (as the "
                         "consistency papers choose them by FID): one level at a time over SIGMA_CANDIDATES")
    ap.add_argument("--search_levels", type=int, default=1, help="levels searched: rows at NFE 2 .. levels + 1")
    ap.add_argument("--search_seed", type=int, default=0, help="the sampling seed of the search (not in --seeds)")
    ap.add_argument("--free", default="ddim,dpmpp_2m,unipc",
                    help="training-free samplers tried on the teacher ('none': only its 20-NFE row)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "few_step"))
    args = ap.parse_args()
    from recipes import mean_over_seeds
    from stamp import floor_line, quality_cells, quality_fields, stamp, stamp_line, write_markdown

    from jaxdiff.apps.evaluate import evaluate

    seeds = [int(s) for s in args.seeds.split(",")]
    names = [n for n, _ in FREE]
    unknown = [f for f in args.free.split(",") if f not in names]
    if unknown and args.free != "none":
        raise SystemExit(f"--free {args.free}: unknown {unknown}; allowed: {names} or 'none'")
    if args.search and args.search_seed in seeds:
        raise SystemExit(f"--search_seed {args.search_seed} is one of --seeds {seeds}: the levels must be chosen on "
                         "samples that the reported rows do not use")
    command = f"python benchmarks/few_step.py --teacher {args.teacher}" + \
        (f" --rounds {args.rounds}" if args.rounds else "") + f" --seeds {args.seeds}" + \
        "".join(f" --{k} {getattr(args, k)}" for k in ("ict", "cd") if getattr(args, k)) + \
        (f" --search --search_seed {args.search_seed} --search_levels {args.search_levels}" if args.search else "") + \
        (f" --free {args.free}" if args.free != ap.get_default("free") else "") + \
        (f" --out {os.path.relpath(args.out)}" if args.out != ap.get_default("out") else "")
    out = {"command": command, **stamp(), "rows": []}

    def row(label, wd, sampler, nfe, options, cost=None):
        per = [quality_fields(evaluate(wd, sampler=sampler, num_steps=nfe, vlb=False, ode=False, clip_x0=1.0,
                                       options=options, seed=s)) for s in seeds]
        r = {"model": label, "workdir": wd, "sampler": sampler, "nfe": nfe, "options": options,
             **mean_over_seeds(per), "per_seed": per, "cost": cost}
        out["rows"].append(r)
        print(json.dumps(r), flush=True)
        return r

    row("teacher", args.teacher, "dpmpp_2m", 20, {})
    for nfe in NFES:
        free = [(s, o) for s, o in FREE if s in args.free.split(",")]
        if free:
            best = min((row("teacher", args.teacher, s, nfe, o) for s, o in free), key=lambda r: r["fd"])
            best["best_free"] = True
        wd = os.path.join(args.rounds, f"round_{nfe:04d}") if args.rounds else None
        if wd and os.path.isdir(os.path.join(wd, "checkpoints")):
            row(f"student ({nfe} steps)", wd, "ddim", nfe, {"spacing": "trailing"}, round_cost(wd))
    consistency = {label: (wd, round_cost(wd)) for label, wd in
                   (("iCT (consistency training)", args.ict), ("CD (consistency distillation)", args.cd)) if wd}
    for label, (wd, cost) in consistency.items():
        for nfe in (1, 2, 4):
            row(label, wd, "consistency", nfe, {}, cost)
        if args.search:
            chosen = []
            for _ in range(args.search_levels):  # level k: the row at NFE k + 1
                cands = [v for v in SIGMA_CANDIDATES if not chosen or v < chosen[-1]]
                if not cands:  # the lowest candidate already chosen
                    break
                fds = {v: evaluate(wd, sampler="consistency", num_steps=len(chosen) + 2, vlb=False, ode=False,
                                   clip_x0=1.0, options={"sigmas": chosen + [v]}, seed=args.search_seed)["fd"]
                       for v in cands}
                search = {"fixed": list(chosen), "fd": {str(v): f for v, f in fds.items()}}
                chosen.append(min(fds, key=fds.get))
                row(label, wd, "consistency", len(chosen) + 1, {"sigmas": list(chosen)}, cost)["search"] = search
    rounds = sorted(glob.glob(os.path.join(args.rounds, "round_*")), reverse=True) if args.rounds else []
    out["rounds"] = {os.path.basename(r): round_cost(r) for r in rounds}
    with open(args.out + ".json", "w") as f:
        json.dump(out, f, indent=2)
    total = sum(c["seconds"] for c in out["rounds"].values())
    lines = ["# Few-step generation on the digits", "", stamp_line(command), "", floor_line(out["rows"][0]), "",
             f"Each row: the mean over sampling seeds {seeds} (1000 samples each, clip_x0 = 1); the interval is the "
             "mean of the seeds' bootstrap 95% intervals." + (" Teacher rows at NFE 1-8: every training-free sampler "
             "tried (--free), the best marked." if args.free != "none" else "") + (" Rounds: " + ", ".join(
                 f"{k} {v['steps']} steps in {v['seconds']:.0f} s" for k, v in out["rounds"].items())
                 + f" ({total / 60:.0f} min in all on this machine)." if rounds else "")
             + "".join(f" {label}: {c['steps']} steps in {c['seconds'] / 60:.0f} min on this machine."
                       for label, (_, c) in consistency.items())
             + (f" Searched levels: each chosen in turn (the earlier ones fixed) as the lowest FD over "
                f"{list(SIGMA_CANDIDATES)} on sampling seed {args.search_seed}, which no row uses; plain consistency "
                "rows re-noise to the uniform grid's levels." if args.search else ""), "",
             "| model | sampler | NFE | FD [95% interval] | FD / floor | confident (p >= 0.9) "
             "| class balance (chi^2 p) | FD / floor per seed |", "|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        name = r["sampler"] + (" (best training-free)" if r.get("best_free") else "")
        if r["options"].get("sigmas"):
            name += f", re-noised to sigma {' / '.join(f'{v:g}' for v in r['options']['sigmas'])} (searched)"
        per = " / ".join(f"{p['fd_ratio']:.2f}" for p in r["per_seed"])
        lines.append(f"| {r['model']} | {name} | {r['nfe']} | {quality_cells(r)} | {per} |")
    write_markdown(args.out + ".md", lines)


if __name__ == "__main__":
    main()
