"""Latent diffusion: the autoencoder's loss, scale factor, metrics, the cached encoded dataset, the
sampler -> decoder composition, and an autoencoder + latent-diffusion run through the training loop."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.latent import decode_after, encode_dataset, make_autoencoder_loss, psnr, scale_factor, ssim
from jaxdiff.models.autoencoder import AutoencoderConfig, AutoencoderKL
from jaxdiff.training.step import example_keys

TINY = AutoencoderConfig(in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                         latent_channels=2, norm_num_groups=4)


@pytest.fixture(scope="module")
def tiny():
    model = AutoencoderKL(TINY)
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1), minval=-1, maxval=1)
    params = model.init(jax.random.PRNGKey(1), x)["params"]
    return model, params, x


def test_autoencoder_loss_is_l1_plus_weighted_kl(tiny):
    model, params, x = tiny
    keys = example_keys(jax.random.PRNGKey(3), jnp.asarray(0), jnp.arange(4))
    w = 0.3
    loss, aux = make_autoencoder_loss(model, w)(params, {"x": x}, keys)
    mean, logvar = (np.asarray(a, np.float64) for a in model.apply({"params": params}, x, method=model.encode))
    eps = np.stack([np.asarray(jax.random.normal(k, mean.shape[1:])) for k in keys])
    z = mean + np.exp(0.5 * logvar) * eps
    rec = np.asarray(model.apply({"params": params}, jnp.asarray(z, jnp.float32), method=model.decode), np.float64)
    kl = 0.5 * (mean**2 + np.exp(logvar) - 1 - logvar).reshape(4, -1).sum(-1)  # KL(N(m, s^2) || N(0, 1))
    per = (np.abs(rec - np.asarray(x)).reshape(4, -1).sum(-1) + w * kl) / 64
    np.testing.assert_allclose(aux["loss"], per, rtol=1e-5)
    np.testing.assert_allclose(aux["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(loss, per.mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="kl_weight"):
        make_autoencoder_loss(model, -1.0)


def test_scale_factor_psnr_ssim():
    z = np.random.default_rng(0).normal(0.3, 2.5, (2000, 4, 4, 2))
    assert scale_factor(z) == pytest.approx(1 / z.std())
    assert scale_factor(z * 10) == pytest.approx(scale_factor(z) / 10)
    with pytest.raises(ValueError, match="std"):
        scale_factor(np.ones((3, 2)))
    from skimage.metrics import peak_signal_noise_ratio

    a = np.random.default_rng(1).uniform(-1, 1, (3, 8, 8, 1))
    b = np.clip(a + np.random.default_rng(2).normal(0, 0.1, a.shape), -1, 1)
    np.testing.assert_allclose(psnr(a, b), [peak_signal_noise_ratio(x, y, data_range=2.0) for x, y in zip(a, b)])
    np.testing.assert_allclose(psnr(a, a + 0.1), 10 * np.log10(4 / 0.01))  # MSE 0.01 on a range of 2
    np.testing.assert_allclose(ssim(a, a), 1.0)
    assert (ssim(a, b) < 1).all() and (ssim(a, -a) < 0.1).all()


def test_encode_dataset_caches_and_resumes(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, (10, 4, 4, 1)).astype(np.float32)
    calls = []

    def enc(x):
        calls.append(len(x))
        return x * 2, np.full_like(x, np.log(0.25))

    def failing(x):
        if len(calls) == 2:
            raise KeyboardInterrupt
        return enc(x)

    d = str(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):  # interrupted after two of three chunks
        encode_dataset(failing, images, d, batch_size=4, fingerprint="ae@1")
    assert calls == [4, 4]
    out = encode_dataset(enc, images, d, batch_size=4, fingerprint="ae@1")
    assert calls == [4, 4, 2]  # resumed at the missing chunk
    np.testing.assert_allclose(out["mean"], images * 2)
    np.testing.assert_allclose(out["std"], 0.5)
    again = encode_dataset(enc, images, d, batch_size=4, fingerprint="ae@1")
    assert calls == [4, 4, 2]  # cached
    np.testing.assert_array_equal(again["mean"], out["mean"])
    with pytest.raises(ValueError, match="another autoencoder"):
        encode_dataset(enc, images, d, batch_size=4, fingerprint="ae@2")


def test_decode_after_composes_and_jits(tiny):
    model, params, _ = tiny
    z = jax.random.normal(jax.random.PRNGKey(5), (2, 4, 4, 2))
    dec = lambda zz: model.apply({"params": params}, zz, method=model.decode)
    fn = jax.jit(decode_after(lambda s: z * s, dec, 2.0))
    np.testing.assert_allclose(fn(3.0), dec(z * 1.5), atol=1e-5)


# ------------------------------------------------------------------------------------------------------
# Through the loop: autoencoder (scale factor stored), latent diffusion on it, errors
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ldm_run(tmp_path_factory, data_dir):
    from experiments.configs import digits32_autoencoder, digits32_ldm
    from jaxdiff.training.loop import train_and_evaluate

    root = tmp_path_factory.mktemp("ldm")
    ca = digits32_autoencoder.get_config("smoke")
    ca.data.data_dir = data_dir
    ca.loss.discriminator, ca.loss.disc_start, ca.loss.disc_channels, ca.loss.disc_groups = True, 2, 8, 4
    ae_wd = str(root / "ae")
    ae_m = train_and_evaluate(ca, ae_wd)
    cl = digits32_ldm.get_config("smoke")
    cl.data.data_dir = data_dir
    cl.latent.autoencoder = ae_wd
    cl.train.num_grid_samples = 0  # generate() below compiles the sampler -> decoder once
    ldm_wd = str(root / "ldm")
    m = train_and_evaluate(cl, ldm_wd)
    return ca, ae_wd, cl, ldm_wd, m, ae_m


def test_patch_gan_runs_through_the_loop(ldm_run):
    import json

    ca, ae_wd, *_ = ldm_run
    with open(os.path.join(ae_wd, "config.json")) as f:
        assert json.load(f)["loss"]["discriminator"]  # the fixture's autoencoder trained with the GAN term on
    m = ldm_run[-1]  # the last logged step (4) is after disc_start = 2: both adversarial terms reported
    assert np.isfinite(m["d_loss"]) and np.isfinite(m["g_loss"]) and m["d_loss"] > 0


def test_autoencoder_run_stores_scale_factor_and_reports_psnr(ldm_run):
    from jaxdiff.apps.reconstruction import evaluate_autoencoder
    from jaxdiff.data import to_float
    from jaxdiff.training.build import build_pipeline
    from jaxdiff.training.tasks.autoencoder import encode_fn, restore_autoencoder

    ca, ae_wd, *_ = ldm_run
    model, params, scale, step, _ = restore_autoencoder(os.path.abspath(ae_wd))
    assert step == ca.train.num_steps
    x = to_float(build_pipeline(ca, "train", 1).all_images(), 17)
    z = np.concatenate([np.asarray(encode_fn(model, params)(x[i:i + 500])[0]) for i in range(0, len(x), 500)])
    assert scale == pytest.approx(1 / z.std(), rel=1e-4)  # stored in the final checkpoint
    m = evaluate_autoencoder(ae_wd)
    test_x = to_float(build_pipeline(ca, "test", 1).all_images(), 17)
    rec = np.clip(np.asarray(model.apply({"params": params}, test_x)[0]), -1, 1)
    assert m["test_psnr_db"] == pytest.approx(psnr(test_x, rec).mean(), rel=1e-4)
    assert m["latent_shape"] == [8, 8, 2] and m["downsampling_factor"] == 4
    assert os.listdir(os.path.join(ae_wd, "samples"))  # reconstruction grids


def test_latent_diffusion_trains_on_cached_scaled_latents_and_samples_images(ldm_run):
    from jaxdiff.data import to_float
    from jaxdiff.training.build import build_pipeline
    from jaxdiff.training.generate import generate
    from jaxdiff.training.latent import data_pipeline
    from jaxdiff.training.restore import restore_trained
    from jaxdiff.training.tasks.autoencoder import encode_fn, restore_autoencoder

    ca, ae_wd, cl, ldm_wd, m, _ = ldm_run
    assert m["step"] == cl.train.num_steps and np.isfinite(m["loss"])
    model, params, scale, step, _ = restore_autoencoder(os.path.abspath(ae_wd))
    lat = data_pipeline(cl, "test", 1).all_images()
    x = to_float(build_pipeline(cl, "test", 1).all_images(), 17)
    np.testing.assert_allclose(lat, np.asarray(encode_fn(model, params)(x)[0]) * scale, rtol=1e-4, atol=1e-5)
    assert os.path.exists(os.path.join(ae_wd, "latents", f"digits_32_test_step{step}", "latents.npz"))
    config, unet, schedule, uparams, _ = restore_trained(ldm_wd)
    out = generate(config, unet, schedule, uparams, sampler="dpmpp_2m", num_steps=3, num_samples=4, batch_size=4,
                   seed=0)
    assert out.shape == (4, 32, 32, 1) and np.isfinite(out).all()  # decoded images, not latents


def test_latent_dit_trains_on_the_same_latents(ldm_run, tmp_path):
    """digits32_ldm_dit: the DiT backbone on the autoencoder's scaled latents, through the same loop."""
    from experiments.configs import digits32_ldm_dit
    from jaxdiff.models.dit import DiT
    from jaxdiff.training.generate import generate
    from jaxdiff.training.loop import train_and_evaluate
    from jaxdiff.training.restore import restore_trained

    ca, ae_wd, cl, *_ = ldm_run
    c = digits32_ldm_dit.get_config("smoke")
    c.data.data_dir, c.latent.autoencoder, c.train.num_grid_samples = cl.data.data_dir, ae_wd, 0
    m = train_and_evaluate(c, str(tmp_path / "ldm_dit"))
    assert m["step"] == c.train.num_steps and np.isfinite(m["loss"])
    config, model, schedule, params, _ = restore_trained(str(tmp_path / "ldm_dit"))
    assert isinstance(model, DiT) and model.config.image_size == 8 and model.config.in_channels == 2
    out = generate(config, model, schedule, params, sampler="dpmpp_2m", num_steps=2, num_samples=4, batch_size=4,
                   seed=0)
    assert out.shape == (4, 32, 32, 1) and np.isfinite(out).all()


