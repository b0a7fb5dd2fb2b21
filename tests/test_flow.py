"""Flow matching against closed forms: the linear and GVP interpolants, the velocity parameterization and
its conversions, the t-samplings of SD3, the samplers' orders on the exact mixture from t = 1 (alpha = 0),
the flow SDE's marginals, the PF-ODE likelihood under a flow schedule, and the flow-matching loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxdiff import likelihood as LK
from jaxdiff import losses as L
from jaxdiff import samplers
from jaxdiff import schedules as S
from jaxdiff.parameterization import PREDICTIONS, convert, from_x0_eps_at, to_x0_eps, to_x0_eps_at
from jaxdiff.testing import random_mixture

FLOWS = ("flow_linear", "flow_gvp")
T_MIN = 0.01


def test_interpolants_closed_forms(x64):
    t = jnp.linspace(0.0, 1.0, 11)
    lin, gvp = S.get_schedule("flow_linear"), S.get_schedule("flow_gvp")
    np.testing.assert_allclose(lin.alpha(t), 1 - t, atol=1e-15)
    np.testing.assert_allclose(lin.sigma(t), t, atol=1e-15)
    np.testing.assert_allclose(gvp.alpha(t), np.cos(np.pi * t / 2), atol=1e-15)
    np.testing.assert_allclose(gvp.sigma(t), np.sin(np.pi * t / 2), atol=1e-15)
    assert float(lin.alpha(1.0)) == 0.0 and float(gvp.alpha(1.0)) == 0.0  # exactly: the prior is N(0, I)
    a, s, da, ds = lin.rates(t)
    np.testing.assert_allclose(da, -1.0)
    np.testing.assert_allclose(ds, 1.0)
    a, s, da, ds = gvp.rates(t)
    np.testing.assert_allclose(da, -np.pi / 2 * np.sin(np.pi * t / 2), atol=1e-12)
    np.testing.assert_allclose(ds, np.pi / 2 * np.cos(np.pi * t / 2), atol=1e-12)
    ti = t[1:-1]
    np.testing.assert_allclose(lin.logsnr(ti), 2 * np.log((1 - ti) / ti), rtol=1e-12)
    for sched in (lin, gvp):
        np.testing.assert_allclose(sched.t_from_logsnr(sched.logsnr(ti)), ti, rtol=1e-10)
    # The SDE of the linear path's marginals: f = d log alpha / dt = -1/(1-t), g^2 = 2t/(1-t).
    f, g2 = lin.sde(ti)
    np.testing.assert_allclose(f, -1 / (1 - ti), rtol=1e-10)
    np.testing.assert_allclose(g2, 2 * ti / (1 - ti), rtol=1e-10)


@pytest.mark.parametrize("name", FLOWS + ("vp", "cosine"))
def test_velocity_conversions(name, x64):
    """u = alpha' x0 + sigma' eps (= eps - x0 on the linear path); every conversion round-trips through it."""
    sched = S.get_schedule(name)
    k1, k2 = jax.random.split(jax.random.key(0))
    x0, eps = jax.random.normal(k1, (5, 3)), jax.random.normal(k2, (5, 3))
    t = jnp.linspace(0.05, 0.95, 5)
    a, s, da, ds = sched.rates(t)
    x_t = a[:, None] * x0 + s[:, None] * eps
    u = from_x0_eps_at(x0, eps, "velocity", sched, t)
    np.testing.assert_allclose(u, da[:, None] * x0 + ds[:, None] * eps, rtol=1e-12)
    if name == "flow_linear":
        np.testing.assert_allclose(u, eps - x0, rtol=1e-12)
    got_x0, got_eps = to_x0_eps_at(u, "velocity", x_t, sched, t)
    np.testing.assert_allclose(got_x0, x0, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(got_eps, eps, rtol=1e-9, atol=1e-11)
    for p in PREDICTIONS:
        target = from_x0_eps_at(x0, eps, p, sched, t)
        back = convert(convert(target, p, "velocity", x_t, a, s, da, ds), "velocity", p, x_t, a, s, da, ds)
        np.testing.assert_allclose(back, target, rtol=1e-8, atol=1e-10)


def test_velocity_at_the_ends_of_the_linear_path(x64):
    """At t = 1 (alpha = 0) and t = 0 (sigma = 0) the velocity still gives x0 and eps: D = 1."""
    sched = S.get_schedule("flow_linear")
    x0, eps = jnp.ones((2, 3)), -2 * jnp.ones((2, 3))
    for t in (0.0, 1.0):
        x_t = (1 - t) * x0 + t * eps
        got = to_x0_eps_at(eps - x0, "velocity", x_t, sched, jnp.full((2,), t))
        np.testing.assert_allclose(got[0], x0)
        np.testing.assert_allclose(got[1], eps)


def test_velocity_needs_the_derivatives():
    with pytest.raises(ValueError, match="velocity.*derivatives"):
        to_x0_eps(jnp.zeros((1, 2)), "velocity", jnp.zeros((1, 2)), 0.5, 0.5)


def test_t_samplings_match_sd3(x64):
    """Logit-normal: logit(t) ~ N(loc, scale^2); mode sampling: SD3 eq. 20 (s = 0 is uniform; the density
    integrates to 1 and is symmetric about 1/2)."""
    n = jax.random.normal(jax.random.key(0), (200_000,))
    t = np.asarray(L.logit_normal_times(n, 0.5, 0.8))
    z = np.log(t / (1 - t))
    assert abs(z.mean() - 0.5) < 5 * 0.8 / np.sqrt(len(z)) and abs(z.std() - 0.8) < 0.01
    u = jnp.linspace(0.0, 1.0, 10001)
    np.testing.assert_allclose(L.mode_times(u, 0.0), 1 - u, atol=1e-15)
    tm = np.asarray(L.mode_times(u, 1.29))
    assert np.all(np.diff(tm) < 0) and abs(tm[0] - 1) < 1e-12 and abs(tm[-1]) < 1e-12
    np.testing.assert_allclose(tm + tm[::-1], 1.0, atol=1e-12)  # symmetric about 1/2
    # s > 0 concentrates t in the middle: P(|t - 1/2| < 1/4) above uniform's 1/2
    assert np.mean(np.abs(tm - 0.5) < 0.25) > 0.55
    with pytest.raises(ValueError, match="mode_scale"):
        L.make_loss(lambda *a: a[1], S.get_schedule("flow_linear"), t_sampling="mode", mode_scale=3.0)


def test_flow_matching_loss_is_the_velocity_mse(x64):
    """prediction='velocity', weighting='uniform': the loss is mean ||u_hat - (eps - x0)||^2 on the linear
    path; an exact velocity model of a point mass at x0 = c gets loss 0."""
    sched = S.get_schedule("flow_linear")
    c = 0.3

    def exact(params, x_t, t, cond, keys):  # x0 = c always: eps = (x_t - (1 - t) c) / t, u = eps - c
        tb = t[:, None]
        return (x_t - (1 - tb) * c) / tb - c

    loss_fn = L.make_loss(exact, sched, prediction="velocity", weighting="uniform", t_sampling="logit_normal")
    loss, m = loss_fn(None, {"x": jnp.full((64, 4), c)}, jax.random.key(0))
    assert float(loss) < 1e-20
    zero = lambda params, x_t, t, cond, keys: jnp.zeros_like(x_t)
    loss_fn = L.make_loss(zero, sched, prediction="velocity", weighting="uniform")
    x = jnp.full((4096, 4), c)
    loss, _ = loss_fn(None, {"x": x}, jax.random.key(1))
    np.testing.assert_allclose(float(loss), 1 + c**2, rtol=0.03)  # E||eps - x0||^2 / dim = 1 + c^2


@functools.lru_cache(maxsize=None)
def _problem(name, t_max=1.0):
    with jax.enable_x64(True):
        gmm = random_mixture(jax.random.key(0), 3, 2, dtype=jnp.float64)
        sched = S.get_schedule(name)
        x_T = samplers.prior_sample(sched, jax.random.key(1), (64, 2), jnp.float64)
        ref = samplers.sample_ode(gmm.model_fn(sched, "velocity"), sched, x_T, None, rtol=1e-12, atol=1e-12,
                                  solver="dopri8", t_min=T_MIN, t_max=t_max, max_steps=100_000,
                                  prediction="velocity")
        return gmm, sched, x_T, np.asarray(ref)


ORDERS = [  # uniform grids from t = 1 (where alpha = 0), velocity model
    ("ddim", {}, 1),
    ("dpmpp_2m", {"spacing": "uniform"}, 2),
    ("dpmpp_3m", {"spacing": "uniform"}, 3),
    ("unipc", {"order": 2, "spacing": "uniform"}, 3),
    ("heun", {"t_max": 0.98}, 2),  # EDM's samplers and the noise-prediction DPM-Solver step in x / alpha:
    ("euler", {"t_max": 0.98}, 1),  # they start below t = 1
    ("dpm_solver", {"t_max": 0.98, "order": 2}, 2),
    ("dpm_solver", {"t_max": 0.98, "order": 3}, 3),
]


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("sampler,opts,order", ORDERS, ids=lambda v: str(v))
def test_convergence_order_on_flow_paths(name, sampler, opts, order, x64):
    gmm, sched, x_T, ref = _problem(name, opts.get("t_max", 1.0))
    model = gmm.model_fn(sched, "velocity")
    steps = (80, 320) if order == 3 else (40, 160)
    errs = [float(np.sqrt(np.mean((np.asarray(samplers.sample(
        sampler, model, sched, x_T, None, num_steps=n, t_min=T_MIN, prediction="velocity", **opts)) - ref) ** 2)))
        for n in steps]
    slope = np.log(errs[0] / errs[1]) / np.log(4)
    assert abs(slope - order) < 0.3, (errs, slope)


def test_logsnr_grids_from_alpha_zero_converge(x64):
    """The logsnr spacing starts with a uniform-length step out of lambda = -inf; DPM-Solver++(2M) and UniPC
    on it converge to the ODE solution (no NaN from the infinite first step)."""
    gmm, sched, x_T, ref = _problem("flow_linear")
    model = gmm.model_fn(sched, "velocity")
    for sampler in ("dpmpp_2m", "unipc", "dpmpp_2m_sde"):
        kw = {"eta": 0.0} if sampler == "dpmpp_2m_sde" else {}
        errs = [float(np.sqrt(np.mean((np.asarray(samplers.sample(
            sampler, model, sched, x_T, jax.random.key(0), num_steps=n, t_min=T_MIN, prediction="velocity",
            **kw)) - ref) ** 2))) for n in (20, 80)]
        assert np.isfinite(errs).all() and errs[1] < errs[0] / 6, (sampler, errs)


def test_samplers_that_divide_by_alpha_refuse_alpha_zero():
    sched = S.get_schedule("flow_linear")
    x = jnp.zeros((2, 2))
    for name in ("heun", "euler", "dpm_solver"):
        with pytest.raises(ValueError, match="alpha = 0"):
            samplers.sample(name, lambda x, t, c=None: x, sched, x, None, num_steps=4, prediction="velocity")


@pytest.mark.parametrize("diffusion", ["sigma", "constant"])
def test_flow_sde_reproduces_the_mixture(diffusion, x64):
    from test_samplers import SEPARATED, _moments_match

    gmm = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), SEPARATED)
    sched = S.get_schedule("flow_linear")
    x_T = samplers.prior_sample(sched, jax.random.key(7), (4000, 2), jnp.float64)
    kw = {"t_min": 0.02} if diffusion == "constant" else {}  # w / sigma -> inf at t = 0 for constant w
    run = jax.jit(lambda x, k: samplers.sample("flow_sde", gmm.model_fn(sched, "velocity"), sched, x, k,
                                               num_steps=200, diffusion=diffusion, **kw))
    x = run(x_T, jax.random.key(8))
    ode = samplers.sample("ddim", gmm.model_fn(sched, "velocity"), sched, x_T, None, num_steps=200,
                          prediction="velocity", **kw)
    assert float(jnp.abs(x - ode).mean()) > 0.05  # the noise changes the samples
    if diffusion == "constant":  # the density at t_min: the mixture widened by sigma = t_min (x0 ~ (1-t) x0)
        x = x / (1 - 0.02)
        gmm = gmm.replace(stds=jnp.sqrt(gmm.stds**2 + (0.02 / 0.98) ** 2))
    _moments_match(gmm, x)


@pytest.mark.parametrize("name", FLOWS)
def test_ode_likelihood_under_flow_schedule(name, x64):
    """log p_{t_min}(x) of the velocity model's PF ODE (integrated in t) equals the diffused mixture's
    closed-form density: at t = 1 the prior N(0, I) is exact (alpha = 0)."""
    gmm = random_mixture(jax.random.key(0), 3, 2, dtype=jnp.float64)
    sched = S.get_schedule(name)
    t0 = 1e-3
    n = 8
    x = gmm.sample(jax.random.key(1), n)
    x = x * sched.alpha(t0) + sched.sigma(t0) * jax.random.normal(jax.random.key(2), x.shape, x.dtype)
    out = LK.ode_log_likelihood(gmm.model_fn(sched, "velocity"), sched, x, None, prediction="velocity",
                                divergence="exact", t_min=t0, rtol=1e-9, atol=1e-9, solver="dopri8")
    want = gmm.log_prob_t(x, jnp.full((n,), sched.alpha(t0)), jnp.full((n,), sched.sigma(t0)))
    np.testing.assert_allclose(out["logp"], want, atol=2e-6 * x.shape[1])
    np.testing.assert_allclose(out["prior_logp"], stats.norm.logpdf(np.asarray(out["z"])).sum(-1), rtol=1e-10)


@pytest.mark.slow
def test_flow_config_end_to_end(tmp_path, two_step_run):
    """digits_flow:smoke trains a velocity model on the linear path through the generic loop; evaluate samples
    it from t = 1 and reports the flow ODE's bits/dim."""
    from experiments.configs.digits_flow import get_config
    from jaxdiff.apps.evaluate import evaluate
    from jaxdiff.training.loop import train_and_evaluate

    c = two_step_run(get_config("smoke"))
    wd = str(tmp_path / "flow")
    train_and_evaluate(c, wd)
    m = evaluate(wd)
    assert m["sampler"] == "dpmpp_2m" and np.isfinite(m["fd"])
    assert np.isfinite(m["test_ode_bpd"]) and m["test_ode_bpd"] > 0
    with pytest.raises(ValueError, match="variant"):
        get_config("gvp,smok")


