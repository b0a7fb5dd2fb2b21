"""Train any task of the task table (a diffusion model, an autoencoder, a noise-aware classifier).

    python -m experiments.train --config experiments/configs/digits_ddpm.py --workdir runs/digits

Resumes from the latest checkpoint in --workdir; refuses a workdir that holds another config's run.

Many hosts: run the same command on every host with ``--coordinator=auto`` (TPU VM slices, SLURM) or
``--coordinator=host0:1234 --num_processes=N --process_id=i`` (or the environment variables
JAXDIFF_COORDINATOR / JAXDIFF_NUM_PROCESSES / JAXDIFF_PROCESS_ID); ``--config.parallel.mode=mesh
--config.parallel.fsdp=8`` shards params and optimizer state over 8 devices.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import common
from jaxdiff.training.loop import train_and_evaluate
from jaxdiff.training.schema import check_config

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, samples and TensorBoard logs.")
flags.DEFINE_string("coordinator", None, "host:port of process 0 for multi-process runs, or 'auto'.")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")
flags.DEFINE_integer("heartbeat_timeout", 100, "Seconds after which a dead process stops all others.")
flags.mark_flags_as_required(["config", "workdir"])


def quiet_orbax():
    """Orbax logs every checkpoint step at INFO through absl; keep only its warnings."""
    import logging as std_logging

    class _Filter(std_logging.Filter):
        def filter(self, record):
            return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname

    for h in std_logging.getLogger().handlers + std_logging.getLogger("absl").handlers:
        h.addFilter(_Filter())


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    quiet_orbax()
    common.setup()
    from jaxdiff.training.parallel import initialize

    initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id,
               heartbeat_timeout_s=FLAGS.heartbeat_timeout)
    check_config(FLAGS.config)  # a misspelled field is named before anything is built
    metrics = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    logging.info("finished: %s", metrics)


if __name__ == "__main__":
    common.run(main)
