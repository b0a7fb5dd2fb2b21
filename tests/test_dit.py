"""DiT (Peebles & Xie 2023): adaLN-Zero identity at init, patchify round trip, the fixed position embedding,
parameter counts and FLOPs of the presets against the reference, remat, bfloat16 params with float32 master
weights, the config switch and its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdiff.models.dit import (
    DiT,
    DiTBlock,
    DiTConfig,
    dit_config,
    flops_per_forward,
    patchify,
    reference_param_count,
    sincos_pos_embed_2d,
    unpatchify,
)
from jaxdiff.models.unet import count_params
from jaxdiff.training.state import master_weights

TINY = DiTConfig(image_size=8, in_channels=3, patch_size=2, hidden_size=32, depth=2, num_heads=4, num_classes=10)


def test_fresh_block_is_the_identity():
    x = jax.random.normal(jax.random.key(0), (2, 16, 32))
    c = jax.random.normal(jax.random.key(1), (2, 32))
    block = DiTBlock(32, 4)
    params = block.init(jax.random.key(2), x, c)
    np.testing.assert_array_equal(np.asarray(block.apply(params, x, c)), np.asarray(x))
    # and not trivially: with a non-zero modulation the block changes x
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.1 if "adaLN" in jax.tree_util.keystr(p) else v, params)
    assert float(jnp.abs(block.apply(params, x, c) - x).max()) > 1e-3
    # the whole fresh DiT outputs zeros (zero-initialised final layer), whatever the input
    model = DiT(TINY)
    xi = jax.random.normal(jax.random.key(3), (2, 8, 8, 3))
    p = model.init(jax.random.key(4), xi, jnp.zeros(2))
    assert float(jnp.abs(model.apply(p, xi, jnp.full(2, 0.5), jnp.array([1, 2]))).max()) == 0.0


def test_patchify_round_trip_and_layout():
    x = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
    patches = patchify(x, 4)
    assert patches.shape == (2, 6, 48)
    np.testing.assert_array_equal(np.asarray(patches[0, 1]), np.asarray(x[0, 0:4, 4:8].reshape(-1)))
    sq = x[:, :, :8]
    np.testing.assert_array_equal(np.asarray(unpatchify(patchify(sq, 2), 2, 3)), np.asarray(sq))


def test_position_embedding_is_mae_sincos():
    dim, grid = 16, 3
    emb = sincos_pos_embed_2d(dim, grid)
    omega = 1.0 / 10000 ** (np.arange(4) / 4.0)
    for i in range(grid):  # row i, column j -> token i * grid + j
        for j in range(grid):
            col, row = j * omega, i * omega
            want = np.concatenate([np.sin(col), np.cos(col), np.sin(row), np.cos(row)])
            np.testing.assert_allclose(emb[i * grid + j], want, atol=1e-12)


PUBLISHED = {"S/2": 32_963_360, "B/2": 130_512_416, "XL/2": 675_129_632}  # facebookresearch/DiT, pos_embed counted
PAPER_GFLOPS = {"S/4": 1.4, "B/4": 5.6, "L/4": 19.7, "XL/4": 29.1, "XL/2": 118.6}  # Table 1 (p = 4); XL/2


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_preset_parameter_counts_equal_the_reference(name):
    cfg = dit_config(name, image_size=32, in_channels=4, num_classes=1000, learned_variance=True)
    shapes = jax.eval_shape(lambda: DiT(cfg).init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)), jnp.zeros(1)))
    n = count_params(shapes["params"])
    # jaxdiff's position embedding is a constant, not a parameter; the reference's is a frozen nn.Parameter
    assert n == reference_param_count(cfg, count_pos_embed=False)
    assert n + cfg.num_patches * cfg.hidden_size == PUBLISHED[name] == reference_param_count(cfg)


@pytest.mark.parametrize("name", list(PAPER_GFLOPS))
def test_flops_match_the_paper(name):
    """XLA counts a multiply-add as 2 FLOPs; the paper's Gflops count it as 1."""
    cfg = dit_config(name, image_size=32, in_channels=4, num_classes=1000, learned_variance=True)
    ratio = flops_per_forward(cfg) / 2e9 / PAPER_GFLOPS[name]
    assert abs(ratio - 1) < 0.02, ratio


def _loss_and_grads(remat: bool):
    cfg = DiTConfig(**{**TINY.__dict__, "remat": remat})
    model = DiT(cfg)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    t = jnp.linspace(0.1, 0.9, 4)
    params = model.init(jax.random.key(1), x, t)
    params = jax.tree_util.tree_map(lambda v: v + 0.05 * jnp.sin(jnp.arange(v.size).reshape(v.shape)), params)
    loss = lambda p: jnp.mean((model.apply(p, x, t, jnp.arange(4)) - x) ** 2)
    fn = jax.jit(jax.value_and_grad(loss))
    return fn(params), fn.lower(params).as_text()


def test_remat_gives_the_same_loss_and_gradients():
    (l0, g0), hlo0 = _loss_and_grads(False)
    (l1, g1), hlo1 = _loss_and_grads(True)
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6 * float(jnp.abs(a).max()))
    # the lowered program recomputes each block's forward pass in the backward pass
    assert hlo1.count("dot_general") > hlo0.count("dot_general")


def test_master_weights_keep_small_updates():
    """bfloat16 params trained through float32 master weights: each param is the master's rounding, and
    updates below bfloat16's spacing accumulate (plain bfloat16 SGD would stay put)."""
    params = {"w": jnp.ones((3,), jnp.bfloat16)}
    tx = master_weights(optax.sgd(1e-3))
    state = tx.init(params)
    plain = params
    for _ in range(10):
        grads = {"w": jnp.ones((3,), jnp.bfloat16)}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        plain = optax.apply_updates(plain, jax.tree_util.tree_map(lambda g: -1e-3 * g, grads))
    assert params["w"].dtype == jnp.bfloat16 and state.master["w"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(state.master["w"]), 0.99, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(params["w"]), np.asarray(state.master["w"].astype(jnp.bfloat16)))
    assert float(plain["w"][0]) == 1.0  # 1 - 1e-3 rounds back to 1 in bfloat16


def _dit_run_config(**model):
    from experiments.configs.digits_dit import get_config

    c = get_config("smoke")
    for k, v in model.items():
        c.model[k] = v
    return c


@pytest.mark.parametrize("field,value,match", [("patch_size", 3, "patch_size=3 does not divide image_size=8"),
                                               ("num_heads", 5, "not divisible by num_heads=5"),
                                               ("backbone", "vit", "model.backbone='vit'")])
def test_bad_dit_config_is_a_named_error(field, value, match):
    from jaxdiff.training.build import build_model

    with pytest.raises(ValueError, match=match):
        build_model(_dit_run_config(**{field: value}))


def test_dit_trains_through_the_loop(tmp_path, data_dir):
    """The backbone is a config switch: digits_dit:smoke trains (bfloat16 params, float32 master weights and
    EMA), checkpoints and samples through the same loop as the U-Net."""
    from jaxdiff.training.loop import train_and_evaluate
    from jaxdiff.training.restore import restore_trained

    c = _dit_run_config(param_dtype="bfloat16", dtype="bfloat16")
    c.data.data_dir = data_dir
    train_and_evaluate(c, str(tmp_path / "dit"))
    config, model, schedule, params, step = restore_trained(str(tmp_path / "dit"))
    assert step == c.train.num_steps and isinstance(model, DiT)
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(params))  # the EMA is float32
    assert list((tmp_path / "dit" / "samples").glob("*.png"))
