"""The autoencoder and latent-diffusion side of the training loop: build an ``AutoencoderKL`` from a config
(``config.kind = "autoencoder"``), its reconstruction grids, scale factor and test PSNR/SSIM, restoring a
trained one, and the latent data source of a latent-diffusion config (``config.latent.autoencoder``).
"""

from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.data import to_float
from jaxdiff.latent import encode_dataset, psnr, scale_factor, ssim
from jaxdiff.models.autoencoder import AutoencoderConfig, AutoencoderKL, PatchDiscriminator

log = logging.getLogger("jaxdiff.train")

KINDS = ("diffusion", "autoencoder")


def config_kind(config) -> str:
    kind = config.get("kind", "diffusion")
    if kind not in KINDS:
        raise ValueError(f"unknown config.kind {kind!r}; allowed: {list(KINDS)}")
    return kind


def latent_autoencoder(config) -> str | None:
    """The autoencoder workdir of a latent-diffusion config (``config.latent.autoencoder``), else None."""
    lat = config.get("latent", None)
    return (lat.get("autoencoder", "") or None) if lat is not None else None


def autoencoder_config(config) -> AutoencoderConfig:
    m = dict(config.model.to_dict())
    m.pop("image_size", None)
    m["block_out_channels"] = tuple(m["block_out_channels"])
    known = set(AutoencoderConfig.__dataclass_fields__)
    unknown = sorted(set(m) - known)
    if unknown:
        raise ValueError(f"unknown autoencoder model fields {unknown}; allowed: {sorted(known) + ['image_size']}")
    return AutoencoderConfig(**m).validate()


def build_autoencoder(config) -> AutoencoderKL:
    return AutoencoderKL(autoencoder_config(config))


def check_autoencoder_input(config, shape):
    """Clear errors before compiling: image size divisible by f, channels as configured."""
    acfg = autoencoder_config(config)
    f = acfg.downsampling_factor
    h, w, c = shape[1:]
    if h % f or w % f:
        raise ValueError(f"image size {h}x{w} is not divisible by the autoencoder's downsampling factor f={f} "
                         f"(2^(len(block_out_channels) - 1), block_out_channels={acfg.block_out_channels})")
    if c != acfg.in_channels:
        raise ValueError(f"data has {c} channels, model.in_channels={acfg.in_channels}")
    if h != config.model.image_size:
        raise ValueError(f"data images are {h}x{w}, model.image_size={config.model.image_size}")


def _example_input(config):
    s, c = config.model.image_size, config.model.in_channels
    return jnp.zeros((1, s, s, c))


def init_autoencoder(config, model: AutoencoderKL):
    return model.init(jax.random.PRNGKey(config.seed), _example_input(config))["params"]


def build_discriminator(config):
    """The patch discriminator of ``config.loss`` (``discriminator=True``), else None."""
    lo = config.get("loss", {})
    if not lo.get("discriminator", False):
        return None
    return PatchDiscriminator(lo.get("disc_channels", 64), lo.get("disc_layers", 3), lo.get("disc_groups", 32))


def init_params(config, model: AutoencoderKL):
    """The trained params: the autoencoder's, or ``{"autoencoder", "discriminator"}`` with a discriminator."""
    params = init_autoencoder(config, model)
    disc = build_discriminator(config)
    if disc is None:
        return params
    d = disc.init(jax.random.PRNGKey(config.seed + 1), _example_input(config))["params"]
    return {"autoencoder": params, "discriminator": d}


def autoencoder_params(params):
    """The autoencoder's part of trained params (drops a discriminator)."""
    return params["autoencoder"] if "discriminator" in params else params


def build_loss(config, model: AutoencoderKL):
    from jaxdiff.latent import make_autoencoder_loss

    lo = config.loss
    return make_autoencoder_loss(model, lo.kl_weight, build_discriminator(config), lo.get("disc_weight", 0.1),
                                 lo.get("disc_start", 0))


def reconstruct_fn(model: AutoencoderKL):
    """jitted ``fn(params, x) -> decode(mean of q(z|x))``."""
    return jax.jit(lambda p, x: model.apply({"params": p}, x)[0])


def encode_fn(model: AutoencoderKL, params):
    """``fn(x) -> (mean, logvar)`` of q(z|x); the params are an argument of the jitted function, not
    constants compiled into it."""
    enc = jax.jit(lambda p, x: model.apply({"params": p}, x, method=AutoencoderKL.encode))
    return lambda x: enc(params, x)


def grid_fn(model: AutoencoderKL, images):
    """``fn(params, key) -> [2N, H, W, C]``: each fixed test image followed by its reconstruction (the grid
    the loop writes at sample time for an autoencoder: pairs side by side in an even number of columns)."""
    rec = reconstruct_fn(model)
    x = jnp.asarray(images)
    return lambda params, key: jnp.stack([x, jnp.clip(rec(autoencoder_params(params), x), -1, 1)],
                                         1).reshape((-1,) + x.shape[1:])