# --- reflow -------------------------------------------------------------------------------------------------


def test_straightness_of_a_point_mass_and_of_a_gaussian(x64):
    """Liu et al.'s S: 0 for a point mass (the linear path's ODE moves on straight lines); for N(0, s^2) data
    the ODE is x_t = sqrt(v(t)) z with v = (1-t)^2 s^2 + t^2, so S = z^2 int_0^1 (1 - s - v'/(2 sqrt v))^2 dt."""
    from jaxdiff.reflow import straightness
    from jaxdiff.testing import Gaussian

    sched = S.get_schedule("flow_linear")
    z = jax.random.normal(jax.random.key(0), (16, 2), jnp.float64)
    point = Gaussian(mean=jnp.array([0.3, -0.5]), cov=1e-12 * jnp.eye(2))
    assert float(jnp.max(straightness(point.model_fn(sched, "velocity"), sched, z, num_steps=20))) < 1e-8
    s = 0.4
    gauss = Gaussian(mean=jnp.zeros(2), cov=s**2 * jnp.eye(2))
    got = straightness(gauss.model_fn(sched, "velocity"), sched, z, num_steps=400)
    t = np.linspace(0, 1, 200_001)
    v = (1 - t) ** 2 * s**2 + t**2
    dv = -2 * (1 - t) * s**2 + 2 * t
    integral = np.trapezoid((1 - s - dv / (2 * np.sqrt(v))) ** 2, t)
    want = np.mean(np.asarray(z) ** 2, -1) * integral
    np.testing.assert_allclose(got, want, rtol=2e-2)


