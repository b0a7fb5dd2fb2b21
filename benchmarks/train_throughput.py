"""Train-step throughput of the DDPM CIFAR-10 U-Net (35.7M params): jaxdiff vs diffusers (PyTorch).

    pip install -e ".[bench]"            # torch==2.13.0 (CPU) and diffusers, for the comparison only
    python benchmarks/train_throughput.py --batch 8 --steps 5

Both run the same architecture (diffusers' google/ddpm-cifar10-32 layout), eps-MSE loss, Adam, the same
batch and thread count, in one process; prints images/s and compile (first-step) time. Without torch
installed only the jaxdiff rows are printed.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def bench_jax(batch, steps, dtype="float32"):
    import jax
    import jax.numpy as jnp

    from jaxdiff import losses, schedules
    from jaxdiff.models import UNet, count_params, ddpm_cifar10_config
    from jaxdiff.training import create_train_state, make_optimizer, make_train_step

    model = UNet(ddpm_cifar10_config(dropout=0.1, dtype=dtype))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,)))["params"]
    sched = schedules.get_schedule("linear")

    def apply_fn(p, x, t, cond, key):
        return model.apply({"params": p}, x, t, cond, train=True, rngs={"dropout": key})

    tx = make_optimizer(2e-4, 5000)
    step = jax.jit(make_train_step(losses.make_loss(apply_fn, sched), tx), donate_argnums=(0,))
    state = create_train_state(params, tx, 0)
    b = {"x": jax.random.uniform(jax.random.PRNGKey(1), (batch, 32, 32, 3), minval=-1, maxval=1),
         "index": jnp.arange(batch)}
    t0 = time.perf_counter()
    state, m = step(state, b)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = step(state, b)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    return count_params(params), compile_s, batch / float(np.median(times)), jax.__version__


def bench_torch(batch, steps, threads):
    import diffusers
    import torch

    torch.set_num_threads(threads)
    model = diffusers.UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), dropout=0.1)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x0 = torch.rand(batch, 3, 32, 32) * 2 - 1
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)

    def step():
        t = torch.randint(0, 1000, (batch,))
        eps = torch.randn_like(x0)
        a = ab[t].sqrt()[:, None, None, None]
        s = (1 - ab[t]).sqrt()[:, None, None, None]
        loss = ((model(a * x0 + s * eps, t).sample - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    versions = f"torch {torch.__version__}, diffusers {diffusers.__version__}"
    return n_params, first, batch / float(np.median(times)), versions


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--bf16", action="store_true", help="also time bfloat16 compute (accelerators)")
    p.add_argument("--xla_flags", default="", help="XLA_FLAGS for the jax run, e.g. "
                   "--xla_cpu_experimental_onednn_custom_call=true (oneDNN convolutions on CPU)")
    a = p.parse_args()
    if a.xla_flags:  # before jax is imported (bench_jax imports it)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + a.xla_flags).strip()
    threads = os.cpu_count()
    print(f"| implementation | params | first step / compile (s) | images/s (median of {a.steps}) | versions |")
    print("|---|---|---|---|---|")
    n, c, ips, v = bench_jax(a.batch, a.steps)
    tag = f" ({a.xla_flags})" if a.xla_flags else ""
    print(f"| jaxdiff float32{tag} | {n:,} | {c:.1f} | {ips:.2f} | jax {v} |", flush=True)
    if a.bf16:
        n, c, ips2, v = bench_jax(a.batch, a.steps, "bfloat16")
        print(f"| jaxdiff bfloat16 | {n:,} | {c:.1f} | {ips2:.2f} | jax {v} |", flush=True)
    try:
        n, c, ips_t, v = bench_torch(a.batch, a.steps, threads)
        print(f"| diffusers UNet2DModel | {n:,} | {c:.1f} | {ips_t:.2f} | {v} |")
        print(f"\njaxdiff / PyTorch throughput: {ips / ips_t:.2f}x (batch {a.batch}, {threads} threads)")
    except ImportError as e:
        print(f"\n(PyTorch comparison skipped: {e}; pip install -e '.[bench]')")


if __name__ == "__main__":
    main()
