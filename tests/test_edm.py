"""EDM's training recipe (Karras et al. 2022): the preconditioning wrapper against Table 1, the loss the loop
trains (EDM's weighting makes the backbone's own error unit-weighted), log-normal noise levels, the stochastic
sampler's churn on the exact Gaussian mixture, and the digits_edm config end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import losses as L
from jaxdiff import parameterization as P
from jaxdiff import samplers
from jaxdiff import schedules as S
from jaxdiff.models import UNet, UNetConfig
from jaxdiff.models.precond import Preconditioned, check_preconditioning
from jaxdiff.rng import Stream, per_example_keys, stream

CFG = UNetConfig(image_size=8, in_channels=1, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                 attention_resolutions=(), num_groups=4)


def _init(m, x, t):
    return m.init(jax.random.key(1), x, t)["params"]


@pytest.mark.parametrize("sched", [S.get_schedule("edm"), S.get_schedule("vp"), S.get_schedule("cosine")])
def test_preconditioned_is_table1_around_the_backbone(sched):
    """D(x_t, t) = c_skip x_hat + c_out F(c_in x_hat; c_noise), x_hat = x_t / alpha, sigma = sigma_t / alpha,
    with the backbone's own params (Table 1, sigma_data = 0.75)."""
    m = Preconditioned(UNet(CFG), sched, "edm", 0.75)
    t = jnp.array([0.05, 0.3, 0.7, 0.95])
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1)) * 3
    params = _init(m, x, t)
    out = np.asarray(m.apply({"params": params}, x, t), np.float64)
    a, s = np.asarray(sched.alpha(t), np.float64), np.asarray(sched.sigma(t), np.float64)
    sig = s / a
    c_skip, c_out = 0.75**2 / (sig**2 + 0.75**2), sig * 0.75 / np.sqrt(sig**2 + 0.75**2)
    c_in, c_noise = 1 / np.sqrt(sig**2 + 0.75**2), np.log(sig) / 4
    x_hat = np.asarray(x, np.float64) / a[:, None, None, None]
    f = np.asarray(UNet(CFG).apply({"params": params["backbone"]}, jnp.asarray(c_in[:, None, None, None] * x_hat,
                                                                               jnp.float32),
                                   jnp.asarray(c_noise, jnp.float32)), np.float64)
    ref = c_skip[:, None, None, None] * x_hat + c_out[:, None, None, None] * f
    np.testing.assert_allclose(out, ref, rtol=2e-4, atol=2e-5)


def test_input_preconditioning_is_the_unet_on_scaled_input():
    sched = S.get_schedule("ve", sigma_min=0.01, sigma_max=10.0)
    m = Preconditioned(UNet(CFG), sched, "input")
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1)) * 5
    t = jnp.array([0.1, 0.5, 1.0])
    params = _init(m, x, t)
    out = m.apply({"params": params}, x, t)
    c_in = 1 / jnp.sqrt(1 + sched.sigma(t) ** 2)
    ref = UNet(CFG).apply({"params": params["backbone"]}, x * c_in[:, None, None, None], t)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_preconditioned_is_identity_at_zero_noise():
    """On a VP schedule the grid's last point has sigma = 0: D = x (c_skip = 1, c_out = 0), finite."""
    m = Preconditioned(UNet(CFG), S.get_schedule("cosine"), "edm", 0.5)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    params = _init(m, x, jnp.full((2,), 0.5))
    out = m.apply({"params": params}, x, jnp.zeros((2,)))
    np.testing.assert_allclose(np.asarray(out), np.asarray(x) / np.asarray(S.get_schedule("cosine").alpha(0.0)),
                               rtol=1e-6)


def test_bad_preconditioning_named():
    with pytest.raises(ValueError, match="allowed: \\['none', 'input', 'edm', 'sigma_scaled', 'consistency'\\]"):
        check_preconditioning("karras", "x0")
    with pytest.raises(ValueError, match="prediction='x0'"):
        check_preconditioning("edm", "eps")
    with pytest.raises(ValueError, match="sigma_data"):
        check_preconditioning("edm", "x0", 0.0)


def test_the_loop_trains_the_backbone_error_unit_weighted(data_dir):
    """The digits_edm config's model and loss: per example, lambda(sigma) ||D - x0||^2 / D equals the
    backbone's plain MSE against its effective target F* = (x0 - c_skip x_hat) / c_out (EDM eq. 8), the
    noise level drawn log-normally."""
    from experiments.configs.digits_edm import get_config
    from jaxdiff.training.build import build_model, build_schedule
    from jaxdiff.training.tasks.diffusion import make_denoising_loss

    c = get_config("smoke")
    c.data.data_dir = data_dir
    model, _ = build_model(c)
    assert isinstance(model, Preconditioned) and model.kind == "edm" and model.sigma_data == 0.75
    sched = build_schedule(c)
    loss_fn = make_denoising_loss(c, model)
    x0 = jax.random.uniform(jax.random.key(0), (6, 8, 8, 1), minval=-1, maxval=1)
    params = _init(model, x0, jnp.full((6,), 0.5))
    key = jax.random.key(3)
    _, m = loss_fn(params, {"x": x0}, key)
    keys = per_example_keys(key, 6)
    eps = jax.vmap(lambda k: jax.random.normal(stream(k, Stream.NOISE), (8, 8, 1)))(keys)
    t = m["t"]
    sig = np.asarray(sched.sigma(t), np.float64)  # alpha = 1 on the EDM schedule
    x_t = np.asarray(x0, np.float64) + sig[:, None, None, None] * np.asarray(eps)
    c_skip, c_out, c_in, c_noise = (np.asarray(v, np.float64) for v in P.edm_precond(sig, 0.75))
    b = lambda v: v[:, None, None, None]
    f = np.asarray(model.backbone.apply({"params": params["backbone"]}, jnp.asarray(b(c_in) * x_t, jnp.float32),
                                        jnp.asarray(c_noise, jnp.float32)), np.float64)
    target = (np.asarray(x0, np.float64) - b(c_skip) * x_t) / b(c_out)
    np.testing.assert_allclose(np.asarray(m["loss"]), ((f - target) ** 2).mean((1, 2, 3)), rtol=2e-3)


