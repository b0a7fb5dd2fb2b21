"""Steps/s of the main job's train step (digits DDPM, batch 64) under XLA:CPU settings, each in a fresh
process, measured one after the other in one run (compare the ratios: these machines are shared and noisy).

    python benchmarks/cpu_flags.py        # writes benchmarks/results/cpu_flags.md

A setting is an ``XLA_FLAGS`` string (plus ``taskset`` CPU pinning where named).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SETTINGS = (
    ("default", "", None),
    ("no Eigen multithreading", "--xla_cpu_multi_thread_eigen=false", None),
    ("pinned to one core", "", "0"),
    ("pinned, no Eigen multithreading", "--xla_cpu_multi_thread_eigen=false", "0"),
)

WORKER = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from experiments.configs.digits_ddpm import get_config
from jaxdiff.training.build import build_optimizer
from jaxdiff.training.step import make_train_step
from jaxdiff.training.tasks import get_task, state_template
c = get_config()
c.data.data_dir = sys.argv[1]
task = get_task(c)
model = task.model(c)
pipe = task.data(c)
prep = task.prepare(c)
step = jax.jit(make_train_step(task.loss(c, model), build_optimizer(c), ema_decay=c.optim.ema_decay),
               donate_argnums=(0,))
state = state_template(c, task, model)
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
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from stamp import stamp_line, write_markdown

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data_dir = os.environ.get("JAXDIFF_DATA_DIR", os.path.expanduser("~/jaxdiff_data"))
    n = int(os.environ.get("STEPS", "300"))
    rows = []
    for label, flags, cpus in SETTINGS:
        env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
        cmd = ([] if cpus is None else ["taskset", "-c", cpus]) + [sys.executable, "-c", WORKER, data_dir, str(n)]
        t0 = time.time()
        out = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"setting": label, "xla_flags": flags, "taskset": cpus, "seconds": time.time() - t0, **r})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    base = rows[0]["steps_per_s"]
    lines = ["# XLA:CPU settings for the main job's train step", "", stamp_line("python benchmarks/cpu_flags.py"),
             "", f"{n} timed steps after 20 warm-up steps, batch 64, each setting in a fresh process.", "",
             "| setting | XLA_FLAGS | steps/s | vs default | CPU time / wall time | compile s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        pin = f" (taskset -c {r['taskset']})" if r["taskset"] else ""
        lines.append(f"| {r['setting']} | `{r['xla_flags'] or '-'}`{pin} | {r['steps_per_s']:.2f} | "
                     f"{r['steps_per_s'] / base:.2f} | {r['cpu_per_wall']:.2f} | {r['compile_s']:.1f} |")
    write_markdown(os.path.join(root, "benchmarks", "results", "cpu_flags.md"), lines)


if __name__ == "__main__":
    main()
