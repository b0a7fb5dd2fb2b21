"""Sample from a trained model (EMA params of the latest checkpoint) with any sampler.

    python -m experiments.sample --workdir runs/digits --sampler dpmpp_2m --num_steps 20

Writes ``samples/<sampler>_<steps>.png`` (a grid) and ``.npz`` (all samples in [-1, 1]) in the workdir,
never overwriting earlier files.
"""

import json
import os

import numpy as np
from absl import app, flags, logging

from jaxdiff.evaluation.grid import save_grid, unique_path
from jaxdiff.training.loop import generate, load_classifier, restore_trained, text_enabled

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints).")
flags.DEFINE_string("sampler", None, "Sampler name (default: the config's).")
flags.DEFINE_integer("num_steps", None, "Sampler steps (default: the config's).")
flags.DEFINE_integer("num_samples", None, "How many samples (default: the config's).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_string("out", None, "Output path stem (default: workdir/samples/<sampler>_<steps>).")
flags.DEFINE_float("clip_x0", None, "Clip the implied x0 to [-c, c] at every step (0: off; default: "
                   "the config's sample.clip_x0).")
flags.DEFINE_string("options", "{}", 'Extra sampler options as JSON, e.g. \'{"sigma_max": 80}\'.')
flags.DEFINE_integer("label", None, "Class label for a class-conditional model (-1: labels 0..9 in turn).")
flags.DEFINE_float("guidance_scale", 1.0, "Classifier-free guidance scale (1: plain conditional).")
flags.DEFINE_string("classifier_workdir", None, "Noise-aware classifier (experiments.train_classifier) for "
                    "classifier guidance; --guidance_scale is then the classifier scale.")
flags.DEFINE_string("prompt", None, "Text prompt for a text-conditioned model (digits_text).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    config, model, schedule, params, step = restore_trained(FLAGS.workdir)
    sampler = FLAGS.sampler or config.sample.sampler
    num_steps = FLAGS.num_steps or config.sample.num_steps
    n = FLAGS.num_samples or config.sample.num_samples
    labels, classifier_fn = None, None
    if FLAGS.classifier_workdir:
        classifier_fn, clf_config = load_classifier(FLAGS.classifier_workdir)
    if FLAGS.prompt is not None:
        if not text_enabled(config):
            raise ValueError(f"--prompt needs a text-conditioned model; {FLAGS.workdir} has no config.text")
        from jaxdiff.models.text import tokenize

        if len(FLAGS.prompt.encode("utf-8")) > config.text.max_len:
            raise ValueError(f"--prompt is {len(FLAGS.prompt.encode('utf-8'))} bytes; the text context "
                             f"holds at most text.max_len={config.text.max_len}")
        labels = np.repeat(tokenize([FLAGS.prompt], config.text.max_len), n, axis=0)
    elif FLAGS.label is not None:
        k = clf_config.num_classes if classifier_fn else config.model.get("num_classes")
        if not k:
            raise ValueError(f"--label needs a class-conditional model or --classifier_workdir; "
                             f"{FLAGS.workdir} has num_classes=None")
        if not -1 <= FLAGS.label < k:
            raise ValueError(f"--label={FLAGS.label}; allowed: 0..{k - 1}, or -1 for all classes in turn")
        labels = np.arange(n) % k if FLAGS.label == -1 else np.full(n, FLAGS.label)
    x = generate(config, model, schedule, params, sampler=sampler, num_steps=num_steps, num_samples=n,
                 labels=labels, guidance_scale=FLAGS.guidance_scale, classifier_fn=classifier_fn,
                 batch_size=config.sample.batch_size, seed=FLAGS.seed, clip_x0=FLAGS.clip_x0,
                 **json.loads(FLAGS.options))
    stem = FLAGS.out or os.path.join(FLAGS.workdir, "samples", f"{sampler}_{num_steps}")
    png = save_grid(x[:100], stem + ".png")
    npz = unique_path(stem + ".npz")
    np.savez_compressed(npz, samples=x, step=step, sampler=sampler, num_steps=num_steps, seed=FLAGS.seed)
    logging.info("step %d: wrote %s and %s", step, png, npz)
    print(npz)


if __name__ == "__main__":
    app.run(main)
