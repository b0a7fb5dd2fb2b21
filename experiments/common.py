"""Flags every experiment script shares."""

from absl import flags, logging

flags.DEFINE_string("compilation_cache", None, "Directory of JAX's persistent compilation cache (default "
                    "$JAXDIFF_COMPILATION_CACHE or ~/.cache/jaxdiff/xla; 'off' disables it).")


def setup():
    """Turn on the persistent compilation cache of ``--compilation_cache``."""
    from jaxdiff.training.cache import enable_compilation_cache

    d = enable_compilation_cache(flags.FLAGS.compilation_cache)
    logging.info("compilation cache: %s", d or "off")
