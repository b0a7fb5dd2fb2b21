"""Data: offline TFDS builders and the deterministic input pipeline."""

from jaxdiff.data.builders import DIGITS_LEVELS, Digits
from jaxdiff.data.pipeline import NUM_LEVELS, Pipeline, load_source, to_float, to_levels

__all__ = ["Digits", "DIGITS_LEVELS", "NUM_LEVELS", "Pipeline", "load_source", "to_float", "to_levels"]