def latent_scale(model: AutoencoderKL, params, images, batch_size: int = 256) -> float:
    """1 / std of the posterior means of ``images`` (the latents a latent-diffusion model trains on)."""
    enc = encode_fn(model, autoencoder_params(params))
    z = np.concatenate([np.asarray(enc(images[i:i + batch_size])[0]) for i in range(0, len(images), batch_size)])
    return scale_factor(z)


@functools.lru_cache(maxsize=4)
def restore_autoencoder(workdir: str, step: int | None = None):
    """``(model, ema_params, scale_factor, step, config)`` of a trained autoencoder. The scale factor is the
    one stored with its final checkpoint (computed from its training latents when the checkpoint holds
    none, e.g. a run stopped early)."""
    from jaxdiff.training.loop import build_optimizer, build_pipeline, load_config, restore_state
    from jaxdiff.training.state import create_train_state

    config = load_config(workdir)
    if config_kind(config) != "autoencoder":
        raise ValueError(f"{workdir} holds a {config_kind(config)} run, not an autoencoder (config.kind)")
    model = build_autoencoder(config)
    state, meta, step = restore_state(
        workdir, lambda tx: create_train_state(init_params(config, model), tx, config.seed), build_optimizer(config),
        step)
    params = autoencoder_params(state.ema_params)
    scale = meta.get("scale_factor")
    if scale is None:
        pipe = build_pipeline(config, "train", 1)
        scale = latent_scale(model, params, to_float(pipe.all_images(), config.data.num_levels))
        log.info("checkpoint %d of %s holds no scale factor; computed %.5f from its training latents",
                 step, workdir, scale)
    return model, params, float(scale), step, config


def latent_source(config, split: str):
    """The latent dataset of a latent-diffusion config: the pixel split of ``config.data`` encoded once by
    the autoencoder of ``config.latent.autoencoder`` (posterior means, cached under that workdir's
    ``latents/``), times its scale factor, with the labels."""
    from jaxdiff.data.pipeline import ArraySource
    from jaxdiff.training.loop import build_pipeline

    ae_dir = latent_autoencoder(config)
    model, params, scale, step, ae_config = restore_autoencoder(os.path.abspath(ae_dir))
    pipe = build_pipeline(config, split, 1, latent=False)
    x = to_float(pipe.all_images(), config.data.num_levels)
    if x.shape[1:] != (ae_config.model.image_size,) * 2 + (ae_config.model.in_channels,):
        raise ValueError(f"data of shape {x.shape[1:]} does not fit the autoencoder in {ae_dir} (image_size "
                         f"{ae_config.model.image_size}, in_channels {ae_config.model.in_channels})")
    d = config.data
    cache = os.path.join(ae_dir, "latents", f"{d.name}_{d.get('config', None)}_{split}_step{step}")
    lat = encode_dataset(encode_fn(model, params), x, cache, fingerprint=f"{os.path.abspath(ae_dir)}@{step} "
                         f"{d.name}/{d.get('config', None)}/{split}")
    arrays = {"image": lat["mean"] * np.float32(scale)}
    labels = pipe.all_labels()
    if labels is not None:
        arrays["label"] = labels
    return ArraySource(arrays)


def latent_decoder(config):
    """``(decode(ae_params, z) -> images, ae_params, scale_factor)`` for a latent-diffusion config (z
    unscaled: divide the diffusion model's latents by the scale factor first)."""
    model, params, scale, _, _ = restore_autoencoder(os.path.abspath(latent_autoencoder(config)))

    def decode(ae_params, z):
        return model.apply({"params": ae_params}, z, method=AutoencoderKL.decode)

    return decode, params, scale


def evaluate_autoencoder(workdir: str, batch_size: int = 256) -> dict:
    """Test-split reconstruction metrics of a trained autoencoder (EMA params, posterior mean): PSNR and
    SSIM (images in [-1, 1]), L1, the latent shape and the scale factor."""
    from jaxdiff.training.loop import build_pipeline

    model, params, scale, step, config = restore_autoencoder(os.path.abspath(workdir))
    test = build_pipeline(config, "test", 1)
    x = to_float(test.all_images(), config.data.num_levels)
    rec = reconstruct_fn(model)
    r = np.concatenate([np.clip(np.asarray(rec(params, x[i:i + batch_size])), -1, 1)
                        for i in range(0, len(x), batch_size)])
    p, s = psnr(x, r), ssim(x, r)
    acfg = autoencoder_config(config)
    f = acfg.downsampling_factor
    return {"test_psnr_db": float(p.mean()), "test_psnr_se": float(p.std(ddof=1) / np.sqrt(len(p))),
            "test_ssim": float(s.mean()), "test_l1": float(np.abs(x - r).mean()), "num_test": int(len(x)),
            "downsampling_factor": f, "latent_shape": [x.shape[1] // f, x.shape[2] // f, acfg.latent_channels],
            "scale_factor": scale, "step": step}
