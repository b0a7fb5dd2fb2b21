"""Flags every experiment script shares."""

from absl import flags, logging

flags.DEFINE_string("compilation_cache", None, "Directory of JAX's persistent compilation cache (default "
                    "$JAXDIFF_COMPILATION_CACHE or ~/.cache/jaxdiff/xla; 'off' disables it).")


flags.DEFINE_boolean("verbose", False, "On a known failure of the environment (a full or read-only disk, a "
                     "damaged config or data file, a dangling workdir link, a JAX platform that is not there) print "
                     "the whole traceback instead of one line.")


def setup():
    """Turn on the persistent compilation cache of ``--compilation_cache``."""
    from jaxdiff.training.cache import enable_compilation_cache

    d = enable_compilation_cache(flags.FLAGS.compilation_cache)
    logging.info("compilation cache: %s", d or "off")


def platform_failure() -> str | None:
    """JAX starts its backend on first use and, when ``JAX_PLATFORMS`` names one that is not there, fails with a
    bare AssertionError: one line naming the setting and what to do instead (``None`` when JAX starts). Asked
    only after a failure: starting the backend earlier would come before ``jax.distributed.initialize``."""
    import os

    import jax

    try:
        jax.devices()
    except Exception as e:  # RuntimeError or a bare AssertionError, by jax version
        want = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or "(default)"
        why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return (f"JAX cannot start the platform JAX_PLATFORMS={want} ({why}); install its jax "
                "plugin (GPU: pip install -U 'jax[cuda12]'; TPU: the [tpu] extra) or unset JAX_PLATFORMS to run "
                "on the CPU")
    return None


def run(main):
    """``absl.app.run(main)``; a known failure of the environment (:func:`jaxdiff.errors.describe`, or a JAX
    platform that cannot start) ends the program with one line on stderr and exit status 1 (the traceback with
    ``--verbose``)."""
    import functools

    from absl import app

    app.run(functools.partial(_guarded, main))


def echo_filter(record) -> bool:
    """False for a log record of Orbax that reports a known failure of the environment (the one line says it)."""
    from jaxdiff.errors import describe

    exc = record.exc_info[1] if record.exc_info else Exception(record.getMessage())
    return "orbax" not in record.pathname or describe(exc) is None


def quiet_echoes():
    """Without ``--verbose``, quiet the echoes of a failure that the one line reports: Orbax's background writers
    log each failed write with its traceback (what TensorStore's callbacks print once those writers have stopped
    is silenced after the one line, by :func:`_silence_stderr`)."""
    import logging as std_logging

    for h in std_logging.getLogger().handlers + std_logging.getLogger("absl").handlers:
        h.addFilter(echo_filter)


def _guarded(main, argv):
    import sys

    from absl import app

    from jaxdiff.errors import describe

    if not flags.FLAGS.verbose:
        quiet_echoes()
    try:
        return main(argv)
    except app.UsageError:
        raise
    except Exception as e:
        line = describe(e) or platform_failure()
        if line is None or flags.FLAGS.verbose:
            raise
        print(f"error: {line} (--verbose: the traceback)", file=sys.stderr, flush=True)
        _silence_stderr()  # what background writers still print while the interpreter shuts down
        sys.exit(1)


def _silence_stderr():
    import os
    import sys

    sys.stderr.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)


def check_count(name: str, value, low: int = 1):
    """A count flag given on the command line: None (the config's) or an integer >= ``low``."""
    from absl import app

    if value is not None and value < low:
        raise app.UsageError(f"--{name}={value}; allowed: an integer >= {low} (omit it for the config's value)")


def check_clip(value):
    """``--clip_x0``: None (the config's), 0 (off) or a finite number > 0."""
    import math

    from absl import app

    if value is not None and not (math.isfinite(value) and value >= 0):
        raise app.UsageError(f"--clip_x0={value}; allowed: a finite number >= 0 (0: off)")


def sampler_options(text: str, sampler: str) -> dict:
    """``--options`` parsed: a JSON object whose keys are keyword options of ``sampler`` and whose values have
    the type of each option's default (a number where it is a number); a UsageError names what is wrong and
    the sampler's allowed options."""
    import inspect
    import json
    import numbers

    from absl import app

    from jaxdiff import samplers

    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise app.UsageError(f"--options={text!r} is not JSON ({e}); e.g. '{{\"sigma_max\": 80}}'") from None
    if not isinstance(options, dict):
        raise app.UsageError(f"--options={text!r} must be a JSON object of the sampler's options, e.g. "
                             "'{\"sigma_max\": 80}'")
    params = inspect.signature(samplers.get_sampler(sampler).fn).parameters
    fixed = {"model_fn", "schedule", "x_T", "key", "num_steps", "prediction", "cond", "ts"}
    allowed = sorted(n for n, p in params.items() if n not in fixed and p.kind == p.KEYWORD_ONLY)
    takes_more = any(p.kind == p.VAR_KEYWORD for p in params.values())
    for k, v in options.items():
        if k not in allowed and not takes_more:
            raise app.UsageError(f"--options: {k!r} is not an option of sampler {sampler!r}; allowed: {allowed}")
        default = params[k].default if k in params else None
        numeric = isinstance(default, numbers.Number) and not isinstance(default, bool)
        if numeric and not (isinstance(v, numbers.Number) and not isinstance(v, bool)):
            raise app.UsageError(f"--options: {k}={v!r} for sampler {sampler!r}; allowed: a number (default "
                                 f"{default!r})")
    return options


def check_finite(x, what: str):
    """Refuse to write an output holding a non-finite value, naming the count and what made it."""
    import numpy as np

    bad = int(np.size(x) - np.isfinite(x).sum())
    if bad:
        raise FloatingPointError(f"{bad} of {np.size(x)} values are not finite ({what}); nothing was written. "
                                 "Try --clip_x0 1, more --num_steps, or another --sampler")
