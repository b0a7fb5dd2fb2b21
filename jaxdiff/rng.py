"""Named random streams: the one place that lists which ``fold_in`` number feeds which draw.

Every random draw in jaxdiff takes a typed ``jax.random`` key. A run derives its streams from one seed by
name, ``run_key(seed, Stream.INIT)``, never by seed arithmetic (``seed + 1`` would make neighbouring seeds
share streams). Inside a loss, each example's key (folded from its global index) is split into the
per-example streams below, so an example's draws do not depend on the batch it sits in.
"""

from __future__ import annotations

import enum

import jax


class Stream(enum.IntEnum):
    # Per-example streams inside a loss (folded into the example's key). Their numbers are part of the
    # reproducibility contract: changing one changes every trained model.
    TIME = 0  # t (or the noise level) of the example
    NOISE = 1  # eps of q(x_t | x0)
    DROPOUT = 2  # the network's dropout masks
    PRIOR_NOISE = 3  # the second noise draw of a loss (VDM's decoder eps)
    COND_DROP = 4  # classifier-free guidance's condition dropout
    DEQUANT = 5  # uniform dequantization
    MASK = 6  # the observation mask of a conditional imputation model's example (CSDI-style training)
    # Run-level streams (folded into key(seed)).
    INIT = 100  # network initialisation
    TRAIN = 101  # the TrainState's key: per-step, per-example training draws
    GRID = 102  # sample grids written during training
    SAMPLE = 103  # experiments.sample / evaluate generation
    EVAL = 104  # evaluation draws (Hutchinson probes, VLB noise)
    DISC_INIT = 105  # the autoencoder's discriminator initialisation
    DATA_ORDER = 106  # the data's permutation per epoch
    FLIP = 107  # random horizontal flips
    REFLOW = 108  # experiments.reflow's noise, paired with the parent flow's samples


def as_key(key) -> jax.Array:
    """A typed key from a typed key or raw ``uint32[2]`` key data (keys stored by older checkpoints)."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def stream(key, s: Stream) -> jax.Array:
    """The key of stream ``s`` under ``key`` (typed or raw)."""
    return jax.random.fold_in(key, int(s))


def run_key(seed: int, s: Stream) -> jax.Array:
    """The typed key of run-level stream ``s`` of the run with seed ``seed``."""
    return jax.random.fold_in(jax.random.key(seed), int(s))


def per_example_keys(key, batch_size):
    """``[B]`` keys: one key split in B, or per-example keys checked against the batch size."""
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    if (typed and key.ndim == 0) or (not typed and key.shape == (2,)):
        return jax.random.split(key, batch_size)
    if key.shape[0] != batch_size:
        raise ValueError(f"per-example keys have leading size {key.shape[0]}, batch has {batch_size}")
    return key
