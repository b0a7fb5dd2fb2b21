"""JAX's persistent compilation cache for the experiment scripts: a program compiled once (a train step, a
sampler) is loaded from disk by later runs and processes instead of compiled again."""

from __future__ import annotations

import os

OFF = ("", "off", "none")


def default_cache_dir() -> str:
    return os.environ.get("JAXDIFF_COMPILATION_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "jaxdiff", "xla"))


def enable_compilation_cache(directory: str | None = None) -> str | None:
    """Turn the cache on in ``directory`` (default ``$JAXDIFF_COMPILATION_CACHE`` or ``~/.cache/jaxdiff/xla``);
    ``""`` / ``"off"`` leaves it off. A cache directory already configured (``JAX_COMPILATION_CACHE_DIR``, a
    test suite's) is kept. Returns the directory in use, or None."""
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    directory = default_cache_dir() if directory is None else directory
    if directory.lower() in OFF:
        return None
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return directory
