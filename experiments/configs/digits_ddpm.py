"""DDPM on scikit-learn's 8x8 digits: the default, CPU-friendly experiment (the README's main job).

    python -m experiments.train --config experiments/configs/digits_ddpm.py --workdir runs/digits
    python -m experiments.sample --workdir runs/digits --sampler dpmpp_2m --num_steps 20
    python -m experiments.evaluate --workdir runs/digits

Override any field: ``--config.train.num_steps=200``; ``--config=...digits_ddpm.py:smoke`` is a seconds-
long run for tests and laptops.
"""

import ml_collections

from experiments.configs import default


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = default.get_config()
    c.seed = 0

    c.data.name = "digits"
    c.data.config = "8"  # builder config: image size 8, 16 or 32
    c.data.data_dir = ""  # default: $JAXDIFF_DATA_DIR or ~/jaxdiff_data
    c.data.num_levels = 17  # digits take the values 0..16
    c.data.random_flip = False  # digits are not mirror-symmetric
    c.data.use_labels = False

    c.model.image_size = 8
    c.model.in_channels = 1
    c.model.base_channels = 32
    c.model.channel_mult = (1, 2)
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (4,)
    c.model.num_heads = 4
    c.model.dropout = 0.0
    c.model.scale_shift = True
    c.model.num_classes = None
    c.model.learned_variance = False
    c.model.dtype = "float32"
    c.model.num_groups = 8

    c.diffusion.schedule = "cosine"
    c.diffusion.num_steps = 1000  # T of the discrete schedule
    c.diffusion.prediction = "eps"
    c.diffusion.loss_type = "mse"
    c.diffusion.weighting = "uniform"
    c.diffusion.variance = "fixed_small"

    c.optim.batch_size = 64
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 200
    c.optim.decay_steps = 4000  # 0: constant after warm-up; else cosine decay to 0 at this step
    c.optim.grad_clip = 1.0
    c.optim.weight_decay = 0.0
    c.optim.ema_decay = 0.999

    c.train.num_steps = 4000
    c.train.steps_per_jit = 1
    c.train.log_every = 200
    c.train.sample_every = 1000
    c.train.checkpoint_every = 1000
    c.train.keep_checkpoints = 3
    c.train.num_grid_samples = 64

    c.sample.sampler = "dpmpp_2m"
    c.sample.num_steps = 20
    c.sample.num_samples = 1000
    c.sample.batch_size = 500
    c.sample.clip_x0 = 1.0  # clip the implied x0 to the data range at every step (0: off)

    c.eval.num_samples = 1000
    c.eval.vlb_examples = 300
    c.eval.bootstrap = 200

    if variant == "smoke":
        c.model.base_channels = 16
        c.model.num_res_blocks = 1
        c.model.num_heads = 1
        c.model.num_groups = 4
        c.optim.batch_size = 16
        c.optim.warmup_steps = 2
        c.optim.decay_steps = 0
        c.train.num_steps = 6
        c.train.steps_per_jit = 1
        c.train.log_every = 2
        c.train.sample_every = 4
        c.train.checkpoint_every = 3
        c.train.num_grid_samples = 4
        c.sample.num_steps = 4
        c.sample.num_samples = 32
        c.sample.batch_size = 32
        c.eval.num_samples = 32
        c.eval.vlb_examples = 16
        c.eval.bootstrap = 10
        c.diffusion.num_steps = 50
        c.parallel.mode = "jit"  # one device: smoke runs test the code path, pmap / mesh have their own tests
    elif variant:
        raise ValueError(f"unknown config variant {variant!r}; allowed: '', 'smoke'")
    return c
