import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import forward as F
from jaxdiff import parameterization as P
from jaxdiff import schedules as S


def test_q_sample_moments():
    s = S.get_schedule("cosine")
    key = jax.random.key(0)
    n = 200_000
    x0 = jnp.full((n, 2), 0.7)
    t = jnp.full((n,), 0.4)
    x_t = F.q_sample(s, x0, t, jax.random.normal(key, x0.shape))
    a, sig = float(s.alpha(0.4)), float(s.sigma(0.4))
    se = sig / np.sqrt(n)
    np.testing.assert_allclose(x_t.mean(0), a * 0.7, atol=5 * se)
    np.testing.assert_allclose(x_t.std(0), sig, rtol=0.01)


def test_posterior_matches_ddpm_eq7(x64):
    """DDPM eq. 7 coefficients computed from the betas directly."""
    s = S.get_schedule("linear", num_steps=50)
    betas = np.asarray(s.betas)
    ab = np.cumprod(1 - betas)
    i = np.arange(2, 51)  # 1-indexed step t, s = t - 1
    ab_t, ab_prev, b = ab[i - 1], ab[i - 2], betas[i - 1]
    c_x0 = np.sqrt(ab_prev) * b / (1 - ab_t)
    c_xt = np.sqrt(1 - b) * (1 - ab_prev) / (1 - ab_t)
    var = (1 - ab_prev) / (1 - ab_t) * b
    got = F.q_posterior_coefs(s, (i - 1) / 50, i / 50)
    np.testing.assert_allclose(got[0], c_x0, rtol=1e-10)
    np.testing.assert_allclose(got[1], c_xt, rtol=1e-10)
    np.testing.assert_allclose(got[2], var, rtol=1e-10)


@pytest.mark.parametrize("name", ["vp", "ve", "subvp", "cosine"])
def test_posterior_is_gaussian_conditional(name, x64):
    """q(x_s|x_t,x0) by Gaussian conditioning of the joint (x_s, x_t) | x0, computed independently."""
    sched = S.get_schedule(name)
    s, t = 0.3, 0.55
    a_s, a_t = float(sched.alpha(s)), float(sched.alpha(t))
    v_s, v_t = float(sched.sigma(s)) ** 2, float(sched.sigma(t)) ** 2
    a_ts = a_t / a_s
    cov_st = a_ts * v_s  # Cov(x_s, x_t | x0)
    x0, x_t = 0.4, -0.2
    mean_ref = a_s * x0 + cov_st / v_t * (x_t - a_t * x0)
    var_ref = v_s - cov_st**2 / v_t
    mean, var = F.q_posterior(sched, jnp.array([[x0]]), jnp.array([[x_t]]), s, t)
    np.testing.assert_allclose(mean[0, 0], mean_ref, rtol=1e-10)
    np.testing.assert_allclose(var, var_ref, rtol=1e-9)


def test_prior_kl_closed_form(x64):
    s = S.get_schedule("linear")
    x0 = jnp.array([[0.5, -1.0]])
    ab = float(s.alpha_bar[-1])
    ref = sum(0.5 * (ab * x**2 + (1 - ab) - 1 - np.log(1 - ab)) for x in (0.5, -1.0))
    np.testing.assert_allclose(F.prior_kl(s, x0), [ref], rtol=1e-8)
    ve = S.get_schedule("ve")
    ref_ve = sum(0.5 * ((x**2 + 50.0**2) / 50.0**2 - 1 - 0) for x in (0.5, -1.0))
    np.testing.assert_allclose(F.prior_kl(ve, x0), [ref_ve], rtol=1e-8)


