"""Consistency models: the parameterization's boundary condition, the exact consistency function of Gaussian
data (zero CD loss with an exact teacher step, positive when perturbed; Heun's step closer than Euler's), and
iCT's distance, weighting, discretisation, index distribution and curriculum against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import consistency as cm
from jaxdiff import samplers
from jaxdiff.schedules import get_schedule

MU, S, SMIN = 0.3, 0.7, 0.002


def exact_f(x, sigma):
    """The consistency function of N(MU, S^2) data: (x_sigma - mu) / sqrt(S^2 + sigma^2) is constant along the
    probability-flow ODE, so f(x, sigma) = mu + (x - mu) sqrt(S^2 + sigma_min^2) / sqrt(S^2 + sigma^2)."""
    r = jnp.sqrt(S**2 + SMIN**2) / jnp.sqrt(S**2 + sigma**2)
    return MU + (x - MU) * r.reshape((-1,) + (1,) * (x.ndim - 1))


def exact_denoiser(x, sigma):
    return MU + (S**2 / (S**2 + sigma**2)).reshape((-1,) + (1,) * (x.ndim - 1)) * (x - MU)


def exact_step(x, s, s_to):  # the ODE's exact flow map
    r = jnp.sqrt(S**2 + s_to**2) / jnp.sqrt(S**2 + s**2)
    return MU + (x - MU) * r.reshape((-1,) + (1,) * (x.ndim - 1))


def test_boundary_condition_is_exact():
    c_skip, c_out = cm.consistency_coefs(jnp.asarray([SMIN, 1.0, 80.0]), SMIN, 0.5)
    assert float(c_skip[0]) == 1.0 and float(c_out[0]) == 0.0
    np.testing.assert_allclose(np.asarray(c_skip[1:]), [0.25 / ((s - SMIN) ** 2 + 0.25) for s in (1.0, 80.0)])
    np.testing.assert_allclose(np.asarray(c_out[1:]), [0.5 * (s - SMIN) / math.sqrt(0.25 + s**2) for s in (1.0, 80.0)],
                               rtol=1e-6)
    f = cm.consistency_fn(lambda x, s: 100.0 + x**2, SMIN, 0.5)
    x = jax.random.normal(jax.random.key(0), (4, 3))
    np.testing.assert_array_equal(np.asarray(f(x, SMIN)), np.asarray(x))


def test_exact_consistency_function_has_zero_cd_loss(x64):
    levels = cm.karras_levels(18, SMIN, 80.0)
    np.testing.assert_allclose(levels, [(SMIN ** (1 / 7) + i / 17 * (80.0 ** (1 / 7) - SMIN ** (1 / 7))) ** 7
                                        for i in range(18)], rtol=1e-12)  # Karras eq. 5, increasing
    f_apply = lambda p, x, s: exact_f(x, s) + p
    loss_fn = cm.make_cd_loss(f_apply, exact_step, levels)
    batch = {"x": MU + S * jax.random.normal(jax.random.key(1), (256, 5), jnp.float64)}
    loss, _ = loss_fn(0.0, 0.0, batch, jax.random.key(2))
    assert float(loss) < 1e-20
    perturbed = lambda p, x, s: exact_f(x, s) * (1 + 0.01 * jnp.tanh(s)).reshape(-1, 1)
    loss_p, _ = cm.make_cd_loss(perturbed, exact_step, levels)(0.0, 0.0, batch, jax.random.key(2))
    assert float(loss_p) > 1e-6
    # jaxdiff's ODE steps as the teacher: Heun's second order beats Euler's first
    le, _ = cm.make_cd_loss(f_apply, cm.euler_step(exact_denoiser), levels)(0.0, 0.0, batch, jax.random.key(2))
    lh, _ = cm.make_cd_loss(f_apply, cm.heun_step(exact_denoiser), levels)(0.0, 0.0, batch, jax.random.key(2))
    assert 0 < float(lh) < float(le) / 4  # 18 levels: 8.0e-5 against 7.1e-4


def test_multistep_sampling_of_the_exact_model_is_exact(x64):
    """f maps sigma_max noise (std 80, against the exact sqrt(S^2 + 80^2)) to N(MU, S^2 + sigma_min^2) up to a
    relative 4e-5 in the std, and each re-noised step keeps that distribution exactly."""
    x_T = 80.0 * jax.random.normal(jax.random.key(3), (200_000, 1), jnp.float64)
    sched = get_schedule("edm")  # sigma from 0.002 (t = 0) to 80 (t = 1), alpha = 1
    model = lambda x, t, cond=None: exact_f(x, sched.sigma(t))
    for opts in ({"num_steps": 1}, {"sigmas": [0.8, 0.1]}):
        x = samplers.sample_consistency(model, sched, x_T, jax.random.key(4), prediction="x0", **opts)
        se = S / math.sqrt(len(x))
        assert abs(float(x.mean()) - MU) < 5 * se * math.sqrt(1 + S**2 / 80**2)
        assert abs(float(x.std()) - math.sqrt(S**2 + SMIN**2)) < 5 * S / math.sqrt(2 * len(x))


def test_ict_formulas_match_hand_computed_values():
    # pseudo-Huber: sqrt(||a - b||^2 + c^2) - c
    a, b = jnp.asarray([[3.0, 4.0]]), jnp.zeros((1, 2))
    np.testing.assert_allclose(float(cm.pseudo_huber(a, b, 0.5)[0]), math.sqrt(25.25) - 0.5, rtol=1e-6)
    assert cm.ict_c(3 * 32 * 32) == pytest.approx(0.0299, abs=1e-4)  # CIFAR-10's c = 0.00054 sqrt(3072)
    assert float(cm.ict_weight(jnp.asarray(1.0), jnp.asarray(1.25))) == 4.0
    # Karras' levels (rho = 7): ends and the middle by hand
    lv = np.asarray(cm.karras_levels(3, 0.002, 80.0))
    mid = ((0.002 ** (1 / 7) + 80 ** (1 / 7)) / 2) ** 7
    np.testing.assert_allclose(lv, [0.002, mid, 80.0], rtol=1e-5)
    # log-normal index probabilities: erf differences at the levels, normalised
    sig = np.array([0.01, 0.1, 1.0, 10.0])
    cdf = [math.erf((math.log(s) + 1.1) / (math.sqrt(2) * 2.0)) for s in sig]
    want = np.diff(cdf) / (cdf[-1] - cdf[0])
    np.testing.assert_allclose(np.asarray(cm.lognormal_index_probs(jnp.asarray(sig))), want, rtol=1e-5)
    # curriculum: K = 600 steps, s0 = 10, s1 = 1280: K' = floor(600 / 8) = 75; N = 11, 21, ..., 1281
    got = [int(cm.ict_num_levels(k, 600)) for k in (0, 74, 75, 150, 525, 599)]
    assert got == [11, 11, 21, 41, 1281, 1281]


def test_ct_loss_uses_the_curriculum_and_the_same_noise(x64):
    """iCT's loss: at step 0 the pair is drawn from the first 11 levels; the exact consistency function of
    Gaussian data has CT loss ~ the ODE's discretisation error only (small), a perturbed one more."""
    f_apply = lambda p, x, s: exact_f(x, s)
    loss_fn = cm.make_ct_loss(f_apply, total_steps=800)
    batch = {"x": MU + S * jax.random.normal(jax.random.key(5), (128, 4), jnp.float64)}
    loss0, m0 = loss_fn(None, batch, jax.random.key(6), 0)
    assert int(m0["num_levels"]) == 11
    levels = np.asarray(cm.karras_levels(11, SMIN, 80.0))
    assert np.all(np.min(np.abs(np.asarray(m0["sigma"])[:, None] - levels[None, 1:]), axis=1) < 1e-9)
    _, m_late = loss_fn(None, batch, jax.random.key(6), 799)
    assert int(m_late["num_levels"]) == 1281


