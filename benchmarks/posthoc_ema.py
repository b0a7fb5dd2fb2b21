"""Post-hoc EMA on the digits (Karras et al. 2024, EDM2 Sec. 3): after one training run that tracked two power
EMAs (sigma_rel 0.05 and 0.10, snapshots every 250 steps), reconstruct EMAs of other lengths and measure each
one's FD / floor, confident share and class balance with the config's sampler (digits_edm: Heun, 18 steps =
35 NFE), beside the EMA tracked during training (``optim.ema_decay``); writes
``benchmarks/results/posthoc_ema.md`` and ``.json`` (versions, device and date inside).

    python -m experiments.train --config experiments/configs/digits_edm.py --workdir runs/digits_edm
    python benchmarks/posthoc_ema.py --workdir runs/digits_edm

Reconstructions go to ``<workdir>/posthoc_ema/sigma_rel_<s>`` (an existing one is reused, never overwritten).
Each FD is the mean over sampling seeds (1000 samples each) with the mean of their bootstrap 95% intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

SIGMA_RELS = (0.02, 0.03, 0.04, 0.05, 0.065, 0.08, 0.10, 0.13, 0.16, 0.20, 0.25)


def tracked_sigma_rel(decay: float, t: int) -> float:
    """The relative width std(tau / t) of the trained EMA's weights over updates 1..t (decay with TF's warm-up
    min(decay, (1 + s) / (10 + s)) at update s + 1, as :func:`jaxdiff.training.step.ema_decay_at`)."""
    import numpy as np

    s = np.arange(t, dtype=np.float64)
    d = np.minimum(decay, (1 + s) / (10 + s))  # the decay applied at update s + 1
    # w(tau) = (1 - d_tau) prod_{k > tau} d_k; the initial params' weight prod_k d_k is ~0 (d_1 = 0.1).
    tail = np.concatenate([np.cumprod(d[::-1])[::-1][1:], [1.0]])
    w = (1 - d) * tail
    w /= w.sum()
    u = np.arange(1, t + 1) / t
    return float(np.sqrt(w @ u**2 - (w @ u) ** 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True, help="a run trained with optim.posthoc_ema (digits_edm)")
    ap.add_argument("--sigma_rels", default=",".join(map(str, SIGMA_RELS)))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "posthoc_ema"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from recipes import mean_over_seeds
    from stamp import floor_line, quality_cells, quality_fields, stamp, stamp_line, write_markdown

    from jaxdiff.apps.evaluate import evaluate
    from jaxdiff.training import ema
    from jaxdiff.training.restore import write_posthoc_workdir
    from jaxdiff.training.tasks import get_task
    from jaxdiff.training.workdir import load_config

    wd = args.workdir
    config = load_config(wd)
    task = get_task(config)
    steps, gammas, trees = ema.load_snapshots(wd, task.init(config, task.model(config)),
                                              len(config.optim.posthoc_ema))
    last = max(steps)
    lo, hi = ema.reachable_range(steps, gammas, last)
    seeds = [int(s) for s in args.seeds.split(",")]
    command = f"python benchmarks/posthoc_ema.py --workdir {wd}"
    out = {"command": command, **stamp(), "reachable": [lo, hi], "snapshot_steps": sorted(set(steps)),
           "tracked_sigma_rels": list(config.optim.posthoc_ema), "rows": []}
    sampler, num_steps = config.sample.sampler, config.sample.num_steps

    def measure(label, path, sigma_rel, profile_error):
        t0 = time.time()
        per_seed = [quality_fields(evaluate(path, vlb=False, ode=False, clip_x0=1.0, seed=s)) for s in seeds]
        row = {"ema": label, "sigma_rel": sigma_rel, "profile_error": profile_error, "workdir": path,
               "seconds": time.time() - t0, **mean_over_seeds(per_seed), "per_seed": per_seed}
        out["rows"].append(row)
        print(json.dumps(row), flush=True)

    measure(f"tracked in training (decay {config.optim.ema_decay})", wd,
            tracked_sigma_rel(config.optim.ema_decay, last), None)
    for s in [float(v) for v in args.sigma_rels.split(",")]:
        if not lo <= s <= hi:
            print(f"sigma_rel {s} outside the reachable [{lo:.3f}, {hi:.3f}]: skipped", flush=True)
            continue
        path = os.path.join(wd, "posthoc_ema", f"sigma_rel_{s:.3f}")
        if os.path.exists(path):  # an earlier reconstruction of the same run: reused
            info = {"profile_error": ema.solve_coefficients(steps, gammas, last, float(ema.sigma_rel_to_gamma(s)))[1]}
        else:
            path, info = write_posthoc_workdir(wd, s, out=path)
        measure("post-hoc", path, s, info["profile_error"])
    with open(args.out + ".json", "w") as f:
        json.dump(out, f, indent=2)
    r0 = out["rows"][0]
    best = min(out["rows"][1:], key=lambda r: r["fd"]) if len(out["rows"]) > 1 else None
    lines = ["# Post-hoc EMA on the digits (EDM2)", "", stamp_line(command), "", floor_line(r0), "",
             f"Run: `{wd}` ({config.train.num_steps} steps); tracked power EMAs sigma_rel "
             f"{list(config.optim.posthoc_ema)}, snapshots at {len(set(steps))} steps ({min(steps)}..{last}); "
             f"reconstructible at step {last} with relative profile error <= {ema.PROFILE_TOL}: sigma_rel in "
             f"[{lo:.3f}, {hi:.3f}]. Sampler: {sampler}, {num_steps} steps (the config's). Each FD: the mean over "
             f"seeds {seeds} (1000 samples each), interval the mean of their bootstrap 95% intervals.", "",
             "| EMA | sigma_rel | profile error | FD [95% interval] | FD / floor | confident (p >= 0.9) "
             "| class balance (chi^2 p) | FD / floor per seed |", "|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        err = "-" if r["profile_error"] is None else f"{r['profile_error']:.1e}"
        per = " / ".join(f"{p['fd_ratio']:.2f}" for p in r["per_seed"])
        lines.append(f"| {r['ema']} | {r['sigma_rel']:.3f} | {err} | {quality_cells(r)} | {per} |")
    if best:
        lines += ["", f"Best post-hoc length: sigma_rel {best['sigma_rel']:.3f}, FD / floor {best['fd_ratio']:.2f} "
                  f"(tracked EMA: {r0['fd_ratio']:.2f})."]
    write_markdown(args.out + ".md", lines)


if __name__ == "__main__":
    main()
