"""Steps/s of the main job's train step (digits DDPM, batch 64) under XLA:CPU settings and network sizes, each
in a fresh process, measured one after the other in one run (compare the ratios: these machines are shared and noisy).

    python benchmarks/cpu_flags.py        # writes benchmarks/results/cpu_flags.md
    python benchmarks/cpu_flags.py --settings default,no_eigen --repeats 3 --out benchmarks/results/cpu_flags_repeats

A setting is an ``XLA_FLAGS`` string (plus ``taskset`` CPU pinning where named). With ``--repeats R`` the
settings alternate R times (default, no_eigen, default, no_eigen, ...) so that a change in the machine's load
falls on all of them; the table gives each run and the median.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

DEFAULT_FLAGS = "--xla_cpu_multi_thread_eigen=true"
SETTINGS = {  # key: (label, XLA_FLAGS, taskset CPUs, model overrides of the digits_ddpm config)
    # XLA's default, named explicitly (an XLA_FLAGS in the caller's environment does not reach the workers)
    "default": ("XLA default (Eigen thread pool)", DEFAULT_FLAGS, None, {}),
    "no_eigen": ("no Eigen multithreading", "--xla_cpu_multi_thread_eigen=false", None, {}),
    "pinned": ("pinned to one core", DEFAULT_FLAGS, "0", {}),
    "pinned_no_eigen": ("pinned, no Eigen multithreading", "--xla_cpu_multi_thread_eigen=false", "0", {}),
    # smaller networks under XLA's default flags (the issue allows them if the quality holds)
    "base24": ("base channels 24", DEFAULT_FLAGS, None, {"base_channels": 24}),
    "base16": ("base channels 16", DEFAULT_FLAGS, None, {"base_channels": 16}),
    "res1": ("one res block per level", DEFAULT_FLAGS, None, {"num_res_blocks": 1}),
}

WORKER = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from experiments.configs.digits_ddpm import get_config
from jaxdiff.training.build import build_optimizer
from jaxdiff.training.step import make_train_step
from jaxdiff.training.restore import state_template
from jaxdiff.training.tasks import get_task
c = get_config()
c.data.data_dir = sys.argv[1]
for k, v in json.loads(sys.argv[3]).items():
    setattr(c.model, k, v)
task = get_task(c)
model = task.model(c)
pipe = task.data(c)
prep = task.prepare(c)
state = state_template(c, task, model)
step = jax.jit(make_train_step(task.loss(c, model, None), build_optimizer(c, state.params),
                               ema_decay=c.optim.ema_decay), donate_argnums=(0,))
t0 = time.time()
state, m = step(state, prep(pipe.batch(0), 0)); jax.block_until_ready(m)
compile_s = time.time() - t0
for i in range(1, 21):
    state, m = step(state, prep(pipe.batch(i), i))
jax.block_until_ready(m)
n = int(sys.argv[2])
t0 = time.perf_counter(); c0 = time.process_time()
for i in range(21, 21 + n):
    state, m = step(state, prep(pipe.batch(i), i))
jax.block_until_ready(m)
wall = time.perf_counter() - t0
print(json.dumps({"steps_per_s": n / wall, "compile_s": compile_s, "cpu_per_wall": (time.process_time() - c0) / wall}))
"""


def main():
    import argparse
    import statistics

    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated keys of {list(SETTINGS)}")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=None, help="output path without extension (default results/cpu_flags)")
    args = ap.parse_args()
    keys = args.settings.split(",")
    unknown = [k for k in keys if k not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; allowed: {list(SETTINGS)}")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from stamp import stamp_line, write_markdown

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_path = args.out or os.path.join(root, "benchmarks", "results", "cpu_flags")
    data_dir = os.environ.get("JAXDIFF_DATA_DIR", os.path.expanduser("~/jaxdiff_data"))
    n = int(os.environ.get("STEPS", "300"))
    runs = {k: [] for k in keys}
    for _ in range(args.repeats):
        for k in keys:
            label, flags, cpus, model = SETTINGS[k]
            env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
            cmd = ([] if cpus is None else ["taskset", "-c", cpus]) + [sys.executable, "-c", WORKER, data_dir, str(n),
                                                            json.dumps(model)]
            out = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=True)
            runs[k].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(k, json.dumps(runs[k][-1]), file=sys.stderr, flush=True)
    med = {k: {f: statistics.median(r[f] for r in runs[k]) for f in runs[k][0]} for k in keys}
    base = med[keys[0]]["steps_per_s"]
    command = "python benchmarks/cpu_flags.py" + "".join(
        f" --{a} {getattr(args, a)}" for a in ("settings", "repeats", "out")
        if getattr(args, a) != ap.get_default(a)).replace(root + os.sep, "")
    lines = ["# XLA:CPU settings for the main job's train step", "", stamp_line(command), "",
             f"{n} timed steps after 20 warm-up steps, batch 64, each run in a fresh process; "
             f"{args.repeats} run(s) per setting, the settings alternating; medians (each run's steps/s in the "
             f"last column).", "",
             f"| setting | XLA_FLAGS | steps/s | vs {keys[0]} | CPU time / wall time | compile s | steps/s per run |",
             "|---|---|---|---|---|---|---|"]
    for k in keys:
        label, flags, cpus, model = SETTINGS[k]
        m = med[k]
        pin = f" (taskset -c {cpus})" if cpus else ""
        pin += "".join(f"; model.{a}={v}" for a, v in model.items())
        per = " / ".join(f"{r['steps_per_s']:.2f}" for r in runs[k])
        lines.append(f"| {label} | `{flags or '-'}`{pin} | {m['steps_per_s']:.2f} | {m['steps_per_s'] / base:.2f} | "
                     f"{m['cpu_per_wall']:.2f} | {m['compile_s']:.1f} | {per} |")
    with open(out_path + ".json", "w") as f:
        json.dump({"command": command, "runs": runs}, f, indent=2)
    write_markdown(out_path + ".md", lines)


if __name__ == "__main__":
    main()