def test_sampler_in_jaxdiff_samplers_on_the_edm_schedule(x64):
    """``samplers.sample("consistency", ...)`` with the exact consistency function as the model: one step and
    three steps give N(MU, S^2 + sigma_min^2); NFE = the number of steps."""
    from jaxdiff import samplers, schedules

    sched = schedules.get_schedule("edm")  # sigma_min = 0.002 = SMIN at t = 0
    model_fn = lambda x, t, cond=None: exact_f(x, sched.sigma(t))
    x_T = samplers.prior_sample(sched, jax.random.key(7), (200_000, 1), jnp.float64)
    for n in (1, 3):
        x = samplers.sample("consistency", model_fn, sched, x_T, jax.random.key(8), num_steps=n, prediction="x0")
        assert samplers.nfe("consistency", sched, num_steps=n) == n
        assert abs(float(x.mean()) - MU) < 5 * S / math.sqrt(len(x))
        assert abs(float(x.std()) - math.sqrt(S**2 + SMIN**2)) < 5 * S / math.sqrt(2 * len(x))


def test_sampler_renoises_to_given_sigmas(x64):
    """``sigmas=`` re-noises to exactly those levels (the grid maps back to them on EDM's and on a VP schedule,
    where the level is sigma / alpha); the sample of the exact model keeps N(MU, S^2 + sigma_min^2), equals the
    run on the explicit grid, NFE = 1 + len(sigmas); bad levels are named before compiling."""
    from jaxdiff import samplers, schedules
    from jaxdiff.samplers.consistency import renoise_grid

    sched = schedules.get_schedule("edm")
    ts = renoise_grid(sched, [2.5, 0.8])
    np.testing.assert_allclose(np.asarray(sched.sigma(ts[1:3])), [2.5, 0.8], rtol=1e-6)
    assert float(ts[0]) == 1.0 and float(sched.sigma(ts[-1])) == pytest.approx(SMIN)
    vp = schedules.get_schedule("cosine")
    tv = renoise_grid(vp, [3.0, 0.5])
    np.testing.assert_allclose(np.asarray(vp.sigma(tv[1:3]) / vp.alpha(tv[1:3])), [3.0, 0.5], rtol=1e-4)
    model_fn = lambda x, t, cond=None: exact_f(x, sched.sigma(t))
    x_T = samplers.prior_sample(sched, jax.random.key(7), (200_000, 1), jnp.float64)
    x = samplers.sample("consistency", model_fn, sched, x_T, jax.random.key(8), sigmas=[2.5, 0.8], prediction="x0")
    ref = samplers.sample("consistency", model_fn, sched, x_T, jax.random.key(8), ts=ts, prediction="x0")
    np.testing.assert_allclose(np.asarray(x), np.asarray(ref), rtol=1e-6, atol=1e-9)
    assert samplers.nfe("consistency", sched, sigmas=[2.5, 0.8]) == 3
    assert abs(float(x.std()) - math.sqrt(S**2 + SMIN**2)) < 5 * S / math.sqrt(2 * len(x))
    for bad in ([0.8, 2.5], [100.0], [0.001], []):
        with pytest.raises(ValueError, match="decreasing sequence of noise levels"):
            renoise_grid(sched, bad)
    with pytest.raises(ValueError, match="not both"):
        samplers.sample("consistency", model_fn, sched, x_T, None, sigmas=[1.0], ts=ts, prediction="x0")