def test_reflow_pairs_are_the_exact_ode_pairs(x64):
    """On the exact mixture the pairs (z, x0) are the probability-flow ODE's: x0 equals the dopri8 solution
    from z (to the solver's accuracy), and a stochastic sampler is refused."""
    from jaxdiff.reflow import reflow_pairs

    gmm, sched, x_T, ref = _problem("flow_linear")  # the dopri8 solution from t = 1 to T_MIN
    model = gmm.model_fn(sched, "velocity")
    z, x0 = reflow_pairs(model, sched, x_T, sampler="unipc", num_steps=200, order=3,
                         t_min=T_MIN)
    assert z is x_T
    np.testing.assert_allclose(x0, ref, atol=1e-5)
    with pytest.raises(ValueError, match="deterministic sampler"):
        reflow_pairs(model, sched, x_T, sampler="flow_sde", num_steps=4)


def test_the_loss_trains_on_the_paired_noise(x64):
    """With the paired noise (``noise=``) the flow-matching target is noise - x0 of each pair (no fresh draw): a
    zero model's loss is exactly mean((noise - x0)^2) whatever the key."""
    sched = S.get_schedule("flow_linear")
    x0 = jax.random.normal(jax.random.key(0), (8, 3))
    noise = jax.random.normal(jax.random.key(1), (8, 3))
    zero = lambda params, x_t, t, cond, keys: jnp.zeros_like(x_t)
    loss_fn = L.make_loss(zero, sched, prediction="velocity", weighting="uniform")
    for k in range(2):
        loss, _ = loss_fn(None, {"x": x0}, jax.random.key(k), noise=noise)
        np.testing.assert_allclose(float(loss), float(jnp.mean((noise - x0) ** 2)), rtol=1e-12)


