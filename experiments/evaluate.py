"""Evaluate a trained digits model: Fréchet distance vs the test split (and the train-vs-test floor),
classifier confidence and class balance of samples, test bits/dim (VLB); for an autoencoder workdir, the
test reconstruction PSNR / SSIM.

    python -m experiments.evaluate --workdir runs/digits [--samples runs/digits/samples/x.npz]

Writes ``eval/metrics_<sampler>_<steps>.json`` in the workdir (never overwriting) and prints it.

``--metric inception_fid``: the literature's protocol on any image workdir (jaxdiff.apps.inception):
N samples (default 50,000, resumable chunks), FID Inception features from pytorch-fid's weight file, FID against
``--ref_stats`` (an .npz of mu / sigma, e.g. a published one; ``train`` = the workdir's training images, which
adds KID and precision / recall):

    python -m experiments.evaluate --workdir runs/cifar10 --metric inception_fid \
        --inception_weights pt_inception-2015-12-05-6726825d.pth --ref_stats cifar10_train_stats.npz
"""

import json

from absl import app, flags

from experiments import common
from jaxdiff.apps.evaluate import evaluate

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
flags.DEFINE_enum("metric", "digits_fd", ["digits_fd", "inception_fid"], "digits_fd: the offline default (Fréchet "
                  "distance in the digits CNN's features, with its train-vs-test floor); inception_fid: the "
                  "literature's FID protocol (needs --inception_weights).")
flags.DEFINE_string("inception_weights", None, "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or its .npz).")
flags.DEFINE_string("ref_stats", "train", "inception_fid: reference .npz (mu, sigma), or 'train'.")
flags.DEFINE_integer("num_samples", 50_000, "inception_fid: samples generated.")
flags.DEFINE_integer("chunk_size", 1000, "inception_fid: samples per chunk file (the unit of resuming).")
flags.DEFINE_integer("seed", 1, "Sampling seed.")
flags.DEFINE_string("out", None, "Write the metrics to this .json path instead of the workdir's eval/ (e.g. for a "
                    "workdir on read-only storage); never overwriting.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    common.setup()
    common.check_count("num_steps", FLAGS.num_steps)
    common.check_clip(FLAGS.clip_x0)
    if FLAGS.sampler is not None or FLAGS.options != "{}":
        from jaxdiff.training.workdir import load_config

        common.sampler_options(FLAGS.options, FLAGS.sampler or load_config(FLAGS.workdir).sample.sampler)
    if FLAGS.metric == "inception_fid":
        from jaxdiff.apps.inception import evaluate_inception

        if not FLAGS.inception_weights:
            raise app.UsageError("--metric inception_fid needs --inception_weights (pytorch-fid's "
                                 "pt_inception-2015-12-05-6726825d.pth, downloaded by you)")
        m = evaluate_inception(FLAGS.workdir, FLAGS.inception_weights, FLAGS.ref_stats,
                               num_samples=FLAGS.num_samples, chunk_size=FLAGS.chunk_size, sampler=FLAGS.sampler,
                               num_steps=FLAGS.num_steps, seed=FLAGS.seed, clip_x0=FLAGS.clip_x0,
                               options=json.loads(FLAGS.options))
        print(json.dumps(m, indent=2))
        return
    m = evaluate(FLAGS.workdir, FLAGS.samples, FLAGS.sampler, FLAGS.num_steps, FLAGS.vlb, FLAGS.clip_x0,
                 json.loads(FLAGS.options), FLAGS.conditional, FLAGS.guidance_scale,
                 FLAGS.classifier_workdir, FLAGS.ode_bpd, seed=FLAGS.seed,
                 out=FLAGS.out and (FLAGS.out if FLAGS.out.endswith(".json") else FLAGS.out + ".json"))
    print(json.dumps(m, indent=2))


if __name__ == "__main__":
    common.run(main)
