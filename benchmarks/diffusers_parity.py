"""jaxdiff against diffusers on the committed fixture (no torch needed): the converted UNet2DModel's outputs
(float32) and the DDPM / DDIM samplers against DDPMScheduler / DDIMScheduler (float64). Writes
``benchmarks/results/diffusers_parity.md``.

    python benchmarks/diffusers_parity.py
"""

from __future__ import annotations

import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamp import stamp_line, write_markdown  # noqa: E402

from jaxdiff.interop import diffusers_parity as parity  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "diffusers_unet_fixture.npz")


def main():
    fx = parity.load_fixture(FIXTURE)
    rows = [(f"UNet2DModel, {layout} layout (float32 outputs)", "max abs error",
             f"{parity.output_error(fx, name):.1e}") for name, layout in (("ddpm", "DDPM"), ("adm", "ADM-like"))]
    with jax.enable_x64(True):
        model = parity.model64(fx)
        for spacing in ("leading", "trailing"):
            for clip in (False, True):
                e = parity.ddim_error(fx, model, spacing, clip)
                assert e["same_grid"], (spacing, e)
                rows.append((f"DDIM eta 0, 10 steps, timestep_spacing={spacing}, clip_sample={clip}",
                             "trajectory, max rel error", f"{e['rel_error']:.1e}"))
        e = parity.ddim_eta_error(fx, model)
        rows.append(("DDIM eta 1, one step", "mean / std rel error", f"{e['mean']:.1e} / {e['std']:.1e}"))
        for case, (variance, clip) in parity.DDPM_CASES.items():
            e = parity.ddpm_error(fx, model, case)
            steps = "50 leading steps" if case.startswith("n50") else "1000 steps"
            rows.append((f"DDPM {steps}, variance_type={variance}, clip_sample={clip}", "mean / std rel error",
                         f"{e['mean']:.1e} / {e['std']:.1e}"))
    lines = ["# jaxdiff against diffusers (committed fixture)", "",
             stamp_line("python benchmarks/diffusers_parity.py"), "",
             "| comparison | measure | value |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    write_markdown(os.path.join(ROOT, "benchmarks", "results", "diffusers_parity.md"), lines)


if __name__ == "__main__":
    main()
