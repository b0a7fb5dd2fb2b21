"""Flags every experiment script shares."""

from absl import flags, logging

flags.DEFINE_string("compilation_cache", None, "Directory of JAX's persistent compilation cache (default "
                    "$JAXDIFF_COMPILATION_CACHE or ~/.cache/jaxdiff/xla; 'off' disables it).")


def setup():
    """Turn on the persistent compilation cache of ``--compilation_cache``."""
    from jaxdiff.training.cache import enable_compilation_cache

    d = enable_compilation_cache(flags.FLAGS.compilation_cache)
    logging.info("compilation cache: %s", d or "off")


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
    params = inspect.signature(samplers.get_sampler(sampler)).parameters
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
