"""DiT train-step throughput, TFLOP/s and MFU with remat on and off (the accelerator check of the DiT issue):
DiT-B/2 on 32x32x4 latents, 1000 classes, learned sigma, batch 256, bfloat16 compute (and bfloat16 params with
float32 master weights), AdamW. Prints a table and writes ``benchmarks/results/dit_throughput.md``.

    python benchmarks/dit_throughput.py                       # on a GPU: DiT-B/2, batch 256
    python benchmarks/dit_throughput.py --preset S/8 --batch 8 --steps 3 --out /tmp/dit_cpu   # a CPU smoke run

FLOPs are XLA's count of the whole lowered step (forward, backward, optimizer) before backend passes, with a
multiply-add counted as 2 (the DiT paper's Gflops count it as 1); remat's recomputation is not in the lowered
count of the model's work, so MFU = (model FLOPs per step) / (step time x peak), the same numerator with remat
on and off. Temporary memory: the compiled executable's memory analysis.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def bench(preset: str, batch: int, steps: int, remat: bool, dtype: str, param_dtype: str) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxdiff import losses, schedules
    from jaxdiff.models.dit import DiT, dit_config
    from jaxdiff.models.model_fn import model_fn_for
    from jaxdiff.training.state import create_train_state, make_optimizer, master_weights
    from jaxdiff.training.step import batch_loss, make_train_step

    cfg = dit_config(preset, image_size=32, in_channels=4, num_classes=1000, learned_variance=False, remat=remat,
                     dtype=dtype, param_dtype=param_dtype)
    model = DiT(cfg)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 4)), jnp.zeros((1,)))["params"]
    tx = make_optimizer(1e-4, 0)
    if param_dtype != "float32":
        tx = master_weights(tx)

    def apply_fn(p, x, t, cond, keys):
        return model_fn_for(model, p)(x, t, cond)

    step = jax.jit(make_train_step(batch_loss(losses.make_loss(apply_fn, schedules.get_schedule("linear"))), tx),
                   donate_argnums=(0,))
    state = create_train_state(params, tx, 0)
    b = {"x": jax.random.normal(jax.random.key(1), (batch, 32, 32, 4)), "index": jnp.arange(batch),
         "cond": jnp.arange(batch) % 1000}
    lowered = step.lower(state, b)
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    state, m = compiled(state, b)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = compiled(state, b)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    return {"preset": preset, "batch": batch, "remat": remat, "dtype": dtype, "param_dtype": param_dtype,
            "step_s": sec, "steps_per_s": 1 / sec, "step_tflops": float(cost["flops"]) / 1e12,
            "compile_s": compile_s, "temp_gib": (mem.temp_size_in_bytes / 2**30) if mem else float("nan"),
            "loss": float(m["loss"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="B/2")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "dit_throughput"))
    args = ap.parse_args()
    import jax
    from stamp import stamp_line, write_markdown
    from train_throughput import peak_tflops

    kind = jax.devices()[0].device_kind
    rows = []
    for remat in (False, True):
        for dtype, pdt in (("bfloat16", "bfloat16"), ("bfloat16", "float32")):
            r = bench(args.preset, args.batch, args.steps, remat, dtype, pdt)
            r["tflops_per_s"] = r["step_tflops"] / r["step_s"]
            r["mfu"] = r["tflops_per_s"] / peak_tflops(kind, "bfloat16")
            rows.append(r)
            print(r, flush=True)
    command = "python benchmarks/dit_throughput.py" + "".join(
        f" --{k} {v}" for k, v in vars(args).items() if k != "out" and v != ap.get_default(k))
    lines = [f"# DiT-{args.preset} train step on {kind}", "", stamp_line(command), "",
             "| remat | compute | params | steps/s | TFLOP/s (XLA count, multiply-add = 2) | MFU | temp memory (GiB) "
             "| compile (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'on' if r['remat'] else 'off'} | {r['dtype']} | {r['param_dtype']} | "
                     f"{r['steps_per_s']:.2f} | {r['tflops_per_s']:.1f} | {100 * r['mfu']:.1f}% | "
                     f"{r['temp_gib']:.2f} | {r['compile_s']:.1f} |")
    write_markdown(args.out + ".md", lines)


if __name__ == "__main__":
    main()
