"""Noise-aware digits classifier for classifier guidance (Dhariwal & Nichol 2021), trained on x_t of the
digits under the schedule of digits_ddpm.py, then used to guide the unconditional digits model.

    python -m experiments.train_classifier --config experiments/configs/digits_classifier.py --workdir runs/digits_clf
    python -m experiments.sample --workdir runs/digits --label -1 \
        --classifier_workdir runs/digits_clf --guidance_scale 2
"""

from experiments.configs import digits_ddpm


def get_config(variant: str = ""):
    c = digits_ddpm.get_config(variant)
    c.data.use_labels = True
    c.model.attention_resolutions = ()
    c.model.num_res_blocks = 1
    c.optim.learning_rate = 1e-3
    c.optim.decay_steps = 0
    c.train.num_steps = 2000 if not variant else 4
    c.task = "classifier"
    c.classifier.num_classes = 10
    return c
