"""Evaluate a trained digits model: Fréchet distance vs the test split (and the train-vs-test floor),
classifier confidence and class balance of samples, test bits/dim (VLB); for an autoencoder workdir, the
test reconstruction PSNR / SSIM.

    python -m experiments.evaluate --workdir runs/digits [--samples runs/digits/samples/x.npz]

Writes ``eval/metrics_<sampler>_<steps>.json`` in the workdir (never overwriting) and prints it.
"""

import json

from absl import app, flags

from jaxdiff.evaluation.workdir import evaluate

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir.")
flags.DEFINE_string("samples", None, ".npz of samples from experiments.sample (default: generate).")
flags.DEFINE_string("sampler", None, "Sampler when generating (default: the config's).")
flags.DEFINE_integer("num_steps", None, "Sampler steps when generating (default: the config's).")
flags.DEFINE_bool("vlb", True, "Also compute the test bits/dim: the VLB over all T steps (discrete schedules) "
                  "and the probability-flow ODE's (see --ode_bpd).")
flags.DEFINE_bool("ode_bpd", None, "Test bits/dim of the probability-flow ODE with uniform dequantization and "
                  "Hutchinson's estimator (default: on for continuous schedules).")
flags.DEFINE_float("clip_x0", None, "Clip the implied x0 to [-c, c] at every step (0: off; default: "
                   "the config's sample.clip_x0).")
flags.DEFINE_string("options", "{}", 'Extra sampler options as JSON, e.g. \'{"sigma_max": 80}\'.')
flags.DEFINE_bool("conditional", False, "Class-conditional model: draw labels 0..K-1 in turn and report "
                  "the classifier's accuracy against them.")
flags.DEFINE_float("guidance_scale", 1.0, "Classifier-free guidance scale with --conditional.")
flags.DEFINE_string("classifier_workdir", None, "Noise-aware classifier (experiments.train_classifier) for "
                    "classifier guidance; --guidance_scale is then the classifier scale.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    m = evaluate(FLAGS.workdir, FLAGS.samples, FLAGS.sampler, FLAGS.num_steps, FLAGS.vlb, FLAGS.clip_x0,
                 json.loads(FLAGS.options), FLAGS.conditional, FLAGS.guidance_scale,
                 FLAGS.classifier_workdir, FLAGS.ode_bpd)
    print(json.dumps(m, indent=2))


if __name__ == "__main__":
    app.run(main)
