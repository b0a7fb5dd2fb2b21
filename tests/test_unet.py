import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.models import UNet, UNetConfig, count_params, ddpm_cifar10_config
from jaxdiff.models.layers import timestep_embedding

TINY = dict(image_size=8, in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), num_groups=4)


def init(cfg, cond=None, ctx=None):
    m = UNet(cfg)
    x = jnp.ones((2, 8, 8, 1))
    v = m.init(jax.random.key(0), x, jnp.array([0.1, 0.9]), cond)
    return m, v["params"], x


def test_ddpm_cifar10_param_count():
    """Ho et al. 2020: 35.7M parameters; diffusers' google/ddpm-cifar10-32 UNet2DModel has 35,746,307."""
    m = UNet(ddpm_cifar10_config())
    v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,))))
    n = count_params(v["params"])
    assert abs(n - 35.7e6) / 35.7e6 < 0.01
    assert n == 35_746_307


def test_timestep_embedding_formula():
    e = timestep_embedding(jnp.array([0.0, 3.0]), 8)
    freqs = np.exp(-np.log(10000) * np.arange(4) / 4)
    np.testing.assert_allclose(e[1], np.concatenate([np.cos(3 * freqs), np.sin(3 * freqs)]), rtol=1e-6)


def test_starts_as_zero_and_shapes():
    m, p, x = init(UNetConfig(**TINY))
    out = m.apply({"params": p}, x, jnp.array([0.1, 0.9]))
    assert out.shape == (2, 8, 8, 1)
    np.testing.assert_allclose(out, 0.0)  # zero-initialised output conv
    m2, p2, _ = init(UNetConfig(**TINY, learned_variance=True))
    assert m2.apply({"params": p2}, x, jnp.zeros(2)).shape == (2, 8, 8, 2)


def _perturb(p):
    leaves, tree = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.key(9), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [l + 0.05 * jax.random.normal(k, l.shape)
                                               for l, k in zip(leaves, keys)])


def test_time_and_class_conditioning_change_output():
    cfg = UNetConfig(**TINY, num_classes=10)
    m, p, x = init(cfg, cond=jnp.array([1, 2]))
    p = _perturb(p)
    f = lambda t, c: m.apply({"params": p}, x, t, c)
    a = f(jnp.array([0.1, 0.1]), jnp.array([3, 3]))
    assert not np.allclose(a, f(jnp.array([0.5, 0.5]), jnp.array([3, 3])))
    assert not np.allclose(a, f(jnp.array([0.1, 0.1]), jnp.array([4, 4])))
    # None means the null label (index num_classes) for classifier-free guidance.
    np.testing.assert_allclose(f(jnp.array([0.1, 0.1]), None), f(jnp.array([0.1, 0.1]), jnp.array([10, 10])))
    # Examples are independent: batch element 0 does not depend on element 1's label.
    b = f(jnp.array([0.1, 0.1]), jnp.array([3, 7]))
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)


def test_cross_attention_context():
    cfg = UNetConfig(**TINY, context_dim=6)
    m = UNet(cfg)
    x = jnp.ones((2, 8, 8, 1))
    ctx = jax.random.normal(jax.random.key(1), (2, 3, 6))
    p = _perturb(m.init(jax.random.key(0), x, jnp.zeros(2), {"context": ctx})["params"])
    a = m.apply({"params": p}, x, jnp.zeros(2), {"context": ctx})
    b = m.apply({"params": p}, x, jnp.zeros(2), {"context": ctx * 2})
    assert not np.allclose(a, b)


def test_bfloat16_compute_float32_params():
    cfg = UNetConfig(**TINY, dtype="bfloat16")
    m, p, x = init(cfg)
    assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(p))
    p = _perturb(p)
    out = m.apply({"params": p}, x, jnp.array([0.1, 0.9]))
    ref = UNet(UNetConfig(**TINY)).apply({"params": p}, x, jnp.array([0.1, 0.9]))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, atol=0.1)


def test_one_dimensional():
    cfg = UNetConfig(image_size=16, in_channels=2, base_channels=8, channel_mult=(1, 2),
                     num_res_blocks=1, attention_resolutions=(8,), num_groups=4, dims=1)
    m = UNet(cfg)
    x = jnp.ones((3, 16, 2))
    v = m.init(jax.random.key(0), x, jnp.zeros(3))
    assert m.apply(v, x, jnp.zeros(3)).shape == (3, 16, 2)


@pytest.mark.parametrize("kw,match", [
    (dict(image_size=12, channel_mult=(1, 2, 2, 2)), "divisible by 2"),
    (dict(attention_resolutions=(3,)), "not among"),
    (dict(dtype="float8"), "allowed"),
])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**{**TINY, **kw}).validate()


def test_input_shape_check():
    with pytest.raises(ValueError, match="does not fit"):
        UNetConfig(**TINY).check_input((4, 16, 16, 1))


def test_unet1d_is_shift_equivariant_in_the_interior():
    """Without attention, a 1-D U-Net of 2 levels is equivariant to shifts by 2 (its stride) away from the
    zero-padded ends: a wrong axis in any 1-D conv or resampling breaks this."""
    from jaxdiff.models import UNet1D, unet1d_config

    cfg = unet1d_config(128, 2, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                        num_groups=4, scale_shift=False)
    m = UNet1D(cfg)
    x = jnp.zeros((1, 128, 2)).at[:, 56:72].set(jax.random.normal(jax.random.key(0), (1, 16, 2)))
    v = m.init(jax.random.key(1), x, jnp.zeros(1))
    v = {"params": _perturb(v["params"])}
    # A signal in the middle of zeros, shifted by 4 inside the zeros: every feature map is the same multiset
    # of values (GroupNorm statistics unchanged) as long as the signal's influence stays off the padded ends.
    t = jnp.full((1,), 0.3)
    out, out_s = m.apply(v, x, t), m.apply(v, jnp.roll(x, 4, axis=1), t)
    np.testing.assert_allclose(np.asarray(out_s[0, 44:84]), np.asarray(out[0, 40:80]), rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(out[0, 40:80] - out[0, 44:84]).max()) > 1e-2  # the output is not shift-invariant
    with pytest.raises(ValueError, match="dims = 1"):
        UNet1D(UNetConfig(**TINY)).init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)), jnp.zeros(1))
