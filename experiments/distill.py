"""Progressive distillation (Salimans & Ho 2022) in rounds: each round is a resumable training run whose
student starts from its teacher's EMA params and learns two teacher DDIM steps in one; the next round's teacher
is this round's EMA student. Round N (the student's step count) is written to ``<workdir>/round_<N>``; a
finished round is skipped, an interrupted one resumes from its latest checkpoint.

    python -m experiments.distill --teacher runs/digits_v --workdir runs/digits_v_distill \
        --teacher_steps 256 --target_steps 1

Students sample with DDIM on the trailing grid t = i / N (``--sampler ddim --num_steps N --options
'{"spacing": "trailing"}'``, the default of each round's config).
"""

import os
import time

from absl import app, flags, logging

from experiments import common
from jaxdiff.distill import check_student, round_schedule
from jaxdiff.training.loop import train_and_evaluate
from jaxdiff.training.workdir import load_config

FLAGS = flags.FLAGS
flags.DEFINE_string("teacher", None, "Workdir of the teacher (a v- or x0-prediction diffusion model).")
flags.DEFINE_string("workdir", None, "Directory of the rounds (round_<N> each).")
flags.DEFINE_integer("teacher_steps", 256, "The teacher's DDIM steps; the first student takes half of them.")
flags.DEFINE_integer("target_steps", 1, "The last student's steps (teacher_steps / target_steps: a power of 2).")
flags.DEFINE_integer("steps_per_round", 2000, "Training steps of each round.")
flags.DEFINE_float("learning_rate", None, "Learning rate of each round (default: the teacher's).")
flags.DEFINE_integer("batch_size", None, "Batch size of each round (default: the teacher's).")
flags.mark_flags_as_required(["teacher", "workdir"])


def round_config(base, teacher: str, student_steps: int, num_steps: int, learning_rate=None, batch_size=None):
    """The config of one round: the teacher's, distilling ``teacher`` into ``student_steps`` DDIM steps."""
    c = base.copy_and_resolve_references()
    c.task = "progressive_distillation"
    c.distill.teacher, c.distill.student_steps = teacher, student_steps
    c.train.init_from, c.train.num_steps = teacher, num_steps
    c.train.checkpoint_every = min(c.train.checkpoint_every, num_steps)
    c.train.sample_every = min(c.train.sample_every, num_steps)
    c.train.snapshot_every = 0
    c.optim.warmup_steps = min(c.optim.warmup_steps, num_steps // 10)
    c.optim.decay_steps = num_steps if c.optim.decay_steps else 0
    c.optim.posthoc_ema = ()
    if learning_rate:
        c.optim.learning_rate = learning_rate
    if batch_size:
        c.optim.batch_size = batch_size
    c.sample.sampler, c.sample.num_steps = "ddim", student_steps
    c.sample.options = {"spacing": "trailing"}
    return c


def finished(workdir: str, num_steps: int) -> bool:
    from jaxdiff.training.checkpoint import Checkpointer
    from jaxdiff.training.workdir import checkpoint_dir

    if not os.path.isdir(checkpoint_dir(workdir)):
        return False
    ckpt = Checkpointer(checkpoint_dir(workdir))
    try:
        return (ckpt.latest_step() or 0) >= num_steps
    finally:
        ckpt.close()


def main(argv):
    del argv
    common.setup()
    rounds = round_schedule(FLAGS.teacher_steps, FLAGS.target_steps)  # a bad count is named before training
    if not os.path.isdir(os.path.join(FLAGS.teacher, "checkpoints")):
        raise app.UsageError(f"--teacher={FLAGS.teacher!r} is not a workdir with checkpoints")
    base = load_config(FLAGS.teacher)
    check_student(base.diffusion.prediction, rounds[0])
    base.task, base.distill.teacher, base.distill.student_steps = "diffusion", "", 0
    teacher = FLAGS.teacher
    for n in rounds:
        wd = os.path.join(FLAGS.workdir, f"round_{n:04d}")
        if finished(wd, FLAGS.steps_per_round):
            logging.info("round %d: finished in %s", n, wd)
        else:
            t0 = time.time()
            c = round_config(base, teacher, n, FLAGS.steps_per_round, FLAGS.learning_rate, FLAGS.batch_size)
            train_and_evaluate(c, wd)
            logging.info("round %d: %d steps in %.0f s -> %s", n, FLAGS.steps_per_round, time.time() - t0, wd)
        teacher = wd
    print(teacher)


if __name__ == "__main__":
    common.run(main)
