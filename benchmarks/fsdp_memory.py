"""Per-device bytes of the training state (params + EMA + AdamW moments) under FSDP sharding on a mesh
of 8 devices, for the DDPM CIFAR-10 U-Net (35.7M params) and the digits U-Net: computed from the
shardings (``sharding.shard_shape``), nothing allocated.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/fsdp_memory.py
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments.configs import cifar10_ddpm, digits_ddpm  # noqa: E402
from jaxdiff.models import count_params  # noqa: E402
from jaxdiff.training import parallel  # noqa: E402
from jaxdiff.training.build import build_model  # noqa: E402
from jaxdiff.training.restore import state_template
from jaxdiff.training.tasks import DIFFUSION

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamp import stamp_line  # noqa: E402


def per_device_bytes(abstract, shardings):
    worst = 0
    for dev in shardings and jax.tree_util.tree_leaves(shardings)[0].mesh.devices.ravel():
        total = 0
        for x, s in zip(jax.tree_util.tree_leaves(abstract), jax.tree_util.tree_leaves(shardings)):
            if dev in s.device_set:
                total += int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
        worst = max(worst, total)
    return worst


def main():
    print(stamp_line("python benchmarks/fsdp_memory.py > benchmarks/results/fsdp_memory.md") + "\n")
    print("| model | params | state (params+EMA+Adam) | fsdp=1 per device | fsdp=2 | fsdp=4 | fsdp=8 "
          "| fsdp=8 / total |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cfg in (("DDPM CIFAR-10 U-Net", cifar10_ddpm.get_config()), ("digits U-Net", digits_ddpm.get_config())):
        model, _ = build_model(cfg)
        abstract = jax.eval_shape(lambda: state_template(cfg, DIFFUSION, model))
        total = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(abstract))
        row = []
        for f in (1, 2, 4, 8):
            mesh = parallel.make_mesh(-1, f)
            row.append(per_device_bytes(abstract, parallel.state_shardings(abstract, mesh)))
        mb = lambda b: f"{b / 2**20:.1f} MiB"
        print(f"| {name} | {count_params(abstract.params) / 1e6:.2f}M | {mb(total)} | "
              + " | ".join(mb(b) for b in row) + f" | {row[-1] / total:.3f} |")


if __name__ == "__main__":
    main()