@pytest.mark.parametrize("name", ["linear", "ve", "subvp", "edm"])
@pytest.mark.parametrize("src", P.PREDICTIONS)
@pytest.mark.parametrize("dst", P.PREDICTIONS)
def test_conversions_roundtrip(name, src, dst):
    sched = S.get_schedule(name)
    key = jax.random.key(1)
    x0 = jax.random.normal(key, (4, 3))
    eps = jax.random.normal(jax.random.fold_in(key, 1), (4, 3))
    t = jnp.array([0.1, 0.3, 0.6, 0.9])
    r = sched.rates(t)  # (alpha, sigma, alpha', sigma'): velocity needs the derivatives
    x_t = F.q_sample(sched, x0, t, eps)
    pred = P.from_x0_eps(x0, eps, src, *r)
    out = P.convert(pred, src, dst, x_t, *r)
    back = P.convert(out, dst, src, x_t, *r)
    np.testing.assert_allclose(back, pred, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(out, P.from_x0_eps(x0, eps, dst, *r), rtol=2e-4, atol=2e-4)


def test_v_finite_at_zero_terminal_snr():
    sched = S.get_schedule("linear", zero_terminal_snr=True)
    x_t = jnp.ones((1, 2))
    x0, eps = P.to_x0_eps(jnp.ones((1, 2)) * 0.3, "v", x_t, sched.alpha(1.0), sched.sigma(1.0))
    np.testing.assert_allclose(x0, -0.3)  # x0 = -v when alpha = 0, sigma = 1
    np.testing.assert_allclose(eps, 1.0)


def test_edm_precond_table1():
    c_skip, c_out, c_in, c_noise = P.edm_precond(jnp.array(2.0), 0.5)
    np.testing.assert_allclose(c_skip, 0.25 / 4.25, rtol=1e-6)
    np.testing.assert_allclose(c_out, 1.0 / np.sqrt(4.25), rtol=1e-6)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(4.25), rtol=1e-6)
    np.testing.assert_allclose(c_noise, np.log(2.0) / 4, rtol=1e-6)
    # A network that outputs F = (x0 - c_skip x)/c_out gives D = x0: preconditioning is exact.
    sched = S.get_schedule("vp")
    x0 = jnp.array([[0.3, -0.4]])
    t = jnp.array([0.5])
    x_t = F.q_sample(sched, x0, t, jnp.array([[1.0, 2.0]]))

    def net(x_in, c_noise, cond):
        sigma = jnp.exp(4 * c_noise)
        cs, co, ci, _ = P.edm_precond(sigma, 0.5)
        x_hat = x_in / ci
        return (x0 - cs * x_hat) / co

    np.testing.assert_allclose(P.edm_model_fn(net, sched)(x_t, t), x0, rtol=1e-5)


def test_unknown_prediction():
    with pytest.raises(ValueError, match="allowed"):
        P.check_prediction("epsilon")


@pytest.mark.parametrize("prediction", P.PREDICTIONS)
def test_clip_x0_model_fn(prediction, x64):
    sched = S.get_schedule("cosine")
    x0 = jnp.array([[0.5, -2.0, 3.0]])
    eps = jnp.array([[0.3, -0.1, 0.2]])
    t = jnp.array([0.7])
    r = sched.rates(t)
    a, s = r[0], r[1]
    x_t = F.q_sample(sched, x0, t, eps)
    model = lambda x, tt, c=None: P.from_x0_eps(x0, eps, prediction, *r)
    out = P.clip_x0_model_fn(model, sched, prediction, 1.0)(x_t, t)
    x0_c, eps_c = P.to_x0_eps(out, prediction, x_t, *r)
    np.testing.assert_allclose(x0_c, [[0.5, -1.0, 1.0]], atol=1e-9)  # clipped, in-range value kept
    np.testing.assert_allclose(a * x0_c + s * eps_c, x_t, atol=1e-9)  # still consistent with x_t


def test_shape_errors():
    s = S.get_schedule("linear")
    with pytest.raises(ValueError, match="eps has shape"):
        F.q_sample(s, jnp.ones((2, 3)), jnp.ones(2) * 0.5, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \[batch\]"):
        F.q_sample(s, jnp.ones((2, 3)), jnp.ones(3) * 0.5, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="x_t has shape"):
        F.q_posterior(s, jnp.ones((2, 3)), jnp.ones((3, 3)), 0.1, 0.2)
