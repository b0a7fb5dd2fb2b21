"""Collect the forecast tables that ``experiments.forecast`` wrote into workdirs (``eval/forecast_*.md``)
into one stamped results file, each under its workdir, its file and the model's training config line.

    python benchmarks/collect_forecasts.py runs/csdi_val runs/csdi_full > benchmarks/results/forecast_csdi.md
"""

import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamp import stamp_line  # noqa: E402


def main(workdirs):
    print(stamp_line("python benchmarks/collect_forecasts.py " + " ".join(workdirs)) + "\n")
    for wd in workdirs:
        with open(os.path.join(wd, "config.json")) as f:
            c = json.load(f)
        print(f"# {wd}: data {c['data']['config']}, {c['train']['num_steps']} steps, conditional imputation "
              f"{c['imputation']['conditional']}, mask proportions {c['imputation']['mask_probs']} (random, block, "
              f"forecast), horizon {c['imputation']['horizon']}\n")
        for path in sorted(glob.glob(os.path.join(wd, "eval", "forecast_*.md")), key=os.path.getmtime):
            print(f"== {path}")
            print(open(path).read())


if __name__ == "__main__":
    main(sys.argv[1:])
