"""Likelihoods against closed forms: the probability-flow ODE log-likelihood of a Gaussian mixture with
the exact score equals the mixture's diffused log-density at t_min plus the prior mismatch at t = 1
(both closed form), exactly with the exact divergence and in expectation with Hutchinson; importance
sampling of t is unbiased for the likelihood weighting."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import likelihood as LK
from jaxdiff import losses as L
from jaxdiff import schedules as S
from jaxdiff.testing import random_mixture

T_MIN = 1e-3
SCHEDS = {"vp": {}, "subvp": {}, "ve": {"sigma_min": 0.01, "sigma_max": 20.0}, "cosine": {}}


def _problem(name, dim=2, n=16, seed=0):
    gmm = random_mixture(jax.random.key(seed), 3, dim, dtype=jnp.float64)
    sched = S.get_schedule(name, **SCHEDS[name])
    t0 = 0.0 if name == "ve" else T_MIN
    x = gmm.sample(jax.random.key(seed + 1), n)
    x = x * sched.alpha(t0) + sched.sigma(t0) * jax.random.normal(jax.random.key(seed + 2), x.shape, x.dtype)
    return gmm, sched, x, t0


def _closed_form(gmm, sched, x, z, t0):
    """log p_{t0}(x) - log p_1(z) + log pi(z): what the ODE with the prior pi at t = 1 must return."""
    n = x.shape[0]
    at, st = (jnp.full((n,), sched.alpha(t0)), jnp.full((n,), sched.sigma(t0)))
    a1, s1 = jnp.full((n,), sched.alpha(1.0)), jnp.full((n,), sched.sigma(1.0))
    std = jnp.sqrt(a1[0] ** 2 + s1[0] ** 2)
    log_pi = jax.scipy.stats.norm.logpdf(z, 0.0, std).sum(-1)
    return gmm.log_prob_t(x, at, st) - gmm.log_prob_t(z, a1, s1) + log_pi


@pytest.mark.parametrize("name", list(SCHEDS))
def test_exact_divergence_matches_closed_form(name, x64):
    gmm, sched, x, t0 = _problem(name)
    fn = jax.jit(lambda x: LK.ode_log_likelihood(gmm.model_fn(sched), sched, x, None, divergence="exact",
                                                 t_min=t0, rtol=1e-9, atol=1e-9, solver="dopri8"))
    out = fn(x)
    want = _closed_form(gmm, sched, x, out["z"], t0)
    err = np.abs(np.asarray(out["logp"] - want)) / x.shape[1]
    assert err.max() < 1e-6, err  # nats/dim (the issue asks 1e-3; dopri8 at 1e-9 gives ~1e-8)
    # The prior mismatch pi vs p_1 (~1e-3 nats/dim for VP) is included in want, above the tolerance.
    assert np.all(np.isfinite(np.asarray(out["prior_logp"])))


@functools.lru_cache(maxsize=None)
def _hutchinson_problem():
    with jax.enable_x64(True):
        gmm, sched, x, t0 = _problem("vp", dim=3, n=4, seed=3)
        exact = LK.ode_log_likelihood(gmm.model_fn(sched), sched, x, None, divergence="exact", t_min=t0,
                                      rtol=1e-7, atol=1e-7)
        return gmm, sched, x, t0, np.asarray(exact["logp"])


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe, x64):
    gmm, sched, x, t0, exact = _hutchinson_problem()
    R = 256  # independent probes per point: replicate the points along the batch
    xr = jnp.repeat(x, R, axis=0)
    out = jax.jit(lambda x, k: LK.ode_log_likelihood(gmm.model_fn(sched), sched, x, k, probe=probe,
                                                     t_min=t0, rtol=1e-7, atol=1e-7))(xr, jax.random.key(7))
    est = np.asarray(out["logp"]).reshape(x.shape[0], R)
    mean, se = est.mean(1), est.std(1, ddof=1) / np.sqrt(R)
    assert np.all(se > 0)  # it is a noisy estimate (off-diagonal Jacobian terms)
    assert np.all(np.abs(mean - exact) < 4 * se + 1e-6), (mean, exact, se)


def test_ode_bpd_dequantized_bound(x64):
    """bpd of discrete data = -log2 p(x + u)/D + log2((K-1)/2); for a continuous model of uniform bins it
    equals log2 K / ... here: a tight check of the offset with a density we know (uniform over the bins is
    approximated by a broad Gaussian), via the formula against ode_log_likelihood directly."""
    gmm, sched, x, t0 = _problem("vp", n=8)
    K = 17
    key = jax.random.key(5)
    out = LK.ode_bpd(gmm.model_fn(sched), sched, x, key, num_levels=K, divergence="exact", t_min=t0)
    k_deq, k_ode = jax.random.split(key)
    xd = LK.dequantize(x, k_deq, K)
    assert np.all(np.abs(np.asarray(xd - x)) <= 1 / (K - 1) + 1e-12)
    ref = LK.ode_log_likelihood(gmm.model_fn(sched), sched, xd, k_ode, divergence="exact", t_min=t0)
    want = -ref["logp"] / (2 * np.log(2)) + np.log2((K - 1) / 2)
    np.testing.assert_allclose(np.asarray(out["bpd"]), np.asarray(want), rtol=1e-10)


def test_bad_input():
    gmm, sched, x, _ = _problem("vp")
    with pytest.raises(ValueError, match="divergence"):
        LK.ode_log_likelihood(gmm.model_fn(sched), sched, x, None, divergence="trace")
    with pytest.raises(ValueError, match="sigma"):
        LK.ode_log_likelihood(gmm.model_fn(sched), sched, x, None, t_min=0.0)
    with pytest.raises(ValueError, match="probe"):
        LK.ode_log_likelihood(gmm.model_fn(sched), sched, x, None, probe="sphere")


def test_importance_sampling_is_unbiased_for_likelihood_weighting(x64):
    """E_{t ~ p}[w(t)/p(t) f(t)] = int w f dt: the loss with importance-sampled t equals the likelihood-
    weighted loss under t ~ U(t_min, 1) times (1 - t_min) (the integral instead of the mean)."""
    sched = S.get_schedule("vp")
    t_min = 1e-5
    cfg = L.LossConfig(weighting="likelihood", t_sampling="importance", t_min=t_min)
    w = lambda t: L.eps_weight(cfg, sched, t)
    imp = L.ImportanceSampler(w, t_min)
    f = lambda t: jnp.cos(3 * t) + t  # any test function of t
    r = jax.random.uniform(jax.random.key(0), (200_000,), jnp.float64)
    t = imp.sample(r)
    assert float(t.min()) >= t_min * 0.999 and float(t.max()) <= 1.0
    est = imp.ratio(w, t) * f(t)
    # Reference integral by quadrature in log t.
    lt = np.linspace(np.log(t_min), 0, 200_001)
    tt = np.exp(lt)
    ref = np.trapezoid(np.asarray(w(jnp.asarray(tt))) * np.asarray(f(jnp.asarray(tt))) * tt, lt)
    se = float(est.std()) / np.sqrt(est.size)
    assert abs(float(est.mean()) - ref) < 4 * se + 1e-6 * abs(ref)
    # The weights are nearly constant (the point of importance sampling): spread << the uniform-t spread.
    ratio = np.asarray(imp.ratio(w, t))
    assert ratio.std() / ratio.mean() < 0.05
    assert abs(imp.total - float(np.trapezoid(np.asarray(w(jnp.asarray(tt))) * tt, lt))) < 1e-3 * imp.total


def test_importance_needs_a_weighting():
    with pytest.raises(ValueError, match="importance"):
        L.make_loss(lambda p, x, t, c, k: x, S.get_schedule("vp"), weighting="simple", t_sampling="importance")