@pytest.mark.slow
def test_reflow_round_end_to_end(tmp_path, data_dir, monkeypatch):
    """digits_flow:smoke trains; experiments.reflow writes its pairs; digits_flow:smoke,reflow trains on them
    from the parent's weights (after one step at warm-up's zero learning rate its EMA equals the parent's)."""
    import sys

    from absl import flags

    from experiments import reflow as reflow_driver
    from experiments.configs.digits_flow import get_config
    from jaxdiff.training.loop import train_and_evaluate
    from jaxdiff.training.restore import restore_trained

    c = get_config("smoke")
    c.data.data_dir = data_dir
    c.train.num_steps, c.train.checkpoint_every, c.train.sample_every = 2, 2, 2
    parent = str(tmp_path / "flow")
    train_and_evaluate(c, parent)
    out = str(tmp_path / "pairs.npz")
    monkeypatch.setattr(sys, "argv", ["reflow", f"--workdir={parent}", "--num_pairs=32", "--num_steps=3",
                                      "--batch_size=16", f"--out={out}"])
    flags.FLAGS(sys.argv)
    reflow_driver.main(["reflow"])
    with np.load(out) as f:
        assert f["x0"].shape == f["noise"].shape == (32, 8, 8, 1) and np.isfinite(f["straightness"])
    r = get_config("smoke,reflow")
    r.data.data_dir, r.data.pairs, r.train.init_from = data_dir, out, parent
    r.train.num_steps, r.train.checkpoint_every, r.train.sample_every = 1, 1, 1
    r.optim.batch_size = 16
    train_and_evaluate(r, str(tmp_path / "reflow"))
    *_, want, _ = restore_trained(parent)
    *_, got, step = restore_trained(str(tmp_path / "reflow"))
    assert step == 1
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
