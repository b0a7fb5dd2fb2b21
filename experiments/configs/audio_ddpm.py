"""DDPM on audio: a 1-D U-Net over 512-sample segments (0.128 s at 4 kHz) of a WAV folder (a CPU-sized
default; raise data.rate / data.length / model.channel_mult on an accelerator).

    python -m experiments.train --config experiments/configs/audio_ddpm.py --workdir runs/audio \\
        [--config.data.audio_dir=/path/to/wavs]
    python -m experiments.sample --workdir runs/audio     # WAV files + spectrograms beside a training one

With ``data.audio_dir`` empty it trains on synthetic notes (pentatonic pitches with harmonics and decay,
:func:`jaxdiff.data.audio.make_tones`) written into the data dir, so it runs offline.
"""

import ml_collections

from experiments.configs import digits_ddpm


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke"):
        raise ValueError(f"unknown config variant {variant!r}; allowed: '', 'smoke'")
    smoke = variant == "smoke"
    c = digits_ddpm.get_config(variant)
    c.data.name = "audio"
    c.data.audio_dir = ""  # a folder of 16-bit PCM WAV files (recursive); empty: synthetic tones
    c.data.rate = 4000
    c.data.length = 256 if smoke else 512
    c.data.key = "audio"
    c.data.num_levels = 0  # continuous samples in [-1, 1]
    c.data.use_labels = False
    c.data.random_flip = False

    m = c.model
    m.dims = 1
    m.image_size = c.data.length
    m.in_channels = 1
    m.channel_mult = (1, 2) if smoke else (1, 2, 2, 2)
    m.attention_resolutions = (128,) if smoke else (64,)
    m.base_channels = 16 if smoke else 32
    m.num_res_blocks = 1

    c.diffusion.schedule = "cosine"
    c.optim.batch_size = 8 if smoke else 16
    c.optim.learning_rate = 1e-3
    c.train.num_steps = 6 if smoke else 1000
    c.optim.decay_steps = 0 if smoke else 1000
    c.train.checkpoint_every = 3 if smoke else 500
    c.train.sample_every = 4 if smoke else 500
    c.sample.sampler = "ddpm"  # ancestral: less noise than DPM-Solver++(2M) at 50 steps on this small model
    c.sample.num_steps = 4 if smoke else 250
    c.sample.num_samples = 8 if smoke else 16
    c.sample.batch_size = 8 if smoke else 16
    c.train.num_grid_samples = 4 if smoke else 16
    return c
