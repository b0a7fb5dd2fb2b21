"""Digit inpainting: replacement / RePaint with the unconditional main-job model against the conditional
(CSDI-style) model of ``digits_csdi.py``, on 50 test digits, 4 completions each, per mask: the
feature classifier's accuracy on the completions against the original digit's label (does the completion keep
the digit?), and the RMSE of the filled pixels to the original (in [-1, 1]); NFE per completion.

    python benchmarks/inpainting.py --repaint runs/digits --conditional runs/digits_csdi \
        > benchmarks/results/inpainting.md
"""

import argparse
import os
import sys
import time

import numpy as np

from jaxdiff.apps.evaluate import feature_net_name
from jaxdiff.data.pipeline import default_data_dir
from jaxdiff.evaluation.evaluate import label_accuracy
from jaxdiff.training.build import build_pipeline
from jaxdiff.training.generate import inpaint_test_images
from jaxdiff.training.restore import restore_trained

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamp import stamp_line  # noqa: E402

REGIONS = ("right", "bottom", "center", "random")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repaint", required=True, help="workdir of an unconditional model")
    ap.add_argument("--conditional", required=True, help="workdir of a conditional imputation model")
    ap.add_argument("--num_images", type=int, default=50)
    ap.add_argument("--per_image", type=int, default=4)
    a = ap.parse_args()
    print(stamp_line("python benchmarks/inpainting.py " + " ".join(sys.argv[1:]) +
                     " > benchmarks/results/inpainting.md") + "\n")
    runs = [(a.repaint, "replacement (RePaint r = 1)", "ddpm", 100, 1), (a.repaint, "RePaint r = 5", "ddpm", 100, 5),
            (a.conditional, "conditional model, one pass", "ddpm", 100, 1),
            (a.conditional, "conditional model, one pass", "dpmpp_2m", 20, 1)]
    print("| method | sampler | steps | NFE | " + " | ".join(f"{r}: accuracy / RMSE" for r in REGIONS) + " | seconds |")
    print("|---|---|---|---|" + "---|" * len(REGIONS) + "---|")
    for wd, method, sampler, steps, r in runs:
        config, model, schedule, params, _ = restore_trained(wd)
        train = build_pipeline(config, "train", 1)
        cells, t0 = [], time.time()
        for region in REGIONS:
            out = inpaint_test_images(config, model, schedule, params, region, sampler=sampler, num_steps=steps,
                                      resample=r, jump_length=10, num_images=a.num_images, per_image=a.per_image)
            acc = label_accuracy(out["samples"], np.repeat(out["labels"], a.per_image), train.all_images(),
                                 train.all_labels(),
                                 num_levels=config.data.num_levels,
                                 cache_dir=config.data.data_dir or default_data_dir(),
                                 cache_name=feature_net_name(config))
            x0 = np.repeat(out["x0"], a.per_image, axis=0)
            hole = np.broadcast_to(1 - out["mask"], x0.shape) > 0
            rmse = float(np.sqrt(((out["samples"] - x0)[hole] ** 2).mean()))
            cells.append(f"{100 * acc:.1f}% / {rmse:.3f}")
        nfe = steps * r if r > 1 else steps
        print(f"| {method} | {sampler} | {steps} | {nfe} | " + " | ".join(cells) + f" | {time.time() - t0:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