@pytest.mark.parametrize("sched_name", ["edm", "vp", "cosine_continuous"])
def test_lognormal_sigma_moments(sched_name):
    """t_sampling='edm_lognormal': ln(sigma_t / alpha_t) has mean P_mean and std P_std (4 standard errors)."""
    sched = S.get_schedule(sched_name)
    cfg = L.LossConfig(t_sampling="edm_lognormal", edm_p_mean=-0.6, edm_p_std=0.8)
    n = 20000
    t, _, _ = L.sample_times(cfg, sched, jax.random.split(jax.random.key(0), n))
    log_sigma = np.asarray(-0.5 * sched.logsnr(t), np.float64)
    assert abs(log_sigma.mean() - (-0.6)) < 4 * 0.8 / np.sqrt(n)
    assert abs(log_sigma.std() - 0.8) < 4 * 0.8 / np.sqrt(2 * n)


@pytest.fixture(scope="module")
def edm_run(tmp_path_factory, data_dir):
    """digits_edm:smoke trained 4 steps: EMA snapshots (sigma_rel 0.05, 0.10) at steps 2 and 4."""
    from experiments.configs.digits_edm import get_config
    from jaxdiff.training.loop import train_and_evaluate

    c = get_config("smoke")
    c.data.data_dir = data_dir
    c.train.num_steps, c.train.checkpoint_every, c.train.sample_every = 4, 2, 4
    wd = tmp_path_factory.mktemp("edm_run")
    m = train_and_evaluate(c, str(wd))
    assert np.isfinite(m["loss"])
    return wd


def test_digits_edm_config_trains_and_samples(edm_run):
    """digits_edm:smoke trains (EDM wrapper, x0, log-normal t, EMA snapshots) and samples with Heun; with
    step_to_zero its N steps are 2N - 1 evaluations, as EDM's Algorithm 1."""
    from jaxdiff.training.generate import generate
    from jaxdiff.training.restore import restore_trained

    assert sorted(p.name for p in (edm_run / "ema_snapshots").iterdir() if p.name.isdigit()) == ["2", "4"]
    config, model, sched, params, _ = restore_trained(str(edm_run))
    x = generate(config, model, sched, params, sampler="heun", num_steps=3, num_samples=4, batch_size=4, seed=0)
    assert x.shape == (4, 8, 8, 1) and np.isfinite(np.asarray(x, np.float64)).all()
    assert samplers.nfe("heun", sched, num_steps=3, step_to_zero=True) == 5
    assert samplers.nfe("heun", sched, num_steps=18, step_to_zero=True) == 35
    assert samplers.nfe("euler", sched, num_steps=18, step_to_zero=True) == 18
    assert samplers.nfe("heun", sched, num_steps=18) == 36


def test_posthoc_ema_workdir(edm_run, tmp_path):
    """experiments.posthoc_ema's function: a tracked profile at the last snapshot comes back as that EMA, is
    written as a new workdir that restores like a run, and is never overwritten; bad input is named."""
    from jaxdiff.training.build import build_optimizer
    from jaxdiff.training.checkpoint import Checkpointer
    from jaxdiff.training.restore import restore_trained, write_posthoc_workdir
    from jaxdiff.training.state import create_train_state
    from jaxdiff.training.tasks import get_task
    from jaxdiff.training.workdir import checkpoint_dir, load_config

    out, info = write_posthoc_workdir(str(edm_run), 0.10, out=str(tmp_path / "p"))
    assert info["step"] == 4 and info["profile_error"] < 1e-6
    config, model, sched, params, step = restore_trained(out)
    assert step == 4 and tuple(config.optim.posthoc_ema) == ()
    c = load_config(str(edm_run))
    t = get_task(c)
    template = create_train_state(t.init(c, t.model(c)), build_optimizer(c), c.seed, num_posthoc=2)
    ck = Checkpointer(checkpoint_dir(str(edm_run)), async_save=False)
    state, _, _ = ck.restore(template)
    ck.close()
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(state.posthoc[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    with pytest.raises(FileExistsError, match="never overwrites"):
        write_posthoc_workdir(str(edm_run), 0.10, out=out)
    with pytest.raises(ValueError, match="allowed: 0 < sigma_rel < sqrt"):  # reach: test_posthoc_ema.py
        write_posthoc_workdir(str(edm_run), 0.5, out=str(tmp_path / "q"))
    with pytest.raises(ValueError, match="tracked no power-function EMAs"):
        write_posthoc_workdir(out, 0.10, out=str(tmp_path / "r"))
    assert not (tmp_path / "q").exists() and not (tmp_path / "r").exists()
