"""The FID Inception in Flax against pytorch-fid (fixture: its features under seed-made weights), the weight
converter's named errors, PyTorch's bilinear resize."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.evaluation.inception import FIDInceptionV3, resize_bilinear, resize_matrix, to_inception_input
from jaxdiff.interop import inception as conv
from jaxdiff.interop.make_inception_fixture import large_image

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "inception_fid_fixture.npz")


@pytest.fixture(scope="module")
def fixture_features():
    """The Flax network's features of the fixture's images (one compile: both sizes resized to 299 first)."""
    f = np.load(FIXTURE)
    params = conv.convert_state_dict(conv.random_state_dict(int(f["seed"])))
    imgs = [jnp.asarray(f["images_32"], jnp.float32) / 255, jnp.asarray(large_image(), jnp.float32) / 255]
    x = jnp.concatenate([resize_bilinear(i, 299) for i in imgs])
    out = jax.jit(lambda p, x: FIDInceptionV3("all", resize_input=False).apply({"params": p}, x))(params, x)
    return f, out


@pytest.mark.parametrize("name", ["pool", "mixed_6e"])
def test_features_equal_pytorch_fid(fixture_features, name):
    """2048-d pool and 768-d Mixed_6e features equal pytorch-fid's within 1e-4 (relative, float32), for
    32x32 images (upsampled to 299) and a 333x310 one (downsampled)."""
    f, out = fixture_features
    ref = np.concatenate([f[f"{name}_32"], f[f"{name}_333x310"]])
    got = np.asarray(out[name])
    assert got.shape == ref.shape == (3, {"pool": 2048, "mixed_6e": 768}[name])
    scale = np.abs(ref).max()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * scale)


def test_resize_matrix_is_pytorch_bilinear():
    """align_corners=False: rows sum to 1; a linear ramp stays linear away from the clamped edges; the
    identity at equal sizes; downsampling by 2 averages neighbour pairs (no antialiasing)."""
    m = resize_matrix(7, 19)
    np.testing.assert_allclose(m.sum(1), 1.0)
    src = (np.arange(19) + 0.5) * 7 / 19 - 0.5
    inner = (src >= 0) & (src <= 6)
    np.testing.assert_allclose((m @ np.arange(7.0))[inner], src[inner], atol=1e-12)
    np.testing.assert_allclose(resize_matrix(5, 5), np.eye(5))
    np.testing.assert_allclose(resize_matrix(8, 4) @ np.arange(8.0), [0.5, 2.5, 4.5, 6.5])


def test_converter_errors_name_the_tensor():
    sd = conv.random_state_dict(0)
    sd["fc.weight"] = np.zeros((1008, 2048), np.float32)  # the classifier head is ignored
    params = conv.convert_state_dict(sd)
    assert params["Mixed_7c"]["branch_pool"]["kernel"].shape == (1, 1, 2048, 192)
    missing = dict(sd)
    del missing["Mixed_6e.branch7x7dbl_4.bn.running_var"]
    with pytest.raises(ValueError, match="no tensor 'Mixed_6e.branch7x7dbl_4.bn.running_var'"):
        conv.convert_state_dict(missing)
    bad = dict(sd, **{"Conv2d_1a_3x3.conv.weight": np.zeros((32, 1, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"'Conv2d_1a_3x3.conv.weight' has shape \(32, 1, 3, 3\).*\(32, 3, 3, 3\)"):
        conv.convert_state_dict(bad)
    with pytest.raises(ValueError, match="does not use: \\['Mixed_8a.conv.weight'\\]"):
        conv.convert_state_dict(dict(sd, **{"Mixed_8a.conv.weight": np.zeros(3)}))
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05"):
        conv.load_fid_inception("/nonexistent/pt_inception.pth")


def test_npz_weights_roundtrip(tmp_path):
    sd = conv.random_state_dict(3)
    np.savez(tmp_path / "w.npz", **sd)
    a, b = conv.load_fid_inception(str(tmp_path / "w.npz")), conv.convert_state_dict(sd)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_inception_input_and_bad_shapes():
    x = to_inception_input(np.array([[[0, 16]]], np.uint8)[..., None], num_levels=17)
    np.testing.assert_allclose(x[0, 0, :, 0], [0.0, 1.0])
    assert x.shape == (1, 1, 2, 3)
    np.testing.assert_allclose(to_inception_input(np.full((1, 2, 2, 3), -1.0)), 0.0)
    with pytest.raises(ValueError, match=r"\[N, H, W, 1 or 3\]"):
        to_inception_input(np.zeros((2, 4, 4, 2)))
    with pytest.raises(ValueError, match="allowed"):
        FIDInceptionV3("logits").init(jax.random.key(0), jnp.zeros((1, 75, 75, 3)))


@pytest.mark.skipif(not __import__("importlib").util.find_spec("pytorch_fid"), reason="needs the [fid] extra")
def test_live_pytorch_fid_comparison():
    """With pytorch-fid installed (the [fid] extra): its features of fresh images equal the Flax network's."""
    from jaxdiff.interop.make_inception_fixture import pytorch_fid_features

    imgs = np.random.default_rng(5).integers(0, 256, (2, 40, 56, 3)).astype(np.uint8)
    ref = pytorch_fid_features(imgs, seed=11)["pool"]
    params = conv.convert_state_dict(conv.random_state_dict(11))
    got = FIDInceptionV3().apply({"params": params}, jnp.asarray(imgs, jnp.float32) / 255)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
