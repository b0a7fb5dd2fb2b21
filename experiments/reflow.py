"""Reflow (Liu et al. 2023, "Flow straight and fast"): couple noise with data through a trained flow's
probability-flow ODE and write the pairs; a new run trains on them (``data.pairs``), starting from the
parent's weights (``train.init_from``), and its paths are straighter.

    python -m experiments.reflow --workdir runs/digits_flow --num_pairs 20000
    python -m experiments.train --config experiments/configs/digits_flow.py:reflow --workdir runs/digits_flow_reflow \
        --config.data.pairs=runs/digits_flow/reflow/pairs_dpmpp_2m_20.npz --config.train.init_from=runs/digits_flow

Writes ``<workdir>/reflow/pairs_<sampler>_<steps>.npz`` (``noise``, ``x0``; never overwriting an earlier
file) and prints the parent's straightness (Liu et al.'s S, per dimension) on the first 256 pairs.
"""

import json
import os

import jax
import numpy as np
from absl import app, flags, logging

from experiments import common
from jaxdiff.models.model_fn import model_fn_for
from jaxdiff.outputs import save_npz
from jaxdiff.reflow import reflow_pairs, straightness
from jaxdiff.rng import Stream, run_key
from jaxdiff.training.build import example_input
from jaxdiff.training.restore import restore_trained

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of the trained parent flow (any diffusion workdir works).")
flags.DEFINE_integer("num_pairs", 20_000, "Pairs to generate.")
flags.DEFINE_string("sampler", "dpmpp_2m", "Deterministic sampler that solves the parent's ODE.")
flags.DEFINE_integer("num_steps", 20, "Its steps.")
flags.DEFINE_integer("batch_size", 1000, "Pairs per compiled call.")
flags.DEFINE_integer("seed", 0, "Seed of the noise.")
flags.DEFINE_string("out", None, "Output .npz (default: workdir/reflow/pairs_<sampler>_<steps>.npz).")
flags.DEFINE_string("options", "{}", "Extra sampler options as JSON.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    for name in ("num_pairs", "num_steps", "batch_size"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name}={getattr(FLAGS, name)}; allowed: an integer >= 1")
    config, model, schedule, params, step = restore_trained(FLAGS.workdir)
    prediction = config.diffusion.prediction
    options = dict(json.loads(FLAGS.options), num_steps=FLAGS.num_steps)
    gen = jax.jit(lambda p, z: reflow_pairs(model_fn_for(model, p), schedule, z, sampler=FLAGS.sampler,
                                            prediction=prediction, **options)[1])
    shape = example_input(config).shape[1:]
    key = run_key(FLAGS.seed, Stream.REFLOW)
    n, bs = FLAGS.num_pairs, min(FLAGS.batch_size, FLAGS.num_pairs)
    noise, x0 = [], []
    for i, b in enumerate(range(0, n, bs)):
        z = jax.random.normal(jax.random.fold_in(key, i), (bs,) + shape)
        noise.append(np.asarray(z))
        x0.append(np.asarray(gen(params, z)))
        logging.info("pairs %d / %d", min(b + bs, n), n)
    noise, x0 = np.concatenate(noise)[:n], np.concatenate(x0)[:n]
    s = straightness(model_fn_for(model, params), schedule, noise[:256], prediction=prediction)
    default = os.path.join(FLAGS.workdir, "reflow", f"pairs_{FLAGS.sampler}_{FLAGS.num_steps}.npz")
    common.check_finite(x0, f"the pairs' x0: sampler {FLAGS.sampler}, {FLAGS.num_steps} steps")
    out = save_npz(FLAGS.out or default, noise=noise, x0=x0, parent=os.path.abspath(FLAGS.workdir), step=step,
                   sampler=FLAGS.sampler, num_steps=FLAGS.num_steps, straightness=float(np.mean(s)))
    logging.info("step %d: wrote %d pairs to %s; parent straightness %.4f", step, n, out, float(np.mean(s)))
    print(json.dumps({"pairs": out, "num_pairs": n, "straightness": float(np.mean(s))}))


if __name__ == "__main__":
    common.run(main)
