"""Train a noise-aware classifier for classifier guidance.

    python -m experiments.train_classifier --config experiments/configs/digits_classifier.py --workdir runs/digits_clf
"""

from absl import app, flags, logging
from ml_collections import config_flags

from jaxdiff.training.loop import train_classifier

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Classifier config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    logging.info("finished: %s", train_classifier(FLAGS.config, FLAGS.workdir))


if __name__ == "__main__":
    app.run(main)