def test_preconditioned_consistency_meets_the_boundary():
    from jaxdiff import schedules
    from jaxdiff.models.precond import Preconditioned
    from jaxdiff.models.unet import UNet, UNetConfig

    sched = schedules.get_schedule("edm")
    net = Preconditioned(UNet(UNetConfig(image_size=8, in_channels=1, base_channels=8, channel_mult=(1,),
                                         num_res_blocks=1, attention_resolutions=(), num_groups=4)),
                         sched, "consistency", 0.5)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    params = net.init(jax.random.key(1), x, jnp.zeros(2))
    params = jax.tree_util.tree_map(lambda v: v + 0.1, params)  # a non-zero output layer
    np.testing.assert_allclose(np.asarray(net.apply(params, x, jnp.zeros(2))), np.asarray(x), atol=1e-6)
    out = net.apply(params, x, jnp.full(2, 0.7))
    assert float(jnp.abs(out - x).max()) > 1e-2


@pytest.mark.e2e  # a config end to end through the drivers: the newest-versions CI pass skips it
def test_ict_trains_through_the_loop(tmp_path, data_dir):
    """digits_ict:smoke: consistency training through the loop (the curriculum follows the optimizer step),
    checkpointed, restored and sampled in one and two steps; a wrong schedule is refused before training."""
    from experiments.configs.digits_ict import get_config
    from jaxdiff.training.generate import generate
    from jaxdiff.training.loop import train_and_evaluate
    from jaxdiff.training.restore import restore_trained
    from jaxdiff.training.tasks import check_task

    c = get_config("smoke")
    c.data.data_dir = data_dir
    c.train.num_steps, c.train.checkpoint_every, c.train.sample_every = 4, 2, 4
    m = train_and_evaluate(c, str(tmp_path / "ict"))
    assert m["step"] == 4 and np.isfinite(m["loss"])
    config, model, schedule, params, step = restore_trained(str(tmp_path / "ict"))
    for n in (1, 2):
        x = generate(config, model, schedule, params, sampler="consistency", num_steps=n, num_samples=4,
                     batch_size=4, seed=0)
        assert x.shape == (4, 8, 8, 1) and np.isfinite(x).all()
    bad = get_config("smoke")
    bad.diffusion.schedule = "vp"
    with pytest.raises(ValueError, match="needs diffusion.schedule='edm'"):
        check_task(bad)


