"""Conditional generation by imputation: sample the unknown part of x given known values and a mask, with
any sampler and any data kind (image inpainting, time-series forecasting and gap filling, audio).

* Replacement (Song et al. 2021b, App. I.2): before every model call the known entries of x_t are
  replaced by a fresh draw of q(x_t | x_known) = N(alpha_t x_known, sigma_t^2), so the unknown entries
  evolve under the model's view of a consistent x_t. Written as a model_fn transformer, it works with
  every sampler unchanged (for first-order samplers it is exactly the replacement step).
* RePaint (Lugmayr et al. 2022): the ``num_steps`` grid is cut into segments of ``jump_length`` steps; each
  segment is sampled, then noised back to its start with q(x_{t_hi} | x_{t_lo}) and sampled again,
  ``resample`` times in all, which lets the unknown part harmonise with the known one. ``resample=1`` is
  plain replacement. Each segment is a slice of the grid passed to the sampler as its ``ts`` (a
  ``lax.scan`` over segments: nothing is unrolled per step), so the sampler visits exactly the steps it
  would visit without imputation.
* SDEdit (Meng et al. 2022): :func:`sdedit` noises an input to ``t_start`` and samples the rest of the grid.

Both are approximations of the exact conditional p(x_unknown | x_known); tests measure their bias on a
Gaussian where the conditional is closed form.

* Conditional imputation (CSDI, Tashiro et al. 2021): a network that takes the observed values and the mask
  as input (:class:`jaxdiff.models.imputation.ImputationNet`), trained on random masks
  (:func:`sample_masks`: random points, blocks, forecast-shaped) with the loss on the unobserved entries only
  (:func:`make_conditional_loss`), samples p(x_unknown | x_known) directly: :func:`conditional_impute` runs
  any sampler once, with no replacement or resampling.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.forward import bcast
from jaxdiff.rng import Stream, per_example_keys, stream
from jaxdiff.samplers import get_sampler, prior_sample
from jaxdiff.samplers.common import grid
from jaxdiff.schedules import Schedule


def check_mask(x_known, mask):
    """``mask`` must have the data's shape (1 = known, 0 = to sample), or broadcast to it from ``[...]`` without
    the batch axis."""
    shape = tuple(jnp.shape(x_known))
    mshape = tuple(jnp.shape(mask))
    if mshape != shape and mshape != shape[1:]:
        raise ValueError(f"mask has shape {mshape}; it must equal the data's shape {shape} (or {shape[1:]}, "
                         "the same for every example): 1 where the value is known, 0 where it is sampled")


def replacement_model_fn(model_fn: Callable, schedule: Schedule, x_known, mask, key) -> Callable:
    """``model_fn`` that sees x_t with its known entries replaced by alpha_t x_known + sigma_t z (z fresh per
    time, drawn from ``fold_in(key, t)``)."""
    mask = jnp.broadcast_to(jnp.asarray(mask, x_known.dtype), x_known.shape)

    def fn(x, t, cond=None):
        tb = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
        bits = jax.lax.bitcast_convert_type(tb[0].astype(jnp.float32), jnp.uint32)
        z = jax.random.normal(jax.random.fold_in(key, bits), x.shape, x.dtype)
        noisy = bcast(schedule.alpha(tb), x) * x_known + bcast(schedule.sigma(tb), x) * z
        return model_fn(mask * noisy + (1 - mask) * x, t, cond)

    return fn


def segments(ts, jump_length: int):
    """RePaint's segments of a decreasing grid ``ts [N + 1]``: ``[N / jump_length, jump_length + 1]``, each a
    slice ``ts[k L : (k + 1) L + 1]`` (consecutive segments share their end points)."""
    n = ts.shape[0] - 1
    if n % jump_length:
        raise ValueError(f"num_steps={n} must be a multiple of jump_length={jump_length}")
    return jnp.stack([ts[k * jump_length:(k + 1) * jump_length + 1] for k in range(n // jump_length)])


def impute(model_fn: Callable, schedule: Schedule, x_known, mask, key, *, sampler: str = "ddpm",
           num_steps: int = 100, resample: int = 1, jump_length: int = 10, prediction: str = "eps",
           cond: Any = None, spacing: str | None = None, t_min: float | None = None, ts=None, **options):
    """Sample x with ``x[mask == 1] = x_known[mask == 1]`` from the model's conditional (approximately).

    Args:
      model_fn, schedule, prediction, cond: as for every sampler.
      x_known: ``[B, ...]`` values (entries where mask = 0 are ignored).
      mask: 1 = known, 0 = sample; the data's shape or without the batch axis.
      sampler: any name in ``jaxdiff.samplers.SAMPLERS`` (``options`` go to it).
      num_steps: sampler steps over the whole [t_min, 1] (a multiple of ``jump_length``) on the grid of
        ``time_grid(schedule, num_steps, spacing)`` (integer steps on a discrete schedule); ``spacing``
        defaults to the sampler's own (``samplers.default_spacing``); or the grid ``ts`` itself.
      resample: RePaint's r: passes over each segment (1 = replacement only).
      jump_length: RePaint's j: steps per segment; each segment is a slice of the grid (:func:`segments`),
        so the sampler visits exactly the times it would visit without imputation.
    Returns: ``[B, ...]`` with the known entries equal to ``x_known``.
    """
    check_mask(x_known, mask)
    _check_missing_if_known(mask, x_known)
    run = get_sampler(sampler)
    for name, v in (("num_steps", num_steps), ("resample", resample), ("jump_length", jump_length)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if ts is None and num_steps % jump_length:
        raise ValueError(f"num_steps={num_steps} must be a multiple of jump_length={jump_length}")
    ts = grid(schedule, ts=ts, num_steps=num_steps, spacing=spacing or run.spacing,
              t_min=t_min, dtype=x_known.dtype)
    segs = segments(ts, jump_length)
    mask = jnp.broadcast_to(jnp.asarray(mask, x_known.dtype), x_known.shape)
    k_prior, k_rep, k_run = jax.random.split(key, 3)
    mf = replacement_model_fn(model_fn, schedule, x_known, mask, k_rep)

    def segment(x, inp):
        seg, i = inp
        t_hi, t_lo = seg[0], seg[-1]

        def one_pass(r, x):
            k = jax.random.fold_in(jax.random.fold_in(k_run, i), r)
            x = run(mf, schedule, x, jax.random.fold_in(k, 0), ts=seg, prediction=prediction, cond=cond, **options)
            a, var = schedule.transition(t_lo, t_hi)  # back to t_hi: q(x_{t_hi} | x_{t_lo})
            z = jax.random.normal(jax.random.fold_in(k, 1), x.shape, x.dtype)
            back = a * x + jnp.sqrt(jnp.maximum(var, 0.0)) * z
            return jnp.where(r < resample - 1, back, x)

        return jax.lax.fori_loop(0, resample, one_pass, x), None

    x = prior_sample(schedule, k_prior, x_known.shape, x_known.dtype)
    x, _ = jax.lax.scan(segment, x, (segs, jnp.arange(segs.shape[0])))
    return mask * x_known + (1 - mask) * x


MASK_KINDS = ("random", "block", "forecast")


def check_mask_probs(probs) -> tuple[float, float, float]:
    """The proportions of :data:`MASK_KINDS` normalised to sum 1 (non-negative, not all zero)."""
    probs = tuple(float(p) for p in probs)
    if len(probs) != len(MASK_KINDS) or min(probs) < 0 or sum(probs) <= 0:
        raise ValueError(f"mask proportions {probs} must be {len(MASK_KINDS)} non-negative numbers (for "
                         f"{list(MASK_KINDS)}) with a positive sum")
    return tuple(p / sum(probs) for p in probs)


def sample_masks(keys, shape, probs=(1.0, 1.0, 1.0), horizon: int = 0, max_block: float = 0.5):
    """Training masks of a conditional imputation model (1 = observed), one per example key ``keys [B]`` for
    data of ``shape = [B, *spatial, C]`` (the mask is shared by the channels of a position). The kind of
    each example is drawn with ``probs`` over :data:`MASK_KINDS` (CSDI's strategies):

    * ``random``: a missing ratio r ~ U(0, 1), each position missing with probability r (the largest of
      the position draws always missing: at least one entry to learn from);
    * ``block``: one contiguous block missing, on every spatial axis of length ~ U{1, ..., ceil(max_block L)}
      at a uniform start (a gap in a series, a rectangle in an image; ``max_block = 1`` lets it reach a half
      or the whole of an image);
    * ``forecast``: the last ``horizon`` positions of the first spatial axis missing (the future of a
      series, the bottom rows of an image); ``horizon = 0`` draws it from U{1, ..., ceil(L / 2)}.
    """
    probs = check_mask_probs(probs)
    if not 0.0 < max_block <= 1.0:
        raise ValueError(f"max_block={max_block}; allowed: a fraction of each axis in (0, 1]")
    spatial = tuple(shape[1:-1])
    if horizon < 0 or horizon >= spatial[0]:
        raise ValueError(f"horizon={horizon} must be in [0, {spatial[0]}) (0 = drawn per example)")
    keys = per_example_keys(keys, shape[0])
    logits = jnp.log(jnp.asarray(probs, jnp.float32))

    def one(key):
        k = jax.random.split(stream(key, Stream.MASK), 4)
        kind = jax.random.categorical(k[0], logits)
        u = jax.random.uniform(k[1], spatial)
        ratio = jax.random.uniform(jax.random.fold_in(k[1], 1))
        random = (u < ratio) | (u == u.max())
        block = jnp.ones(spatial, bool)
        for ax, L in enumerate(spatial):
            ka, kb = jax.random.split(jax.random.fold_in(k[2], ax))
            length = jax.random.randint(ka, (), 1, max(1, math.ceil(max_block * L)) + 1)
            start = jax.random.randint(kb, (), 0, L - length + 1)
            i = jnp.arange(L)
            along = tuple(L if a == ax else 1 for a in range(len(spatial)))
            block = block & ((i >= start) & (i < start + length)).reshape(along)
        h = horizon if horizon else jax.random.randint(k[3], (), 1, (spatial[0] + 1) // 2 + 1)
        future = jnp.arange(spatial[0]) >= spatial[0] - h
        forecast = jnp.broadcast_to(future.reshape((-1,) + (1,) * (len(spatial) - 1)), spatial)
        missing = jnp.select([kind == 0, kind == 1], [random, block], forecast)
        return 1.0 - missing.astype(jnp.float32)

    m = jax.vmap(one)(keys)[..., None]
    return jnp.broadcast_to(m, tuple(shape))


def make_conditional_loss(base_loss: Callable, probs=(1.0, 1.0, 1.0), horizon: int = 0,
                          max_block: float = 0.5) -> Callable:
    """CSDI's training objective from any mse loss of :func:`jaxdiff.losses.make_loss` whose network is an
    :class:`~jaxdiff.models.imputation.ImputationNet`: each example gets a mask from :func:`sample_masks`,
    its observed values and mask go to the network as ``cond``, and the loss is the mean over the
    unobserved entries only (its ``loss_mask``). ``batch["cond"]`` (class labels), if any, rides along
    as the condition's ``"label"``."""
    check_mask_probs(probs)

    def loss_fn(params, batch, key):
        x = jnp.asarray(batch["x"])
        keys = per_example_keys(key, x.shape[0])
        mask = sample_masks(keys, x.shape, probs, horizon, max_block).astype(x.dtype)
        cond = {"obs": mask * x, "mask": mask}
        if batch.get("cond") is not None:
            cond["label"] = batch["cond"]
        return base_loss(params, {**batch, "cond": cond}, keys, loss_mask=1.0 - mask)

    return loss_fn


def check_missing(mask, shape):
    """A mask of the data's shape (or without the batch axis) with something to impute in every example."""
    check_mask(np.zeros(shape, np.float32), mask)
    _check_something_missing(mask, shape)


def _check_something_missing(mask, shape):
    m = np.broadcast_to(np.asarray(mask), shape).reshape(shape[0], -1)
    if (m.min(axis=1) > 0).any():
        raise ValueError("mask has nothing unobserved (all ones) in example(s) "
                         f"{np.where(m.min(axis=1) > 0)[0][:8].tolist()}: 0 marks the values to impute")


def _check_missing_if_known(mask, x_known):
    """After :func:`check_mask`: something to impute, where the mask is concrete (a traced mask is checked
    by whoever made it)."""
    if not isinstance(mask, jax.core.Tracer):
        _check_something_missing(mask, tuple(jnp.shape(x_known)))


def conditional_impute(model_fn: Callable, schedule: Schedule, x_known, mask, key, *, sampler: str = "ddpm",
                       num_steps: int = 100, prediction: str = "eps", label: Any = None, spacing: str | None = None,
                       t_min: float | None = None, ts=None, **options):
    """Sample x with ``x[mask == 1] = x_known[mask == 1]`` from a conditional imputation model (CSDI):
    ``model_fn(x, t, cond)`` takes ``cond = {"obs": x_known, "mask": mask[, "label": label]}``
    (:class:`~jaxdiff.models.imputation.ImputationNet`), so one pass of any sampler draws the unobserved
    entries from the model's p(x_unknown | x_known); the known entries of the result are ``x_known``.
    ``mask``: 1 = known, the data's shape or without the batch axis. NFE: the sampler's for ``num_steps``."""
    check_mask(x_known, mask)
    _check_missing_if_known(mask, x_known)
    run = get_sampler(sampler)
    ts = grid(schedule, ts=ts, num_steps=num_steps, spacing=spacing or run.spacing,
              t_min=t_min, dtype=x_known.dtype)
    mask = jnp.broadcast_to(jnp.asarray(mask, x_known.dtype), x_known.shape)
    cond = {"obs": mask * x_known, "mask": mask}
    if label is not None:
        cond["label"] = label
    k_prior, k_run = jax.random.split(key)
    x = prior_sample(schedule, k_prior, x_known.shape, x_known.dtype)
    x = run(model_fn, schedule, x, k_run, ts=ts, prediction=prediction, cond=cond, **options)
    return mask * x_known + (1 - mask) * x


def sdedit(model_fn: Callable, schedule: Schedule, x_init, key, *, t_start: float, sampler: str = "ddim",
           num_steps: int | None = None, ts=None, spacing: str | None = None, t_min: float | None = None,
           prediction: str = "eps", cond: Any = None, noise=None, **options):
    """SDEdit / img2img (Meng et al. 2022): noise ``x_init`` to ``t_start`` by q(x_t | x0) and sample the rest
    of the grid from there. The grid is ``time_grid(schedule, num_steps, spacing, t_max=t_start)`` (or
    ``ts``, which must start at ``t_start``); ``noise`` (default: drawn from ``key``) is the eps of the
    forward step. From ``t_start = 1`` it is plain sampling of ``x_T = alpha_1 x_init + sigma_1 eps``."""
    run = get_sampler(sampler)
    if not 0.0 < t_start <= 1.0:
        raise ValueError(f"t_start must be in (0, 1], got {t_start}")
    ts = grid(schedule, ts=ts, num_steps=num_steps, spacing=spacing or run.spacing,
              t_max=t_start, t_min=t_min, dtype=x_init.dtype)
    k_noise, k_run = jax.random.split(key)
    eps = jax.random.normal(k_noise, x_init.shape, x_init.dtype) if noise is None else noise
    t0 = jnp.full((x_init.shape[0],), ts[0], x_init.dtype)
    x_t = bcast(schedule.alpha(t0), x_init) * x_init + bcast(schedule.sigma(t0), x_init) * eps
    return run(model_fn, schedule, x_t, k_run, ts=ts, prediction=prediction, cond=cond, **options)


MASKS = ("right", "left", "bottom", "top", "center", "random")


def inpaint_mask(name: str, shape, seed: int = 0) -> np.ndarray:
    """1 = known, 0 = to fill, for an image shape ``[H, W, C]`` (or a sequence ``[L, C]``)."""
    m = np.ones(shape, np.float32)
    if name in ("right", "bottom"):
        ax = 1 if (name == "right" and len(shape) == 3) else 0
        sl = [slice(None)] * len(shape)
        sl[ax] = slice(shape[ax] // 2, None)
        m[tuple(sl)] = 0
    elif name in ("left", "top"):
        ax = 1 if (name == "left" and len(shape) == 3) else 0
        sl = [slice(None)] * len(shape)
        sl[ax] = slice(None, shape[ax] // 2)
        m[tuple(sl)] = 0
    elif name == "center":
        q = [s // 4 for s in shape[:-1]]
        m[tuple(slice(a, s - a) for a, s in zip(q, shape[:-1]))] = 0
    elif name == "random":
        m = (np.random.default_rng(seed).random(shape[:-1] + (1,)) < 0.5).astype(np.float32) * m  # host-side mask
    else:
        raise ValueError(f"unknown inpainting mask {name!r}; allowed: {list(MASKS)}")
    return m
