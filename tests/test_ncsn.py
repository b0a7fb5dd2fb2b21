"""NCSNv2's techniques (jaxdiff.ncsn) against closed forms and the paper's own values; the sigma-scaled
noise conditioning; annealed Langevin with NCSNv2's settings, the final denoising step and consistent annealed
sampling on the exact Gaussian mixture."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import ncsn, samplers
from jaxdiff import schedules as S


def test_max_pairwise_distance():
    cube = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)  # diameter sqrt(3)
    np.testing.assert_allclose(ncsn.max_pairwise_distance(cube), math.sqrt(3), rtol=1e-12)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3000, 5))
    x[17], x[2900] = 4.0, -3.0  # planted far apart: 7 sqrt(5)
    np.testing.assert_allclose(ncsn.max_pairwise_distance(x, chunk=256), 7 * math.sqrt(5), rtol=1e-12)
    with pytest.raises(ValueError, match="two training points"):
        ncsn.max_pairwise_distance(x[:1])


@pytest.mark.parametrize("dim", [5, 8, 64, 3072])
def test_geometric_ratio_solves_the_overlap_rule(dim):
    g = ncsn.geometric_ratio(dim)
    assert g > 1
    np.testing.assert_allclose(ncsn.overlap(g, dim), 0.5, atol=1e-10)
    assert ncsn.overlap(g * 1.01, dim) < 0.5 < ncsn.overlap(1 + (g - 1) * 0.99, dim)  # decreasing in gamma
    with pytest.raises(ValueError, match="D >= 5"):
        ncsn.geometric_ratio(4)


def test_paper_values_cifar10():
    """NCSNv2 on CIFAR-10 (D = 3072): sigma_1 = 50, sigma_L = 0.01, L = 232 levels (their Table / Appendix);
    with T = 5 steps per level their eps = 6.2e-6."""
    g = ncsn.geometric_ratio(3072)
    assert 1.03 < g < 1.05
    L = ncsn.num_levels(50.0, 0.01, g)
    assert 210 <= L <= 235
    eps = ncsn.langevin_step_size((50 / 0.01) ** (1 / 231), 0.01, 5)
    np.testing.assert_allclose(eps, 6.2e-6, rtol=0.01)


def test_num_levels():
    assert ncsn.num_levels(100.0, 1.0, 10.0) == 3  # 100, 10, 1
    assert ncsn.num_levels(100.0, 1.0, 9.9) == 4
    with pytest.raises(ValueError, match="sigma_1 > sigma_L > 0"):
        ncsn.num_levels(1.0, 2.0, 1.5)


@pytest.mark.parametrize("T", [1, 5, 40])
def test_stationary_ratio_is_the_langevin_variance_and_eps_its_minimiser(T):
    """Eq. 4 equals the exact variance recurrence of T steps x <- x + alpha s + sqrt(2 alpha) z on N(0, sigma_i^2)
    started at N(0, (gamma sigma_i)^2); the chosen eps is its minimiser (the fixed point of the rule)."""
    gamma, sigma_L, sigma_i = 1.35, 0.01, 0.7
    eps = ncsn.langevin_step_size(gamma, sigma_L, T)
    for e in (0.3 * eps, eps, 1.5 * eps):
        alpha = e * sigma_i**2 / sigma_L**2
        v = (gamma * sigma_i) ** 2
        for _ in range(T):
            v = (1 - alpha / sigma_i**2) ** 2 * v + 2 * alpha
        np.testing.assert_allclose(v / sigma_i**2, ncsn.stationary_ratio(e, gamma, sigma_L, T), rtol=1e-10)
    f = lambda e: ncsn.stationary_ratio(e, gamma, sigma_L, T)
    assert f(eps) <= min(f(eps * 0.999), f(eps * 1.001)) + 1e-12
    assert f(eps) > 1.0
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        ncsn.stationary_ratio(2 * sigma_L**2, gamma, sigma_L, T)


def test_digits_ncsnv2_config_is_the_rule_on_the_training_data(data_dir):
    from experiments.configs import digits_ncsnv2 as cfg
    from jaxdiff.data import to_float
    from jaxdiff.training.build import build_pipeline, build_schedule

    c = cfg.get_config()
    c.data.data_dir = data_dir
    x = to_float(build_pipeline(c, "train", 1).all_images(), c.data.num_levels)
    s = ncsn.ncsnv2_settings(x, cfg.SIGMA_L, cfg.STEPS_PER_LEVEL)
    assert s["num_levels"] == cfg.LEVELS == c.diffusion.noise_levels == c.sample.num_steps
    np.testing.assert_allclose([s["sigma_1"], s["gamma"], s["eps"]], [cfg.SIGMA_1, cfg.GAMMA, cfg.EPS], rtol=1e-9)
    np.testing.assert_allclose(c.sample.options.step_lr, 2 * s["eps"], rtol=1e-12)
    np.testing.assert_allclose(cfg.get_config("long").sample.options.step_lr,
                               2 * ncsn.langevin_step_size(s["gamma"], cfg.SIGMA_L, cfg.LONG_STEPS), rtol=1e-6)
    sched = build_schedule(c)  # the training / sampling levels t = i / L are sigma_L gamma^(i - 1)
    sig = np.asarray(sched.sigma(jnp.arange(1, cfg.LEVELS + 1) / cfg.LEVELS), np.float64)
    np.testing.assert_allclose(sig, cfg.SIGMA_L * cfg.GAMMA ** np.arange(cfg.LEVELS), rtol=1e-5)


def test_sigma_scaled_preconditioning():
    from jaxdiff.models import UNet, UNetConfig
    from jaxdiff.models.precond import Preconditioned, check_preconditioning

    cfg = UNetConfig(image_size=8, in_channels=1, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                     attention_resolutions=(), num_groups=4)
    sched = S.get_schedule("ve", sigma_min=0.01, sigma_max=10.0)
    m = Preconditioned(UNet(cfg), sched, "sigma_scaled")
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
    t = jnp.array([0.1, 0.5, 1.0])
    params = m.init(jax.random.key(1), x, t)["params"]
    out = m.apply({"params": params}, x, t)
    f = UNet(cfg).apply({"params": params["backbone"]}, x, jnp.zeros(3))
    np.testing.assert_allclose(np.asarray(out), np.asarray(f / sched.sigma(t)[:, None, None, None]), rtol=1e-5)
    with pytest.raises(ValueError, match="prediction='score'"):
        check_preconditioning("sigma_scaled", "eps")


def _mixture_64d():
    """Three narrow components (std 0.005, below sigma_L: data nearly points, as NCSNv2's analysis assumes)
    in D = 64 (the overlap rule needs D >= 5; 64 is the digits')."""
    from jaxdiff.testing import GaussianMixture

    means = np.random.default_rng(0).normal(size=(3, 64)) * 0.7
    return GaussianMixture(weights=jnp.asarray([0.5, 0.3, 0.2], jnp.float64), means=jnp.asarray(means),
                           stds=jnp.full((3, 64), 0.005, jnp.float64))


def _ncsnv2_sample(gmm, *, steps_per_level: int, consistent: bool, denoise_final: bool = True):
    """Annealed Langevin with NCSNv2's settings from 2000 data points; ``consistent``: CAS on 5x the levels,
    the same sigma_1 ... sigma_L range (t_min puts the grid's smallest level at sigma_L)."""
    data = np.asarray(gmm.sample(jax.random.key(3), 2000))
    s = ncsn.ncsnv2_settings(data, sigma_L=0.01, steps_per_level=5 if consistent else steps_per_level)
    L = s["num_levels"]
    sched = S.get_schedule("ve", sigma_min=s["sigma_min"], sigma_max=s["sigma_max"])
    N = 5 * L if consistent else L
    t_min = (N / L - 1) / (N - 1)  # the levels t_max - k (1 - t_min) / N end at 1 / L: sigma_L
    x_T = samplers.prior_sample(sched, jax.random.key(7), (2000, 64), jnp.float64)
    run = jax.jit(lambda x, k: samplers.sample("annealed_langevin", gmm.model_fn(sched, "score"), sched, x, k,
                                               num_steps=N, prediction="score", n_steps_each=1 if consistent
                                               else steps_per_level, step_lr=2 * s["eps"], t_min=t_min,
                                               consistent=consistent, denoise_final=denoise_final))
    return np.asarray(run(x_T, jax.random.key(8)))


def test_ncsnv2_settings_with_the_denoising_step_reproduce_the_mixture(x64):
    """NCSNv2's levels and step size with T = 100 steps per level and the final denoising step: weights and
    means within 5 Monte-Carlo standard errors (T = 5 leaves the weights flattened, 0.44 / 0.33 / 0.23); the
    denoising step takes the spread from sigma_L's ~0.01 towards the data's 0.005."""
    from test_samplers import _moments_match

    gmm = _mixture_64d()
    x = _ncsnv2_sample(gmm, steps_per_level=100, consistent=False)
    _moments_match(gmm, x)
    raw = _ncsnv2_sample(gmm, steps_per_level=100, consistent=False, denoise_final=False)
    spread = lambda v: np.sqrt(((v - np.asarray(gmm.means)[np.argmin(((v[:, None] - np.asarray(gmm.means)[None]) ** 2)
                                                                     .sum(-1), 1)]) ** 2).mean())
    assert abs(spread(x) - 0.005) < abs(spread(raw) - 0.005)


def test_consistent_annealed_sampling_reproduces_the_mixture(x64):
    """Consistent annealed sampling (one step per level, 5 L levels, eta = NCSNv2's eps / sigma_L^2) gets the
    weights right where plain annealed Langevin at that budget does not."""
    from test_samplers import _moments_match

    gmm = _mixture_64d()
    _moments_match(gmm, _ncsnv2_sample(gmm, steps_per_level=1, consistent=True))


def test_consistent_sampling_needs_one_step_per_level():
    sched = S.get_schedule("ve")
    with pytest.raises(ValueError, match="n_steps_each=1"):
        samplers.sample("annealed_langevin", lambda x, t, c=None: x, sched, jnp.zeros((2, 2)), jax.random.key(0),
                        num_steps=4, n_steps_each=3, consistent=True)
