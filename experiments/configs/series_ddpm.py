"""DDPM on real time series (statsmodels' sunspots, CO2, El Nino, Nile, US unemployment and inflation):
one 1-D U-Net for all series over context-normalised windows of 32 values, used for probabilistic
forecasting (the last 8 values imputed from the first 24, DDPM 100 steps, RePaint r = 5) and gap filling.

These defaults were chosen on the validation split (``--config.data.config=32_8_val``: each series'
training part, its last 20% held out; README "Imputation"): by the geometric mean over series of
CRPS / CRPS(AR), one model for all series 1.005 (r = 5, 100 steps) / 1.101 (r = 2, 50 steps) beat the
class-conditional model (label = the series; ``--config.data.use_labels=True --config.model.num_classes=6``)
1.066 / 1.137, which memorised the Nile's 33 training windows (a level drop) and lost to the naive forecast.

    python -m experiments.train --config experiments/configs/series_ddpm.py --workdir runs/series
    python -m experiments.forecast --workdir runs/series          # CRPS / MSE table vs seasonal-naive and AR
"""

import ml_collections

from experiments.configs import digits_ddpm


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = digits_ddpm.get_config("smoke" if variant == "smoke" else "")
    if variant not in ("", "smoke"):
        raise ValueError(f"unknown config variant {variant!r}; allowed: '', 'smoke'")
    c.data.name = "series"
    c.data.config = "32_8"  # window_horizon
    c.data.key = "series"
    c.data.num_levels = 0  # continuous values
    c.data.use_labels = False  # one model for all series (see the docstring)
    c.data.random_flip = False

    m = c.model
    m.dims = 1
    m.image_size = 32  # the window length
    m.in_channels = 1
    m.channel_mult = (1, 2, 2)
    m.attention_resolutions = (8,)
    m.num_classes = 0  # 6 with data.use_labels: the series id as the class
    if variant != "smoke":
        m.base_channels = 64
        m.dropout = 0.1

    c.diffusion.schedule = "cosine"
    c.sample.clip_x0 = 0.0  # normalised values are not bounded
    c.sample.sampler = "ddpm"
    if variant != "smoke":
        c.sample.num_steps = 100
    c.optim.learning_rate = 1e-3

    c.forecast.horizon = 8
    c.forecast.num_samples = 100
    c.forecast.sampler = "ddpm"
    c.forecast.num_steps = 100
    c.forecast.resample = 5  # RePaint passes per segment (1 = replacement only)
    c.forecast.jump_length = 10
    c.forecast.clip_x0 = 10.0  # bound the implied x0 (normalised windows stay within ~8): the first steps from
    # t = 1, where alpha ~ 0.006, otherwise amplify eps errors 160x and a 50-step sampler diverges
    if variant == "smoke":
        c.forecast.num_samples = 4
        c.forecast.num_steps = 4
        c.forecast.jump_length = 2
        c.forecast.resample = 2
    return c
