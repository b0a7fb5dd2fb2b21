import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.models import UNetConfig
from jaxdiff.models.text import TextEncoder, TextUNet, digit_caption, tokenize


def test_tokenize_bytes_plus_one_and_padding():
    t = tokenize(["ab", ""], 4)
    np.testing.assert_array_equal(t, [[ord("a") + 1, ord("b") + 1, 0, 0], [0, 0, 0, 0]])
    assert tokenize(["abcdef"], 3).shape == (1, 3)


def test_captions():
    assert digit_caption(7, 0) == "a handwritten seven"
    assert digit_caption(7, 1) == "the number 7"


def test_encoder_ignores_padding_and_text_changes_unet_output():
    enc = TextEncoder(dim=16, num_layers=1, num_heads=2, max_len=8)
    a, b = tokenize(["seven"], 8), tokenize(["seven"], 8)
    b[0, 6:] = 0  # already padding: identical
    p = enc.init(jax.random.key(0), a)["params"]
    out = enc.apply({"params": p}, a)
    np.testing.assert_allclose(out, enc.apply({"params": p}, b))
    np.testing.assert_allclose(out[0, 5:], 0.0)  # padded positions are zeroed
    cfg = UNetConfig(image_size=8, in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(4,), num_groups=4, context_dim=16)
    m = TextUNet(cfg, 16, 1, 2, 8)
    x = jnp.ones((1, 8, 8, 1))
    v = m.init(jax.random.key(1), x, jnp.zeros(1), {"tokens": jnp.asarray(a)})
    leaves, tree = jax.tree_util.tree_flatten(v)
    v = jax.tree_util.tree_unflatten(tree, [l + 0.05 * jax.random.normal(jax.random.key(i), l.shape)
                                            for i, l in enumerate(leaves)])
    f = lambda s: m.apply(v, x, jnp.zeros(1), {"tokens": jnp.asarray(tokenize([s], 8))})
    assert not np.allclose(f("seven"), f("two"))
    np.testing.assert_allclose(m.apply(v, x, jnp.zeros(1), None), f(""))  # None = the empty caption
