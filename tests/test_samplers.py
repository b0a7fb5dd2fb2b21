"""Samplers against the exact Gaussian-mixture model (float64): convergence order to the probability-flow
ODE solution, distributional correctness of the stochastic samplers, determinism, compilation counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import samplers
from jaxdiff import schedules as S
from jaxdiff.samplers import multistep, singlestep
from jaxdiff.samplers.common import rho
from jaxdiff.testing import GaussianMixture, random_mixture

T_MIN = 0.01


def make_problem(sched_name="vp", dim=2, n=64, seed=0):
    gmm = random_mixture(jax.random.key(seed), 3, dim, dtype=jnp.float64)
    sched = S.get_schedule(sched_name)
    x_T = samplers.prior_sample(sched, jax.random.key(seed + 1), (n, dim), jnp.float64)
    return gmm, sched, x_T


@functools.lru_cache(maxsize=None)
def reference(sched_name, dim):
    with jax.enable_x64(True):
        gmm, sched, x_T = make_problem(sched_name, dim)
        ref = samplers.sample_ode(gmm.model_fn(sched), sched, x_T, None, rtol=1e-12, atol=1e-12,
                                  solver="dopri8", t_min=T_MIN, max_steps=100_000)
        return np.asarray(ref)


def rmse(a, b):
    return float(jnp.sqrt(jnp.mean((a - b) ** 2)))


ORDERS = [  # (sampler, options, steps, expected global order)
    ("ddim", {}, (20, 40, 80), 1),
    ("euler", {}, (20, 40, 80), 1),
    ("heun", {}, (20, 40, 80), 2),
    ("dpm_solver", {"order": 2}, (10, 20, 40), 2),
    ("dpm_solver", {"order": 3}, (10, 20, 40), 3),
    ("dpmpp_2m", {}, (40, 80, 160), 2),
    # 3M: third order (with the corrected D2 coefficient), whether or not the first step is 2S.
    ("dpmpp_3m", {}, (40, 80, 160), 3),
    ("dpmpp_3m", {"high_order_warmup": True}, (40, 80, 160), 3),
    # UniPC: UniP-p + UniC is order p + 1 (Zhao et al. 2023); UniP-2 alone is DPM-Solver++(2M).
    ("unipc", {"order": 1}, (80, 160, 320), 2),
    ("unipc", {"order": 2}, (40, 80, 160), 3),
    ("unipc", {"order": 2, "corrector": False}, (80, 160, 320), 2),
    ("dpmpp_2m_sde", {"eta": 0.0}, (80, 160, 320), 2),
    ("dpmpp_2s", {}, (20, 40, 80), 2),
    ("dpmpp_2s_ancestral", {"eta": 0.0}, (20, 40, 80), 2),
    ("unipc", {"variant": "bh1"}, (40, 80, 160), 3),
    ("unipc", {"order": 3, "final_corrector": True}, (20, 40, 80), 4),
    # Linear multistep in rho = sigma / alpha; iPNDM's constant-step weights are checked on a rho-uniform
    # grid below (on other grids they are only second order, as Adams-Bashforth with fixed weights is).
    ("deis", {"order": 2, "spacing": "uniform"}, (40, 80, 160), 2),
    ("deis", {"spacing": "uniform"}, (40, 80, 160), 3),
    ("lms", {"order": 3, "spacing": "uniform"}, (40, 80, 160), 3),
    ("lms", {"spacing": "uniform"}, (40, 80, 160), 4),
]


@pytest.mark.parametrize("name,opts,steps,order", ORDERS, ids=lambda v: str(v))
def test_convergence_order(name, opts, steps, order, x64):
    gmm, sched, x_T = make_problem("vp")
    ref = reference("vp", 2)
    model = gmm.model_fn(sched)
    errs = [rmse(samplers.sample(name, model, sched, x_T, jax.random.key(0), num_steps=n, t_min=T_MIN,
                                 **opts), ref) for n in steps]
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.3, (name, opts, errs, slope)


def test_unipc3_at_least_third_order(x64):
    """UniP-3 + UniC is nominally order 4; the first-order warm-up step caps it at 3 asymptotically
    (measured local slopes 3.5-3.8 over 80..640 steps)."""
    gmm, sched, x_T = make_problem("vp")
    steps = (80, 160, 320)
    errs = [rmse(samplers.sample_unipc(gmm.model_fn(sched), sched, x_T, None, num_steps=n, order=3,
                                       t_min=T_MIN), reference("vp", 2)) for n in steps]
    assert -np.polyfit(np.log(steps), np.log(errs), 1)[0] > 2.9, errs


@pytest.mark.parametrize("order", [2, 3])
def _rho_uniform_problem(n, t0=0.5, t1=0.05):
    gmm, sched, x_T = make_problem("vp")
    r = jnp.linspace(rho(sched, t0), rho(sched, t1), n + 1)
    ts = sched.t_from_logsnr(-2 * jnp.log(r)).at[0].set(t0).at[-1].set(t1)
    return gmm.model_fn(sched), sched, x_T, ts


@pytest.mark.parametrize("order", [2, 4])
def test_ipndm_order_on_rho_uniform_grid(order, x64):
    """On a grid uniform in rho the constant-step Adams-Bashforth weights are exact: iPNDM-k equals LMS-k
    and reaches order k (Zhang & Chen 2023)."""
    model, sched, x_T, ts = _rho_uniform_problem(20)
    np.testing.assert_allclose(samplers.sample_ipndm(model, sched, x_T, None, ts=ts, order=order),
                               samplers.sample_lms(model, sched, x_T, None, ts=ts, order=order), atol=1e-11)
    ref = samplers.sample_ode(model, sched, x_T, None, rtol=1e-12, atol=1e-12, solver="dopri8", t_max=0.5,
                              t_min=0.05, max_steps=100_000)
    steps = (20, 40, 80)
    errs = [rmse(samplers.sample_ipndm(model, sched, x_T, None, ts=_rho_uniform_problem(n)[3], order=order), ref)
            for n in steps]
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.35, (errs, slope)


def test_multistep_weights_match_quadrature(x64):
    """LMS and DEIS weights against scipy's adaptive quadrature of their defining integrals: the Lagrange
    basis in rho (k-diffusion's linear_multistep_coeff) and in t times rho'(t) (DEIS tAB)."""
    from scipy import integrate

    sched = S.get_schedule("linear")
    times = (0.41, 0.47, 0.55, 0.66)
    s = 0.33
    r = lambda t: float(rho(sched, jnp.asarray(t)))

    def basis(nodes, j, u):
        return np.prod([(u - nodes[m]) / (nodes[j] - nodes[m]) for m in range(len(nodes)) if m != j])

    for k in (1, 2, 3, 4):
        lms = multistep.lms_weights(sched, tuple(map(jnp.asarray, times)), jnp.asarray(s), k)
        r_nodes = [r(t) for t in times[:k]]
        for j in range(k):
            want = integrate.quad(lambda u: basis(r_nodes, j, u), r(times[0]), r(s), epsabs=1e-13)[0]
            np.testing.assert_allclose(float(lms[j]), want, rtol=1e-9, atol=1e-12)
    vp = S.get_schedule("vp")  # smooth rho' (the discrete table's rho' jumps at every i / T)
    drho_jit = jax.jit(jax.grad(lambda v: rho(vp, v)))
    drho = lambda t: float(drho_jit(jnp.asarray(t, jnp.float64)))
    for k in (1, 2, 3):
        deis = multistep.deis_weights(vp, tuple(map(jnp.asarray, times)), jnp.asarray(s), k)
        for j in range(k):
            want = integrate.quad(lambda u: basis(times[:k], j, u) * drho(u), times[0], s, epsabs=1e-13)[0]
            np.testing.assert_allclose(float(deis[j]), want, rtol=1e-9)


def test_deis1_is_ddim_and_2s_ancestral_noise(x64):
    """DEIS with one eps (constant extrapolation) is DDIM on any grid; the ancestral 2S step's noise is
    k-diffusion's split: with eta = 1 the first-order part of the step has DDPM's posterior variance."""
    gmm, sched, x_T = make_problem("vp")
    model = gmm.model_fn(sched)
    a = samplers.sample_deis(model, sched, x_T, None, num_steps=7, order=1, spacing="logsnr", t_min=T_MIN)
    b = samplers.sample_ddim(model, sched, x_T, None, num_steps=7, spacing="logsnr", t_min=T_MIN)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    t, s = jnp.asarray(0.6), jnp.asarray(0.4)
    t_down, r_up = singlestep.ancestral_split(sched, t, s, 1.0)
    r_t, r_s, r_d = rho(sched, t), rho(sched, s), rho(sched, t_down)
    np.testing.assert_allclose(r_d**2 + r_up**2, r_s**2, rtol=1e-10)
    np.testing.assert_allclose(r_up**2, r_s**2 * (r_t**2 - r_s**2) / r_t**2, rtol=1e-10)
    # eta = 1 with the ODE's first-order part: x_s = alpha_s (x0 + rho_d eps) + alpha_s rho_up z matches
    # DDPM's posterior q(x_s | x_t, x0) in the VE limit; here: its noise variance is alpha_s^2 rho_up^2.
    t_d0, r_up0 = singlestep.ancestral_split(sched, t, s, 0.0)
    assert float(r_up0) == 0.0 and float(t_d0) == float(s)


@pytest.mark.parametrize("name,opts", [("dpmpp_2m", {}), ("dpmpp_3m", {}), ("unipc", {"order": 3}),
                                       ("ipndm", {}), ("deis", {}), ("lms", {})])
def test_lower_order_final(name, opts, x64):
    """lower_order_final changes only the last steps of a grid of fewer than 10 steps: with it the last step
    is first order, i.e. one DDIM step from the state before it."""
    gmm, sched, x_T = make_problem("vp")
    model = gmm.model_fn(sched)
    ts = samplers.time_grid(sched, 6, "logsnr", t_min=T_MIN)
    opts = dict(opts, **({"order": 3} if name in ("ipndm", "lms", "deis") else {}))
    full = samplers.sample(name, model, sched, x_T, None, ts=ts, lower_order_final=True, **opts)
    assert rmse(full, samplers.sample(name, model, sched, x_T, None, ts=ts, lower_order_final=False, **opts)) > 1e-6
    if name != "unipc":  # UniPC's corrector changes the state before the last step (not in the trajectory)
        _, traj = samplers.sample(name, model, sched, x_T, None, ts=ts, lower_order_final=True,
                                  return_trajectory=True, **opts)
        want = samplers.sample_ddim(model, sched, traj[-2], None, ts=ts[-2:])
        np.testing.assert_allclose(full, want, rtol=1e-9, atol=1e-9)
    long = samplers.time_grid(sched, 10, "logsnr", t_min=T_MIN)
    np.testing.assert_array_equal(
        samplers.sample(name, model, sched, x_T, None, ts=long, lower_order_final=True, **opts),
        samplers.sample(name, model, sched, x_T, None, ts=long, lower_order_final=False, **opts))


def test_dpmpp_2m_compiles_one_update_into_its_loop():
    """DPM-Solver++(2M) takes its first-order first step before the loop and compiles no branch (no 3M, no
    order switch) into it; 3M keeps its warm-up switch. The lowered 2M program is the smaller."""
    gmm, sched, x_T = make_problem("vp")
    lowered = {n: jax.jit(lambda x, n=n: samplers.sample(n, gmm.model_fn(sched), sched, x, None, num_steps=6))
               .lower(x_T).as_text() for n in ("dpmpp_2m", "dpmpp_3m")}
    assert "stablehlo.case" not in lowered["dpmpp_2m"] and "stablehlo.case" in lowered["dpmpp_3m"]
    assert len(lowered["dpmpp_2m"]) < len(lowered["dpmpp_3m"])


@pytest.mark.parametrize("order", [2, 3])
def test_multistep_equals_unipc_predictor(order, x64):
    """Two independent derivations agree: DPM-Solver++(2M)/(3M) = UniP-2/UniP-3 (bh2) without corrector."""
    gmm, sched, x_T = make_problem("vp")
    ms = {2: samplers.sample_dpmpp_2m, 3: samplers.sample_dpmpp_3m}[order]
    a = ms(gmm.model_fn(sched), sched, x_T, None, num_steps=12, t_min=T_MIN)
    b = samplers.sample_unipc(gmm.model_fn(sched), sched, x_T, None, num_steps=12, order=order,
                              corrector=False, t_min=T_MIN)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_discrete_schedule_converges(x64):
    """On the tabulated linear schedule the ODE solvers converge to the same limit (lambda-ODE)."""
    gmm, sched, x_T = make_problem("linear")
    model = gmm.model_fn(sched)
    ref = samplers.sample_ode(model, sched, x_T, None, rtol=1e-12, atol=1e-12, solver="dopri8",
                              t_min=T_MIN, max_steps=100_000)
    errs = [rmse(samplers.sample("dpm_solver", model, sched, x_T, None, num_steps=n, t_min=T_MIN), ref)
            for n in (10, 20, 40)]
    assert errs[-1] < 1e-4 and errs[0] / errs[-1] > 30


@pytest.mark.parametrize("prediction", ["x0", "v", "score"])
@pytest.mark.parametrize("name", ["ddim", "heun", "dpmpp_2m", "unipc"])
def test_every_parameterization(name, prediction, x64):
    gmm, sched, x_T = make_problem("vp")
    ref = samplers.sample(name, gmm.model_fn(sched, "eps"), sched, x_T, jax.random.key(0), num_steps=8,
                          t_min=T_MIN)
    got = samplers.sample(name, gmm.model_fn(sched, prediction), sched, x_T, jax.random.key(0),
                          num_steps=8, t_min=T_MIN, prediction=prediction)
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-7)


def test_ddim_eta1_equals_ddpm(x64):
    gmm, _, _ = make_problem()
    sched = S.get_schedule("cosine", num_steps=50)
    x_T = jax.random.normal(jax.random.key(3), (16, 2), jnp.float64)
    model = gmm.model_fn(sched)
    a = samplers.sample_ddim(model, sched, x_T, jax.random.key(4), num_steps=50, eta=1.0)
    b = samplers.sample_ddpm(model, sched, x_T, jax.random.key(4), num_steps=50, variance="fixed_small")
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def _moments_match(gmm: GaussianMixture, x, n_se=5.0):
    """Assign samples to the nearest component mean (well-separated mixture) and compare weights, means
    and variances with the truth within ``n_se`` Monte-Carlo standard errors (+ a small bias floor)."""
    x = np.asarray(x)
    mu, sd, w = np.asarray(gmm.means), np.asarray(gmm.stds), np.asarray(gmm.weights)
    lab = np.argmin(((x[:, None] - mu[None]) ** 2).sum(-1), 1)
    n = len(x)
    for k in range(len(w)):
        xk = x[lab == k]
        w_hat = len(xk) / n
        assert abs(w_hat - w[k]) < n_se * np.sqrt(w[k] * (1 - w[k]) / n) + 0.01, (k, w_hat, w[k])
        se_mean = sd[k] / np.sqrt(len(xk))
        np.testing.assert_array_less(np.abs(xk.mean(0) - mu[k]), n_se * se_mean + 0.01)
        se_std = sd[k] / np.sqrt(2 * len(xk))
        np.testing.assert_array_less(np.abs(xk.std(0) - sd[k]), n_se * se_std + 0.01)


SEPARATED = GaussianMixture(weights=jnp.array([0.5, 0.3, 0.2]),
                            means=jnp.array([[-1.5, 0.0], [1.5, 1.0], [0.5, -2.0]]),
                            stds=jnp.array([[0.3, 0.2], [0.25, 0.35], [0.2, 0.2]]))


@pytest.mark.parametrize("name,sched_name,opts", [
    ("ddpm", "linear", {}),
    ("dpmpp_2m_sde", "vp", {"num_steps": 100}),
    ("pc", "vp", {"num_steps": 400, "snr": 0.16}),
    ("annealed_langevin", "ve", {"num_steps": 50, "n_steps_each": 40, "step_lr": 2e-5}),
])
def test_stochastic_samplers_reproduce_mixture(name, sched_name, opts, x64):
    gmm = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), SEPARATED)
    sched = S.get_schedule(sched_name)
    x_T = samplers.prior_sample(sched, jax.random.key(7), (4000, 2), jnp.float64)
    run = jax.jit(lambda x, k: samplers.sample(name, gmm.model_fn(sched), sched, x, k, **opts))
    _moments_match(gmm, run(x_T, jax.random.key(8)))


@pytest.mark.parametrize("name", ["heun", "euler"])
def test_edm_churn_changes_samples_and_keeps_mixture_moments(name, x64):
    """EDM's stochastic sampler (Algorithm 2): with S_churn > 0 the samples differ from the deterministic
    ones (noise is added and removed again) and still reproduce the exact mixture within 5 standard errors."""
    gmm = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), SEPARATED)
    sched = S.get_schedule("edm")
    x_T = samplers.prior_sample(sched, jax.random.key(7), (4000, 2), jnp.float64)
    opts = dict(num_steps=64 if name == "heun" else 200, step_to_zero=True)  # 18 Heun steps: std +0.03
    churn = dict(S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.0)
    run = jax.jit(lambda x, k, c: samplers.sample(name, gmm.model_fn(sched), sched, x, k, **opts, **dict(c)),
                  static_argnums=2)
    plain = np.asarray(run(x_T, jax.random.key(8), ()))
    churned = np.asarray(run(x_T, jax.random.key(8), tuple(churn.items())))
    assert np.sqrt(np.mean((plain - churned) ** 2)) > 0.05  # a different path
    _moments_match(gmm, churned)
    _moments_match(gmm, plain)


def test_same_key_same_samples_and_jit_agrees():
    gmm, sched, x_T = make_problem("vp", n=8)
    gmm = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), gmm)
    x_T = x_T.astype(jnp.float32)
    f = lambda k: samplers.sample_dpmpp_2m_sde(gmm.model_fn(sched), sched, x_T, k, num_steps=10)
    a, b = f(jax.random.key(1)), jax.jit(f)(jax.random.key(1))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(jax.jit(f)(jax.random.key(1)), b)
    assert not np.allclose(jax.jit(f)(jax.random.key(2)), b)


def test_no_recompile_for_params_key_eta_schedule():
    """Compile at the call site: one compilation serves new params, keys, eta and schedule values."""
    traces = []

    @functools.partial(jax.jit, static_argnames="num_steps")
    def run(gmm, sched, x_T, key, eta, num_steps):
        traces.append(1)
        return samplers.sample_ddim(gmm.model_fn(sched), sched, x_T, key, num_steps=num_steps, eta=eta)

    gmm, _, x_T = make_problem("vp", n=4)
    gmm = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), gmm)
    x_T = x_T.astype(jnp.float32)
    run(gmm, S.VPSchedule(), x_T, jax.random.key(0), 0.0, num_steps=10)
    gmm2 = jax.tree_util.tree_map(lambda a: a * 1.1, gmm)
    run(gmm2, S.VPSchedule(beta_max=15.0), x_T, jax.random.key(1), 0.5, num_steps=10)
    assert len(traces) == 1


@pytest.mark.parametrize("name", ["ddim", "heun", "dpm_solver", "dpmpp_3m", "unipc", "pc"])
def test_trace_size_independent_of_steps(name):
    """The model is traced a fixed number of times whatever num_steps is (lax.scan, no Python loop)."""
    calls = []
    sched = S.get_schedule("vp")

    def model(x, t, cond=None):
        calls.append(1)
        return x * 0.1

    x_T = jnp.ones((2, 3))
    counts = []
    for n in (3, 300):
        calls.clear()
        jax.make_jaxpr(lambda x: samplers.sample(name, model, sched, x, jax.random.key(0), num_steps=n))(x_T)
        counts.append(len(calls))
    assert counts[0] == counts[1]


def test_pmap_sampling_matches_per_device():
    n_dev = jax.local_device_count()
    assert n_dev == 8, "conftest simulates 8 CPU devices"
    gmm, sched, _ = make_problem("vp")
    gmm = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), gmm)
    x_T = jax.random.normal(jax.random.key(0), (n_dev, 4, 2))
    keys = jax.random.split(jax.random.key(1), n_dev)
    f = lambda x, k: samplers.sample_dpmpp_2m_sde(gmm.model_fn(sched), sched, x, k, num_steps=6)
    out = jax.pmap(f)(x_T, keys)
    for d in (0, 5):
        np.testing.assert_allclose(out[d], jax.jit(f)(x_T[d], keys[d]), rtol=1e-5, atol=1e-5)


def test_return_trajectory():
    gmm, sched, x_T = make_problem("vp", n=4)
    x, traj = samplers.sample_ddim(gmm.model_fn(sched), sched, x_T.astype(jnp.float32), None,
                                   num_steps=5, return_trajectory=True)
    assert traj.shape == (5, 4, 2)
    np.testing.assert_array_equal(traj[-1], x)


def test_ode_reports_nfe(x64):
    gmm, sched, x_T = make_problem("vp")
    x, nfe = samplers.sample_ode(gmm.model_fn(sched), sched, x_T, None, rtol=1e-5, atol=1e-5,
                                 t_min=T_MIN, return_nfe=True)
    assert 10 < int(nfe) < 2000
    assert rmse(x, reference("vp", 2)) < 1e-3


def test_grids():
    sched = S.get_schedule("linear")
    np.testing.assert_allclose(samplers.time_grid(sched, 4, "trailing") * 1000, [1000, 750, 500, 250, 0])
    np.testing.assert_allclose(samplers.time_grid(sched, 4, "leading") * 1000, [751, 501, 251, 1, 0])
    # trailing on a continuous schedule that ends at zero noise: the last step from t_max / N straight to 0
    np.testing.assert_allclose(samplers.time_grid(S.get_schedule("vp"), 4, "trailing", t_min=0.0),
                               [1, 0.75, 0.5, 0.25, 0], atol=1e-7)
    g = samplers.time_grid(sched, 10, "karras")
    assert g.shape == (11,) and float(g[-1]) == 0 and bool(jnp.all(jnp.diff(g) < 0))
    edm = S.get_schedule("edm")
    np.testing.assert_allclose(edm.sigma(samplers.time_grid(edm, 17, "karras")),
                               samplers.karras_sigmas(18, 0.002, 80.0), rtol=1e-4)


@pytest.mark.parametrize("call,match", [
    (lambda m, s, x: samplers.sample("nope", m, s, x, None, num_steps=3), "allowed"),
    (lambda m, s, x: samplers.sample("ddim", m, s, x, None, num_steps=0), "num_steps"),
    (lambda m, s, x: samplers.sample("ddim", m, S.get_schedule("linear", num_steps=100), x, None,
                                     num_steps=101), "1..100"),
    (lambda m, s, x: samplers.sample("ddim", m, s, x[0], None, num_steps=3), "rank"),
    (lambda m, s, x: samplers.sample("heun", m, s, x, None, num_steps=3, spacing="log"), "spacing"),
    (lambda m, s, x: samplers.sample("ddim", m, s, x, None, num_steps=3, prediction="e"), "prediction"),
    (lambda m, s, x: samplers.sample("dpm_solver", m, s, x, None, num_steps=3, order=4), "order"),
    (lambda m, s, x: samplers.sample("ipndm", m, s, x, None, num_steps=3), "order 4 needs at least 4 steps"),
    (lambda m, s, x: samplers.sample("deis", m, s, x, None, num_steps=5, order=4), r"\[1, 2, 3\]"),
    (lambda m, s, x: samplers.sample("unipc", m, s, x, None, num_steps=5, variant="bh3"), "bh1"),
    (lambda m, s, x: samplers.sample("unipc", m, s, x, None, num_steps=2, order=3), "order 3 needs at least 3"),
    (lambda m, s, x: samplers.sample("dpmpp_3m", m, s, x, None, num_steps=2), "order 3 needs at least 3"),
    (lambda m, s, x: samplers.sample("dpmpp_2s", m, s, x, None, num_steps=5, r=1.5), "r must"),
])
def test_bad_input(call, match):
    def model(x, t, cond=None):
        raise AssertionError("must fail before calling the model")

    with pytest.raises(ValueError, match=match):
        call(model, S.get_schedule("vp"), jnp.ones((2, 3)))


def test_ddpm_learned_variance_channels(x64):
    """Variance channels v = -1 give beta_tilde (fixed small), v = +1 give beta (fixed large)."""
    gmm, _, _ = make_problem()
    sched = S.get_schedule("cosine", num_steps=20)
    x_T = jax.random.normal(jax.random.key(3), (8, 2), jnp.float64)
    base = gmm.model_fn(sched)
    for v, variance in [(-1.0, "fixed_small"), (1.0, "fixed_large")]:
        learned = lambda x, t, c=None, v=v: jnp.concatenate([base(x, t), jnp.full_like(x, v)], -1)
        a = samplers.sample_ddpm(learned, sched, x_T, jax.random.key(4), variance="learned_range")
        b = samplers.sample_ddpm(base, sched, x_T, jax.random.key(4), variance=variance)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def _self_conditioned(gmm, sched):
    """A stateful model whose output depends on its state, the previous step's x0 estimate (as a
    self-conditioned network at sampling time): eps = eps*(x, t) + 0.3 tanh(x0_prev)."""
    eps_true = gmm.model_fn(sched)

    def fn(x, t, cond, prev):
        eps = eps_true(x, t, cond) + 0.3 * jnp.tanh(prev)
        a, s = sched.alpha(t)[:, None], sched.sigma(t)[:, None]
        return eps, (x - s * eps) / a

    return samplers.StatefulModel(fn, jnp.zeros_like)


def test_a_stateful_model_advances_once_per_step(x64):
    """DDIM and Heun with a state-carrying model equal Python loops that feed each step the x0 estimate of
    the previous step's first evaluation (Heun's second evaluation sees the same state as its first)."""
    from jaxdiff.samplers.ddim import ddim_step
    from jaxdiff.samplers.edm import pf_ode_step

    gmm, sched, x_T = make_problem("vp")
    sm = _self_conditioned(gmm, sched)
    ts = jnp.array([1.0, 0.7, 0.4, 0.2, 0.05, 0.0], jnp.float64)
    B = x_T.shape[0]
    call = lambda x, t, prev: sm.fn(x, jnp.full((B,), t), None, prev)  # noqa: E731

    x, prev = x_T, sm.init(x_T)
    for t, s in zip(ts[:-1], ts[1:]):
        eps, new = call(x, t, prev)
        x0 = (x - sched.sigma(t) * eps) / sched.alpha(t)
        x, prev = ddim_step(sched, x, x0, eps, t, s, 0.0, jnp.zeros_like(x)), new
    np.testing.assert_allclose(samplers.sample("ddim", sm, sched, x_T, None, ts=ts), x, rtol=1e-10, atol=1e-12)

    x, prev = x_T, sm.init(x_T)
    for t, s in zip(ts[:-1], ts[1:]):
        state, first = prev, []

        def D(xh, tt, state=state, first=first):
            xx = sched.alpha(tt) * xh
            eps, new = call(xx, tt, state)
            first.append(new)
            return (xx - sched.sigma(tt) * eps) / sched.alpha(tt)

        xh = pf_ode_step(D, x / sched.alpha(t), rho(sched, t), rho(sched, s), second_order=True, t=t, t_to=s)
        x, prev = sched.alpha(s) * xh, first[0]
    np.testing.assert_allclose(samplers.sample("heun", sm, sched, x_T, None, ts=ts), x, rtol=1e-10, atol=1e-12)
    plain = samplers.sample("heun", gmm.model_fn(sched), sched, x_T, None, ts=ts)
    assert rmse(plain, x) > 1e-3  # the state changed the result


@pytest.mark.parametrize("name", [n for n in samplers.SAMPLERS if n not in ("ode", "annealed_langevin", "ddpm")])
def test_every_grid_sampler_carries_a_state_it_does_not_see(name, x64):
    """A stateful model whose output ignores its state (a step counter) samples as the plain model does;
    the samplers that cannot carry a state refuse one by name."""
    gmm, sched, x_T = make_problem("vp", n=8)
    plain = gmm.model_fn(sched)
    sm = samplers.StatefulModel(lambda x, t, c, k: (plain(x, t, c), k + 1), lambda x: jnp.zeros((), jnp.int32))
    opts = dict({"dpmpp_3m": {"high_order_warmup": True}, "pc": {"n_corrector_steps": 0}}.get(name, {}),
                num_steps=4, t_min=T_MIN)
    key = jax.random.key(0)
    np.testing.assert_allclose(samplers.sample(name, sm, sched, x_T, key, **opts),
                               samplers.sample(name, plain, sched, x_T, key, **opts), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["ode", "annealed_langevin", "ddpm", "pc"])
def test_samplers_without_a_step_loop_refuse_a_stateful_model(name):
    gmm, sched, x_T = make_problem("vp", n=4)
    sm = samplers.StatefulModel(lambda x, t, c, k: (gmm.model_fn(sched)(x, t, c), k), lambda x: 0.0)
    with pytest.raises(ValueError, match=f"{name}.*cannot carry a stateful model's state"):
        samplers.sample(name, sm, sched, x_T, jax.random.key(0), num_steps=4)
