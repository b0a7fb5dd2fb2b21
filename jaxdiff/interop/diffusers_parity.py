"""jaxdiff's DDPM / DDIM samplers against diffusers' ``DDPMScheduler`` / ``DDIMScheduler`` on the committed
fixture (``tests/fixtures/diffusers_unet_fixture.npz``, written by ``tests/fixture_makers/make_unet_fixture.py``):
the converted network in float64 and the errors of each comparison. Used by ``tests/test_diffusers_unet.py``
and ``benchmarks/diffusers_parity.py``; needs no torch."""

from __future__ import annotations

import json
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import samplers
from jaxdiff.interop import diffusers_unet as du
from jaxdiff.models.unet import UNet
from jaxdiff.parameterization import clip_x0_model_fn
from jaxdiff.samplers.common import step_key
from jaxdiff.samplers.timegrids import time_grid
from jaxdiff.schedules import get_schedule

SEED = 20200619  # DDPM's arXiv date: the fixture networks' weights come from it


def random_state_dict(seed: int, shapes: dict) -> dict:
    """Random float32 weights of the given shapes, each from its own generator seeded by (seed, crc32(name)),
    so the PyTorch and the Flax side get the same values without committing them; N(0, 0.2^2) keeps the
    tiny networks' activations O(1) while every tensor matters."""
    return {name: (0.2 * np.random.default_rng([seed, zlib.crc32(name.encode())]).standard_normal(shape))
            .astype(np.float32) for name, shape in sorted(shapes.items())}


DDPM_CASES = {"full_small_clip": ("fixed_small", True), "full_large": ("fixed_large", False),
              "n50_small": ("fixed_small", False)}


def load_fixture(path: str) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def converted(fx: dict, name: str, dtype=np.float32):
    """``(UNetConfig, params, state dict, diffusers config)`` of the fixture's network ``name``."""
    config = json.loads(str(fx[f"{name}/config"]))
    sd = random_state_dict(SEED, json.loads(str(fx[f"{name}/shapes"])))
    kw = dict(dtype="float64", param_dtype="float64") if dtype == np.float64 else {}
    cfg = du.unet_config_from_diffusers(config, **kw)
    return cfg, du.params_from_diffusers(sd, cfg, dtype), sd, config


def output_error(fx: dict, name: str) -> float:
    """Max ``|jaxdiff - diffusers|`` of the converted network's float32 outputs."""
    cfg, params, _, _ = converted(fx, name)
    j, labels = fx[f"{name}/j"], fx.get(f"{name}/labels")
    out = UNet(cfg).apply({"params": params}, fx[f"{name}/x"], (j + 1) / 1000.0,
                          None if labels is None else jnp.asarray(labels))
    return float(np.abs(np.asarray(out) - fx[f"{name}/out"]).max())


def model64(fx: dict):
    """The DDPM-layout network in float64 as a ``model_fn`` (call inside ``jax.enable_x64``)."""
    cfg, params, _, _ = converted(fx, "ddpm", np.float64)
    apply = jax.jit(lambda x, t: UNet(cfg).apply({"params": params}, x, t))
    return lambda x, t, cond=None: apply(x, t)


def ddim_error(fx: dict, model, spacing: str, clip: bool) -> dict:
    """The 10-step eta = 0 DDIM trajectory against diffusers': max error relative to each step's largest
    ``|x|`` (at least 1), and whether the grids agree."""
    key = f"ddim/{spacing}_clip{int(clip)}"
    ref = fx[key + "/traj"]
    sched = get_schedule("linear", num_steps=1000)
    ts = np.asarray(time_grid(sched, 10, spacing))
    same_grid = bool(np.allclose(ts[:-1] * 1000, fx[key + "/timesteps"] + 1, atol=1e-6))
    fn = clip_x0_model_fn(model, sched) if clip else model
    _, traj = samplers.sample_ddim(fn, sched, jnp.asarray(ref[0]), None, num_steps=10, spacing=spacing,
                                   return_trajectory=True)
    traj = np.asarray(traj)
    got = np.concatenate([ref[:1], traj[-(len(ref) - 1):]])
    scale = np.maximum(np.abs(ref).max(axis=(1, 2, 3, 4), keepdims=True), 1.0)
    return {"rel_error": float((np.abs(got - ref) / scale).max()), "same_grid": same_grid,
            "max_abs_x": float(np.abs(ref).max())}


def one_step_moments(run):
    """Mean and per-example std of a one-step sampler call ``run(key)`` = mean + std * z (z its own noise)."""
    k1, k2 = jax.random.key(1), jax.random.key(2)
    o1, o2 = np.asarray(run(k1)), np.asarray(run(k2))
    z1, z2 = (np.asarray(jax.random.normal(step_key(k, 0), o1.shape, o1.dtype)) for k in (k1, k2))
    dz = (z1 - z2).reshape(len(o1), -1)
    std = np.sum((o1 - o2).reshape(len(o1), -1) * dz, 1) / np.sum(dz**2, 1)
    return o1 - std[:, None, None, None] * z1, std


def ddim_eta_error(fx: dict, model) -> dict:
    """One eta = 1 DDIM step 500 -> 400 (diffusers' indices): relative errors of its mean and std."""
    sched = get_schedule("linear", num_steps=1000)
    ts = jnp.asarray([501 / 1000, 401 / 1000])
    mean, std = one_step_moments(lambda k: samplers.sample_ddim(model, sched, jnp.asarray(fx["ddim_eta/x"]), k,
                                                                ts=ts, eta=1.0))
    return {"mean": _rel(mean, fx["ddim_eta/mean"]), "std": _rel(std, fx["ddim_eta/std"])}


def ddpm_error(fx: dict, model, case: str) -> dict:
    """DDPMScheduler.step's posterior mean and std at the case's steps j -> prev against sample_ddpm on the
    grid [(j + 1) / T, (prev + 1) / T]: the largest relative errors over the steps."""
    variance, clip = DDPM_CASES[case]
    p = f"ddpm/{case}/"
    sched = get_schedule("linear", num_steps=1000)
    fn = clip_x0_model_fn(model, sched) if clip else model
    x = jnp.asarray(fx[p + "x"])
    err = {"mean": 0.0, "std": 0.0}
    for k, (j, prev) in enumerate(zip(fx[p + "j"], fx[p + "prev"])):
        ts = jnp.asarray([(j + 1) / 1000, max(prev + 1, 0) / 1000])
        mean, std = one_step_moments(lambda key: samplers.sample_ddpm(fn, sched, x, key, ts=ts, variance=variance))
        err["mean"] = max(err["mean"], _rel(mean, fx[p + "mean"][k]))
        err["std"] = max(err["std"], _rel(std, fx[p + "std"][k]))
    return err


def _rel(got, want) -> float:
    """Max |got - want| relative to max |want| (absolute where that is 0: the std of the last step)."""
    return float(np.abs(np.asarray(got) - want).max() / max(float(np.abs(want).max()), 1e-300)) \
        if np.abs(want).max() > 0 else float(np.abs(got).max())