def test_autoencoder_errors(ldm_run, data_dir):
    from experiments.configs import digits32_autoencoder
    from jaxdiff.training.loop import train_and_evaluate
    from jaxdiff.training.restore import restore_trained

    _, ae_wd, *_ = ldm_run
    with pytest.raises(ValueError, match="holds an autoencoder"):
        restore_trained(ae_wd)
    c = digits32_autoencoder.get_config("smoke")
    c.data.data_dir = data_dir
    c.model.block_out_channels = (8,) * 7  # f = 64 > 32
    with pytest.raises(ValueError, match="not divisible by the autoencoder's downsampling factor f=64"):
        train_and_evaluate(c, "/nonexistent/never-created")
    c = digits32_autoencoder.get_config("smoke")
    c.task = "vae"
    with pytest.raises(ValueError, match="unknown config.task 'vae'"):
        train_and_evaluate(c, "/nonexistent/never-created")


def test_arrays_source_round_trip_and_errors(tmp_path, data_dir):
    from jaxdiff.data import export_arrays, load_source

    path = export_arrays("digits", str(tmp_path / "d.npz"), data_dir, "8")
    for split in ("train", "test"):
        ref, got = load_source("digits", split, data_dir, "8"), load_source("arrays", split, config=path)
        assert len(got) == len(ref)
        for i in (0, len(ref) - 1):
            np.testing.assert_array_equal(got[i]["image"], ref[i]["image"])
            assert got[i]["label"] == ref[i]["label"]
    with pytest.raises(FileExistsError):
        export_arrays("digits", path, data_dir, "8")  # never overwritten
    with pytest.raises(FileNotFoundError, match="existing .npz"):
        load_source("arrays", "train", config=str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="no validation_<feature>"):
        load_source("arrays", "validation", config=path)


