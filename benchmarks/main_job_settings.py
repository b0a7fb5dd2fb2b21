"""The main job's settings tried for speed (issue #20), each beside the README's quality protocol: for every
``LABEL=WORKDIR`` given, the step count and network of the run (its config.json), its evaluation by
``python -m experiments.evaluate --workdir WORKDIR --sampler dpmpp_2m --num_steps 20 --clip_x0 0 --novlb
--seed S`` for each sampling seed S (run first; read from ``WORKDIR/eval/metrics_dpmpp_2m_20*.json``,
averaged) and the train step's steps/s relative to the default network from
``benchmarks/results/cpu_flags_sizes.json`` (one process per setting, alternating).
Writes ``benchmarks/results/main_job_settings.md``.

    python -m experiments.train --config experiments/configs/digits_ddpm.py --workdir runs/digits_b24 \\
        --config.model.base_channels=24
    python -m experiments.evaluate --workdir runs/digits_b24 --sampler dpmpp_2m --num_steps 20 --clip_x0 0 --novlb \
        --seed 1      # and --seed 2, --seed 3
    python benchmarks/main_job_settings.py default=/tmp/jaxdiff_fresh/runs/digits base24=runs/digits_b24 ...

The quality bar (the issue's): FD / floor <= 0.91, >= 94.8% confident, class balance chi^2 p > 0.01.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE_KEYS = {(32, 2): "default", (24, 2): "base24", (16, 2): "base16", (32, 1): "res1"}  # (base channels, res
# blocks per level) -> the cpu_flags.py setting that measured its speed


def main(argv):
    sys.path.insert(0, HERE)
    from recipes import mean_over_seeds
    from stamp import quality_cells, quality_fields, stamp_line, write_markdown

    pairs = [a.split("=", 1) for a in argv]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise SystemExit("usage: python benchmarks/main_job_settings.py LABEL=WORKDIR [LABEL=WORKDIR ...]")
    with open(os.path.join(HERE, "results", "cpu_flags_sizes.json")) as f:
        runs = json.load(f)["runs"]
    sps = {k: statistics.median(r["steps_per_s"] for r in v) for k, v in runs.items()}
    lines = ["# Main job: settings tried for speed, with the quality protocol", "",
             stamp_line("python benchmarks/main_job_settings.py " + " ".join(argv)), "",
             "Quality: `experiments.evaluate --sampler dpmpp_2m --num_steps 20 --clip_x0 0 --novlb [--seed S]` (1000 "
             "samples per seed; the mean over the seeds evaluated, FD / floor of each in the last column); bar: "
             "FD / floor <= 0.91, >= 94.8% confident, balance p > 0.01. Speed: the train step's "
             "steps/s relative to the default network (`benchmarks/results/cpu_flags_sizes.md`, median of "
             "alternating runs); 'work' = steps / relative speed, in default-network steps.", "",
             "| setting | base channels | res blocks | steps | steps/s vs default | work (default steps) | FD [95%] "
             "| FD / floor | confident | balance p | meets the bar | FD / floor per seed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, wd in pairs:
        with open(os.path.join(wd, "config.json")) as f:
            cfg = json.load(f)
        per = {}  # seed -> the first evaluation of that seed without clipping (evaluate never overwrites)
        for path in sorted(glob.glob(os.path.join(wd, "eval", "metrics_dpmpp_2m_20*.json"))):
            with open(path) as f:
                r = json.load(f)
            if r.get("clip_x0") == 0.0 and not r.get("options"):
                per.setdefault(r["seed"], quality_fields(r))
        if not per:
            raise SystemExit(f"{wd}: no evaluation without clipping; run experiments.evaluate as above first")
        m = mean_over_seeds([per[k] for k in sorted(per)])
        base, steps = cfg["model"]["base_channels"], cfg["train"]["num_steps"]
        res = cfg["model"]["num_res_blocks"]
        rel = sps[SIZE_KEYS[base, res]] / sps["default"]
        ok = m["fd_ratio"] <= 0.91 and m["sample_frac_confident_0.9"] >= 0.948 and \
            m["sample_class_balance_pvalue"] > 0.01
        seeds = " / ".join(f"{per[k]['fd_ratio']:.2f} (seed {k})" for k in sorted(per))
        lines.append(f"| {label} | {base} | {res} | {steps} | {rel:.2f} | {steps / rel:.0f} | {quality_cells(m)} | "
                     f"{'yes' if ok else 'no'} | {seeds} |")
    write_markdown(os.path.join(HERE, "results", "main_job_settings.md"), lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
