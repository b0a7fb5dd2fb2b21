"""Data: offline TFDS builders and the deterministic input pipeline."""

from jaxdiff.data.pipeline import (
    DIGITS_LEVELS,
    NUM_LEVELS,
    Pipeline,
    arrays_source,
    export_arrays,
    load_source,
    to_float,
    to_levels,
)


def __getattr__(name):  # the TFDS builders load TFDS: only on use
    if name == "Digits":
        from jaxdiff.data.builders import Digits

        return Digits
    raise AttributeError(name)

__all__ = ["Digits", "DIGITS_LEVELS", "arrays_source", "export_arrays", "NUM_LEVELS", "Pipeline", "load_source",
           "to_float", "to_levels"]