def test_patch_gan_terms_gradients_and_warmup(tiny):
    """The adversarial terms: zero before disc_start; after it, the autoencoder's gradient from them is
    that of -disc_weight * mean D(x_rec) with D fixed, and D's gradient is that of its hinge loss with x_rec
    fixed (no cross-talk between the two parameter groups)."""
    from jaxdiff.latent import hinge_d_loss
    from jaxdiff.models.autoencoder import PatchDiscriminator

    model, ae_params, x = tiny
    disc = PatchDiscriminator(8, 1, 4)
    with pytest.raises(ValueError, match="too small"):
        PatchDiscriminator(8, 2, 4).init(jax.random.PRNGKey(7), x)
    d_params = disc.init(jax.random.PRNGKey(7), x)["params"]
    params = {"autoencoder": ae_params, "discriminator": d_params}
    keys = example_keys(jax.random.PRNGKey(3), jnp.asarray(0), jnp.arange(4))
    base = make_autoencoder_loss(model, 0.1)
    gan = make_autoencoder_loss(model, 0.1, disc, disc_weight=0.5, disc_start=10)
    batch = {"x": x}
    before, after = 9, 10  # optimizer steps
    np.testing.assert_allclose(jax.jit(lambda p, b: gan(p, b, keys, step=before))(params, batch)[0],
                               jax.jit(base)(ae_params, batch, keys)[0], rtol=1e-6)
    g_gan = jax.jit(jax.grad(lambda p, s: gan(p, batch, keys, step=s)[0]))  # jitted: eager dispatch is slow here
    g_before = g_gan(params, before)
    assert all(float(jnp.abs(v).max()) == 0 for v in jax.tree_util.tree_leaves(g_before["discriminator"]))

    g = g_gan(params, after)

    def rec(p):  # the same posterior sample as the loss
        mean, logvar = model.apply({"params": p}, x, method=model.encode)
        eps = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:]))(keys)
        return model.apply({"params": p}, mean + jnp.exp(0.5 * logvar) * eps, method=model.decode)

    D = lambda dp, im: disc.apply({"params": dp}, im)
    want_ae = jax.jit(jax.grad(lambda p: base(p, batch, keys)[0] + 0.5 * (-D(d_params, rec(p)).mean())))(ae_params)
    want_d = jax.jit(jax.grad(lambda dp: hinge_d_loss(D(dp, x), D(dp, rec(ae_params))).mean()))(d_params)
    for a, b in zip(jax.tree_util.tree_leaves(g["autoencoder"]), jax.tree_util.tree_leaves(want_ae)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g["discriminator"]), jax.tree_util.tree_leaves(want_d)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # hinge loss by hand
    r, f = jnp.array([[2.0, 0.5]]), jnp.array([[-0.5, 1.0]])
    np.testing.assert_allclose(hinge_d_loss(r, f), [0.5 * ((0 + 0.5) / 2 + (0.5 + 2) / 2)])