def test_train_step_hands_the_ema_and_the_step_to_the_loss():
    """The one loss contract: ``target_params`` is the EMA (under stop_gradient), ``step`` the optimizer step
    of each step inside a multi-step call."""
    import optax

    from jaxdiff.training import create_train_state, make_train_step

    def loss_fn(params, batch, keys, *, step, target_params=None):
        d = (params["w"] - target_params["w"]) ** 2
        return jnp.mean(d), {"loss": jnp.full((2,), jnp.mean(d)), "seen_step": jnp.full((2,), step)}

    tx = optax.sgd(0.0)
    state = create_train_state({"w": jnp.zeros(3)}, tx, 0)
    state = state.replace(ema_params={"w": jnp.ones(3)}, step=jnp.asarray(5, jnp.int32))
    batch = {"x": jnp.zeros((2, 1)), "index": jnp.arange(2)}
    _, m = jax.jit(make_train_step(loss_fn, tx))(state, batch)
    assert float(m["loss"]) == 1.0 and int(m["seen_step"]) == 5
    two = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), batch)
    _, m = jax.jit(make_train_step(loss_fn, tx, steps_per_jit=2))(state, two)
    assert int(m["seen_step"]) == 6  # the last of the two steps


@pytest.mark.e2e  # a config end to end through the drivers: the newest-versions CI pass skips it
def test_cd_trains_through_the_loop(tmp_path, data_dir):
    """digits_cd:smoke distils a 2-step EDM teacher: the student starts from its weights, trains with the EMA
    as target network, and samples in one step; a teacher on another schedule is refused before training."""
    from experiments.configs.digits_cd import get_config
    from experiments.configs.digits_edm import get_config as edm_config
    from jaxdiff.training.generate import generate
    from jaxdiff.training.loop import train_and_evaluate
    from jaxdiff.training.restore import restore_trained
    from jaxdiff.training.tasks import check_task

    t = edm_config("smoke")
    t.data.data_dir = data_dir
    t.train.num_steps, t.train.checkpoint_every, t.train.sample_every, t.train.snapshot_every = 2, 2, 2, 2
    teacher = str(tmp_path / "edm")
    train_and_evaluate(t, teacher)
    c = get_config("smoke")
    c.data.data_dir, c.consistency.teacher, c.train.init_from = data_dir, teacher, teacher
    c.train.num_steps, c.train.checkpoint_every, c.train.sample_every = 2, 2, 2
    m = train_and_evaluate(c, str(tmp_path / "cd"))
    assert m["step"] == 2 and np.isfinite(m["loss"])
    config, model, schedule, params, _ = restore_trained(str(tmp_path / "cd"))
    x = generate(config, model, schedule, params, sampler="consistency", num_steps=1, num_samples=4, batch_size=4,
                 seed=0)
    assert x.shape == (4, 8, 8, 1) and np.isfinite(x).all()
    bad = get_config("smoke")
    bad.consistency.teacher, bad.train.init_from = str(tmp_path / "missing"), teacher
    with pytest.raises(ValueError, match="consistency.teacher=.* is not a workdir with checkpoints"):
        check_task(bad)
    mixed = get_config("smoke")  # a CD field under consistency training: two methods in one config
    mixed.task = "consistency_training"
    with pytest.raises(ValueError, match=r"consistency.teacher=.* is a field of the tasks \['consistency_distil"):
        check_task(mixed)
