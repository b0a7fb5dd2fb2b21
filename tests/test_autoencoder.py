"""The KL autoencoder against diffusers' AutoencoderKL: a committed fixture (random weights, inputs and
diffusers' outputs) must be reproduced within 1e-4 after importing the state dict; the live comparison
runs too where torch and diffusers are installed; bad state dicts are named."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.models.autoencoder import AutoencoderConfig, AutoencoderKL, kl_to_standard_normal, params_from_torch

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "autoencoder_kl_tiny.npz")
TINY = AutoencoderConfig(in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
                         latent_channels=4, norm_num_groups=8)


def _template():
    m = AutoencoderKL(TINY.validate())
    return m, m.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]


def _load():
    with np.load(FIXTURE) as f:
        sd = {k[3:]: f[k] for k in f.files if k.startswith("sd/")}
        ref = {k: f[k] for k in ("x", "z", "mean", "logvar", "decoded")}
    return sd, ref


def _check(model, params, ref):
    mean, logvar = model.apply({"params": params}, jnp.asarray(ref["x"]), method=AutoencoderKL.encode)
    dec = model.apply({"params": params}, jnp.asarray(ref["z"]), method=AutoencoderKL.decode)
    np.testing.assert_allclose(np.asarray(mean), ref["mean"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(logvar), ref["logvar"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(dec), ref["decoded"], atol=1e-4, rtol=1e-4)


def test_import_matches_committed_fixture():
    sd, ref = _load()
    model, template = _template()
    params = params_from_torch(sd, template)
    _check(model, params, ref)
    assert TINY.downsampling_factor == 2 and ref["mean"].shape == (2, 8, 8, 4)


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None or importlib.util.find_spec("torch") is None,
                    reason="needs the [interop] extra (torch, diffusers)")
def test_import_matches_live_diffusers():
    from fixture_makers.make_vae_fixture import diffusers_vae, run

    vae = diffusers_vae(seed=3)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    z = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
    mean, logvar, dec = run(vae, x, z)
    model, template = _template()
    params = params_from_torch(vae.state_dict(), template)
    _check(model, params, {"x": x, "z": z, "mean": mean, "logvar": logvar, "decoded": dec})


def test_bad_state_dicts_are_named():
    sd, _ = _load()
    _, template = _template()
    missing = dict(sd)
    del missing["decoder.up_blocks.1.resnets.0.conv2.weight"]
    with pytest.raises(ValueError, match="missing 1 tensors.*up_blocks_1_resnets_0/conv2/kernel"):
        params_from_torch(missing, template)
    bad = dict(sd)
    bad["encoder.conv_in.weight"] = np.zeros((16, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"encoder.conv_in.weight.*\(16, 3, 5, 5\)"):
        params_from_torch(bad, template)
    extra = dict(sd, **{"encoder.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="encoder.extra.weight"):
        params_from_torch(extra, template)


def test_kl_closed_form():
    mean = jnp.array([[0.5, -1.0]])
    logvar = jnp.array([[0.2, -0.3]])
    var = np.exp(np.asarray(logvar))
    want = 0.5 * np.sum(np.asarray(mean) ** 2 + var - 1 - np.asarray(logvar))
    np.testing.assert_allclose(kl_to_standard_normal(mean, logvar), [want], rtol=1e-6)


def test_photos_builder(data_dir):
    """64x64 crops of scikit-image's photographs; the test photos never appear in training."""
    from jaxdiff.data import load_source
    from jaxdiff.data.builders import PHOTOS_TEST, photo_crops

    tr, te = load_source("photos", "train", data_dir, "64"), load_source("photos", "test", data_dir, "64")
    assert len(te) == sum(len(photo_crops(n)) for n in PHOTOS_TEST) and len(tr) > 2000
    ex = te[0]
    assert ex["image"].shape == (64, 64, 3) and ex["image"].dtype == np.uint8
    test_labels = {int(te[i]["label"]) for i in range(len(te))}
    train_labels = {int(tr[i]["label"]) for i in range(0, len(tr), 50)}
    assert not test_labels & train_labels
