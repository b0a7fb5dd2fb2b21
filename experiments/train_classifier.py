"""Train a noise-aware classifier for classifier guidance: the ``classifier`` task of the task table, the
same loop as every other model (EMA, Orbax checkpoints, exact resume).

    python -m experiments.train_classifier --config experiments/configs/digits_classifier.py --workdir runs/digits_clf

Equivalent to ``python -m experiments.train`` with a config whose ``task`` is ``"classifier"``.
"""

from experiments import common, train

if __name__ == "__main__":
    common.run(train.main)
