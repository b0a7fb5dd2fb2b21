import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import schedules as S

CONTINUOUS = ["vp", "subvp", "ve", "edm", "logsnr_linear", "cosine_continuous"]
DISCRETE = ["linear", "scaled_linear", "cosine", "sigmoid"]


def test_linear_published_values():
    s = S.get_schedule("linear")
    assert s.num_steps == 1000
    np.testing.assert_allclose(s.betas[0], 1e-4, rtol=1e-5)
    np.testing.assert_allclose(s.betas[-1], 0.02, rtol=1e-5)
    # alpha_bar_T = prod(1 - beta) for the DDPM linear schedule = 4.036e-5 (Ho et al. 2020).
    ref = np.prod(1 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(s.alpha_bar[-1], ref, rtol=1e-4)
    np.testing.assert_allclose(ref, 4.0358e-5, rtol=1e-3)


def test_cosine_published_values():
    s = S.get_schedule("cosine", num_steps=4000)
    T = 4000
    f = lambda i: np.cos((i / T + 0.008) / 1.008 * np.pi / 2) ** 2
    i = np.array([1, 100, 2000, 3900])
    np.testing.assert_allclose(s.alpha_bar[i], f(i) / f(0), rtol=1e-5)
    assert float(s.betas.max()) <= 0.999 + 1e-7
    np.testing.assert_allclose(s.betas[-1], 0.999, rtol=1e-6)  # clipped at the end


def test_scaled_linear_and_from_betas_roundtrip():
    s = S.get_schedule("scaled_linear")
    ref = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    np.testing.assert_allclose(s.betas, ref, rtol=1e-4)


def test_grid_points_exact():
    s = S.get_schedule("linear", num_steps=100)
    t = jnp.arange(101) / 100
    np.testing.assert_allclose(s.alpha(t) ** 2, s.alpha_bar, rtol=1e-5)


@pytest.mark.parametrize("name", CONTINUOUS + DISCRETE)
def test_invariants(name, x64):
    s = S.get_schedule(name)
    d = 1e-3
    t = jnp.linspace(d, 1 - d, 997)
    a, sig, l = s.alpha(t), s.sigma(t), s.logsnr(t)
    np.testing.assert_allclose(l, jnp.log(a**2 / sig**2), rtol=1e-9, atol=1e-9)
    assert bool(jnp.all(jnp.diff(l) < 0)), "log-SNR must be strictly decreasing"
    np.testing.assert_allclose(s.t_from_logsnr(l), t, atol=1e-8)
    if name not in ("subvp", "ve", "edm"):
        np.testing.assert_allclose(a**2 + sig**2, 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", CONTINUOUS + ["linear", "cosine"])
def test_sde_reproduces_marginal_variance(name, x64):
    """The SDE (f, g^2) must generate the schedule's marginals: d(sigma^2)/dt = 2 f sigma^2 + g^2 and
    d(alpha)/dt = f alpha, checked by finite differences of the schedule itself."""
    s = S.get_schedule(name)
    t = jnp.linspace(0.05, 0.95, 19)
    if name in ("linear", "cosine"):  # piecewise: take midpoints of grid cells
        t = (jnp.floor(t * s.num_steps) + 0.5) / s.num_steps
    h = 1e-7
    f, g2 = s.sde(t)
    ds2 = (s.sigma(t + h) ** 2 - s.sigma(t - h) ** 2) / (2 * h)
    da = (s.alpha(t + h) - s.alpha(t - h)) / (2 * h)
    np.testing.assert_allclose(da, f * s.alpha(t), rtol=1e-5)
    np.testing.assert_allclose(ds2, 2 * f * s.sigma(t) ** 2 + g2, rtol=1e-5)


def test_vp_closed_forms(x64):
    s = S.get_schedule("vp")
    t = jnp.linspace(0, 1, 11)
    B = 0.1 * t + 0.5 * 19.9 * t**2
    np.testing.assert_allclose(s.alpha(t), np.exp(-B / 2), rtol=1e-12)
    f, g2 = s.sde(t)
    np.testing.assert_allclose(f, -(0.1 + 19.9 * t) / 2, rtol=1e-10)
    np.testing.assert_allclose(g2, 0.1 + 19.9 * t, rtol=1e-10)
    sub = S.get_schedule("subvp")
    np.testing.assert_allclose(sub.sde(t)[1], (0.1 + 19.9 * t) * (1 - np.exp(-2 * B)), rtol=1e-8)
    ve = S.get_schedule("ve")
    np.testing.assert_allclose(ve.sigma(t), 0.01 * 5000**t, rtol=1e-12)
    np.testing.assert_allclose(ve.sde(t)[1], 2 * (0.01 * 5000**t) ** 2 * np.log(5000), rtol=1e-10)


def test_edm_schedule_is_karras_grid(x64):
    s = S.get_schedule("edm")
    n = 18
    ramp = jnp.linspace(0, 1, n)
    ref = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(s.sigma(1 - ramp), ref, rtol=1e-12)


def test_zero_terminal_snr():
    s = S.get_schedule("linear", zero_terminal_snr=True)
    assert float(s.alpha(1.0)) == 0.0
    np.testing.assert_allclose(s.alpha_bar[1], 1 - 1e-4, rtol=1e-6)  # first step unchanged
    assert bool(jnp.isfinite(s.alpha(0.9995)))
    assert bool(s.logsnr(1.0) < -1e20)


def test_schedule_is_pytree_no_recompile():
    calls = []

    @jax.jit
    def f(sched, t):
        calls.append(1)
        return sched.alpha(t)

    f(S.VPSchedule(beta_min=0.1, beta_max=20.0), 0.5)
    f(S.VPSchedule(beta_min=0.2, beta_max=10.0), 0.5)
    assert len(calls) == 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="nope"), "allowed"),
    (dict(name="linear", num_steps=0), "num_steps"),
    (dict(name="linear", num_steps=2.5), "num_steps"),
    (dict(name="vp", bogus=1), "bogus"),
    (dict(name="linear", num_steps=10), "beta_end"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.get_schedule(**kwargs)


def test_bad_betas():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        S.from_betas(np.array([0.1, 1.5]))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        S.from_betas(np.array([0.0, 0.1]))
    with pytest.raises(ValueError, match="1-D"):
        S.from_betas(np.ones((2, 2)) * 0.1)
