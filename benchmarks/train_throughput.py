"""Train-step throughput of the DDPM CIFAR-10 U-Net (35.7M params): jaxdiff vs diffusers (PyTorch).

    pip install -e ".[bench]"            # torch==2.13.0 (CPU) and diffusers, for the comparison only
    python benchmarks/train_throughput.py --batch 8 --steps 5
    python benchmarks/train_throughput.py --device_report     # on a GPU: batch 128, fp32 + bf16, MFU

Both run the same architecture (diffusers' google/ddpm-cifar10-32 layout), eps-MSE loss, Adam, the same
batch and thread count, in one process; prints images/s and compile (first-step) time. Without torch
installed only the jaxdiff rows are printed.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

# Dense peak TFLOP/s by device kind (vendor datasheets, SXM parts): bf16 tensor cores, TF32 tensor cores.
PEAKS = {"H100": (989.4, 494.7), "H200": (989.4, 494.7), "A100": (312.0, 156.0), "V5E": (197.0, 197.0)}


def peak_tflops(device_kind: str, dtype: str):
    for name, (bf16, tf32) in PEAKS.items():
        if name.lower() in device_kind.lower().replace(" ", ""):
            return bf16 if dtype == "bfloat16" else tf32
    return float("nan")


def bench_jax(batch, steps, dtype="float32", flops=False):
    import jax
    import jax.numpy as jnp

    from jaxdiff import losses, schedules
    from jaxdiff.models import UNet, count_params, ddpm_cifar10_config
    from jaxdiff.models.model_fn import model_fn_for
    from jaxdiff.training import batch_loss, create_train_state, make_optimizer, make_train_step

    model = UNet(ddpm_cifar10_config(dropout=0.1, dtype=dtype))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,)))["params"]
    sched = schedules.get_schedule("linear")

    def apply_fn(p, x, t, cond, keys):  # per-example dropout keys, as the training loop applies the network
        return model_fn_for(model, p, train=True, dropout_keys=keys)(x, t, cond)

    tx = make_optimizer(2e-4, 5000)
    step = jax.jit(make_train_step(batch_loss(losses.make_loss(apply_fn, sched)), tx), donate_argnums=(0,))
    state = create_train_state(params, tx, 0)
    b = {"x": jax.random.uniform(jax.random.PRNGKey(1), (batch, 32, 32, 3), minval=-1, maxval=1),
         "index": jnp.arange(batch)}
    t0 = time.perf_counter()
    lowered = step.lower(state, b)
    if flops == "only":  # XLA's count on the lowered (pre-optimisation) HLO: device-independent
        cost = lowered.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return count_params(params), float(cost.get("flops", float("nan")))
    compiled = lowered.compile()
    state, m = compiled(state, b)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    step_flops = float("nan")
    if flops:  # the whole step (forward, backward, optimizer), counted on the HLO before backend passes:
        # after them, GPU convolutions are cuDNN custom calls whose FLOPs XLA does not count
        cost = lowered.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        step_flops = float(cost.get("flops", float("nan")))
    step = compiled
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = step(state, b)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    if flops:
        return count_params(params), compile_s, batch / float(np.median(times)), jax.__version__, step_flops
    return count_params(params), compile_s, batch / float(np.median(times)), jax.__version__


def bench_torch(batch, steps, threads, device="cpu", bf16=False):
    import diffusers
    import torch

    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = diffusers.UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), dropout=0.1).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x0 = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, device=device), 0)

    def step():
        t = torch.randint(0, 1000, (batch,), device=device)
        eps = torch.randn_like(x0)
        a = ab[t].sqrt()[:, None, None, None]
        s = (1 - ab[t]).sqrt()[:, None, None, None]
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            out = model(a * x0 + s * eps, t).sample
        loss = ((out.float() - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    for _ in range(2 if device == "cuda" else 0):  # cuDNN autotuning / allocator warm-up
        step()
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    versions = f"torch {torch.__version__}, diffusers {diffusers.__version__}"
    return n_params, first, batch / float(np.median(times)), versions


def device_report(batch, steps):
    """Accelerator figures: steps/s at the DDPM batch (128), float32 and bfloat16 compute, XLA's FLOP count
    of the step and the model FLOP utilization against the device's dense peak; PyTorch beside it."""
    import jax

    kind = jax.devices()[0].device_kind
    print(f"device: {kind}, jax {jax.__version__}, backend {jax.default_backend()}, batch {batch}")
    print("| implementation | compute dtype | compile (s) | steps/s | images/s | TFLOP/step | TFLOP/s | "
          "MFU (peak) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = {}
    for dtype in ("float32", "bfloat16"):
        n, c, ips, v, fl = bench_jax(batch, steps, dtype, flops=True)
        peak = peak_tflops(kind, dtype)
        tfs = fl * ips / batch / 1e12
        rows[dtype] = ips
        print(f"| jaxdiff | {dtype} | {c:.1f} | {ips / batch:.2f} | {ips:.0f} | {fl / 1e12:.3f} | {tfs:.1f} | "
              f"{tfs / peak:.1%} ({peak:g}) |", flush=True)
    try:
        for bf16 in (False, True):
            n, c, ips_t, v = bench_torch(batch, steps, os.cpu_count(), "cuda", bf16)
            dtype = "bfloat16" if bf16 else "float32"
            label = dtype + (" (autocast)" if bf16 else "")
            print(f"| diffusers UNet2DModel ({v}) | {label} | {c:.1f} | {ips_t / batch:.2f} | {ips_t:.0f} | | | |",
                  flush=True)
            print(f"jaxdiff / PyTorch ({dtype}): {rows[dtype] / ips_t:.2f}x", flush=True)
    except Exception as e:  # noqa: BLE001 - the comparison is optional
        print(f"(PyTorch comparison skipped: {type(e).__name__}: {e})")
    print("anchor: DDPM (Ho et al. 2020) trained this network at 21 steps/s, batch 128, on a TPU v3-8")


def flop_report(batch=128, h200_file=os.path.join(os.path.dirname(__file__), "results", "train_throughput_h200.txt")):
    """FLOPs of the whole train step (forward, backward, AdamW, EMA) counted by XLA on the lowered HLO, which
    does not depend on the device (after GPU backend passes, cuDNN convolutions are custom calls that count
    nothing); XLA counts a multiply-add as 2 FLOPs. MFU is derived from these counts and the steps/s recorded
    on the H200 (``train_throughput_h200.txt``), against the dense peak of the compute dtype."""
    import re
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from stamp import stamp_line

    print(stamp_line("python benchmarks/train_throughput.py --flops > benchmarks/results/train_flops.md") + "\n")
    recorded = {}
    for line in open(h200_file):
        m = re.match(r"\| jaxdiff \| (float32|bfloat16) \| [\d.]+ \| ([\d.]+) \|", line)
        if m:
            recorded[m.group(1)] = float(m.group(2))
    print(f"DDPM CIFAR-10 U-Net train step at batch {batch}; FLOPs from the lowered HLO (multiply-add = 2 FLOPs)")
    print("| compute | params | TFLOP / step | GFLOP / image | H200 steps/s (recorded) | TFLOP/s | MFU (dense peak) |")
    print("|---|---|---|---|---|---|---|")
    for dtype in ("float32", "bfloat16"):
        n, fl = bench_jax(batch, 0, dtype, flops="only")
        sps = recorded.get(dtype, float("nan"))
        peak = peak_tflops("H200", dtype)
        print(f"| {dtype} | {n:,} | {fl / 1e12:.3f} | {fl / batch / 1e9:.1f} | {sps} | {fl * sps / 1e12:.1f} | "
              f"{100 * fl * sps / 1e12 / peak:.1f}% of {peak} |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--bf16", action="store_true", help="also time bfloat16 compute (accelerators)")
    p.add_argument("--xla_flags", default="", help="XLA_FLAGS for the jax run, e.g. "
                   "--xla_cpu_experimental_onednn_custom_call=true (oneDNN convolutions on CPU)")
    p.add_argument("--flops", action="store_true", help="FLOPs of the step on the lowered HLO and the MFU derived "
                   "from the recorded H200 steps/s (no device needed)")
    p.add_argument("--device_report", action="store_true", help="accelerator figures at batch 128 (--batch "
                   "overrides): steps/s in float32 and bfloat16, FLOPs, MFU, PyTorch on CUDA beside it")
    a = p.parse_args()
    if a.flops:
        return flop_report(a.batch if a.batch != 8 else 128)
    if a.device_report:
        return device_report(a.batch if a.batch != 8 else 128, a.steps if a.steps != 5 else 20)
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
