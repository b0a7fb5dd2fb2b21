"""Post-hoc EMA (Karras et al. 2024, EDM2 Sec. 3): choose the EMA length after training. Reconstructs the
power-function EMA of relative width ``--sigma_rel`` from the snapshots a run saved (``optim.posthoc_ema``,
``train.snapshot_every``) and writes it as a new workdir that ``experiments.sample`` / ``experiments.evaluate``
read like any run:

    python -m experiments.posthoc_ema --workdir runs/digits_edm --sigma_rel 0.08
    python -m experiments.evaluate --workdir runs/digits_edm/posthoc_ema/sigma_rel_0.080

A sigma_rel whose profile the snapshots cannot reproduce (relative profile error above --tol) is an error
naming the reachable range; an existing output is never overwritten.
"""

import json

from absl import flags

from experiments import common
from jaxdiff.training.ema import PROFILE_TOL
from jaxdiff.training.restore import write_posthoc_workdir

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of a run trained with optim.posthoc_ema set.")
flags.DEFINE_float("sigma_rel", None, "Relative EMA width to reconstruct, in (0, sqrt(1/12)) (EDM2: 0.05-0.15).")
flags.DEFINE_integer("step", None, "Training step of the reconstruction (default: the last snapshot).")
flags.DEFINE_string("out", None, "Output workdir (default: <workdir>/posthoc_ema/sigma_rel_<sigma_rel>).")
flags.DEFINE_float("tol", PROFILE_TOL, "Largest relative profile error accepted.")
flags.mark_flags_as_required(["workdir", "sigma_rel"])


def main(argv):
    del argv
    out, info = write_posthoc_workdir(FLAGS.workdir, FLAGS.sigma_rel, FLAGS.out, FLAGS.step, FLAGS.tol)
    print(json.dumps({"workdir": out, **{k: v for k, v in info.items() if k != "coefficients"}}))


if __name__ == "__main__":
    common.run(main)
