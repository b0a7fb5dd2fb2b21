"""One reflow round of the digits flow (Liu et al. 2023): ``digits_flow.py:reflow`` under its own name.

    python -m experiments.reflow --workdir runs/digits_flow --num_pairs 10000
    python -m experiments.train --config experiments/configs/digits_flow_reflow.py --workdir runs/digits_flow_reflow
"""

from experiments.configs import digits_flow


def get_config(variant: str = ""):
    return digits_flow.get_config(",".join(["reflow"] + [v for v in variant.split(",") if v]))
