"""The declared config: every field any task reads, each with its default and a one-line comment.

Every experiment config starts from ``get_config()`` and overrides fields, so any field can be set on the
command line (``--config.parallel.mode=mesh --config.parallel.fsdp=2``) and a misspelled field is an error
naming the nearest declared ones. The declaration itself is ``jaxdiff/training/schema.py``: the library
fills these defaults into configs stored by older workdirs before restoring them.
"""

from jaxdiff.training.schema import default_config


def get_config(variant: str = ""):
    if variant:
        raise ValueError(f"unknown config variant {variant!r}; allowed: ''")
    return default_config()
