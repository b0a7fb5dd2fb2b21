"""Guidance against the analytic class-conditional Gaussian mixture (class k = component k)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import guidance, samplers
from jaxdiff import schedules as S
from jaxdiff.testing import GaussianMixture, random_mixture

K = 3


def conditional_model(gmm: GaussianMixture, sched):
    """eps of component y for labels y < K, of the whole mixture for the null label K."""
    comps = [GaussianMixture(jnp.ones(1), gmm.means[k:k + 1], gmm.stds[k:k + 1]).model_fn(sched)
             for k in range(K)]
    full = gmm.model_fn(sched)

    def fn(x, t, y):
        outs = jnp.stack([c(x, t) for c in comps] + [full(x, t)])  # [K + 1, B, d]
        return jnp.take_along_axis(outs, y[None, :, None], 0)[0]

    return fn


def exact_classifier(gmm, sched):
    def fn(x, t):
        r, *_ = gmm.responsibilities(x, sched.alpha(t), sched.sigma(t))
        return jnp.log(r)

    return fn


@pytest.fixture
def problem(x64):
    gmm = random_mixture(jax.random.key(0), K, 2, dtype=jnp.float64)
    sched = S.get_schedule("vp")
    x = jax.random.normal(jax.random.key(1), (6, 2), jnp.float64)
    t = jnp.linspace(0.05, 0.95, 6)
    y = jnp.array([0, 1, 2, 0, 1, 2])
    return gmm, sched, x, t, y


def test_cfg_endpoints(problem):
    gmm, sched, x, t, y = problem
    m = conditional_model(gmm, sched)
    null = jnp.array(K)
    np.testing.assert_allclose(guidance.cfg(m, 1.0, null_cond=null)(x, t, y), m(x, t, y), rtol=1e-12)
    np.testing.assert_allclose(guidance.cfg(m, 0.0, null_cond=null)(x, t, y), m(x, t, jnp.full(6, K)),
                               rtol=1e-12)
    g = guidance.cfg(m, 3.0, null_cond=null)(x, t, y)
    np.testing.assert_allclose(g, m(x, t, jnp.full(6, K)) + 3 * (m(x, t, y) - m(x, t, jnp.full(6, K))),
                               rtol=1e-10)


@pytest.mark.parametrize("scale", [0.5, 1.0, 4.0])
def test_classifier_guidance_equals_cfg_with_exact_classifier(problem, scale):
    """Bayes: grad log p(y|x_t) = score_y - score, so classifier guidance of the unconditional model with
    the exact classifier is CFG of the exact conditional model at the same scale."""
    gmm, sched, x, t, y = problem
    m = conditional_model(gmm, sched)
    uncond = lambda x, t, c=None: m(x, t, jnp.full(x.shape[0], K))
    cg = guidance.classifier_guidance(uncond, exact_classifier(gmm, sched), sched, scale)(x, t, y)
    cf = guidance.cfg(m, scale, null_cond=jnp.array(K))(x, t, y)
    np.testing.assert_allclose(cg, cf, rtol=1e-8, atol=1e-10)


def test_guidance_interval_and_rescale(problem):
    gmm, sched, x, t, y = problem
    m = conditional_model(gmm, sched)
    g = guidance.cfg(m, 3.0, null_cond=jnp.array(K), interval=(0.5, 1.0))(x, t, y)
    np.testing.assert_allclose(g[:3], m(x, t, y)[:3], rtol=1e-12)  # t < 0.5: plain conditional
    r0 = guidance.cfg(m, 3.0, null_cond=jnp.array(K), rescale=0.0, schedule=sched)(x, t, y)
    r1 = guidance.cfg(m, 3.0, null_cond=jnp.array(K), rescale=1e-12, schedule=sched)(x, t, y)
    np.testing.assert_allclose(r1, r0, rtol=1e-8)
    with pytest.raises(ValueError, match="schedule"):
        guidance.cfg(m, 3.0, rescale=0.7)


def test_guided_sampling_no_recompile_and_targets_class(problem):
    gmm, sched, _, _, _ = problem
    m = conditional_model(gmm, sched)
    traces = []

    @functools.partial(jax.jit, static_argnames="n")
    def run(scale, key, y, n=20):
        traces.append(1)
        x_T = samplers.prior_sample(sched, key, (y.shape[0], 2), jnp.float64)
        return samplers.sample_dpmpp_2m(guidance.cfg(m, scale, null_cond=jnp.array(K)), sched, x_T, None,
                                        num_steps=n, cond=y)

    y = jnp.full((2000,), 1)
    x1 = run(1.0, jax.random.key(2), y)
    run(2.5, jax.random.key(3), y)
    assert len(traces) == 1
    # scale 1 samples the exact conditional: component 1's mean and std.
    np.testing.assert_allclose(x1.mean(0), gmm.means[1], atol=5 * float(gmm.stds[1].max()) / np.sqrt(2000))
    np.testing.assert_allclose(x1.std(0), gmm.stds[1], rtol=0.1)
    # classifier guidance at scale 1 of the unconditional model with the exact classifier: the same.
    uncond = lambda x, t, c=None: m(x, t, jnp.full(x.shape[0], K))
    x_T = samplers.prior_sample(sched, jax.random.key(4), (2000, 2), jnp.float64)
    xc = samplers.sample_dpmpp_2m(guidance.classifier_guidance(uncond, exact_classifier(gmm, sched), sched, 1.0),
                                  sched, x_T, None, num_steps=20, cond=y)
    np.testing.assert_allclose(xc.mean(0), gmm.means[1], atol=5 * float(gmm.stds[1].max()) / np.sqrt(2000))
    np.testing.assert_allclose(xc.std(0), gmm.stds[1], rtol=0.1)


def test_noisy_classifier_learns_and_guides():
    """The encoder classifier, trained on noised inputs of two easy classes, is accurate at low noise,
    near chance at t = 1, and its gradient drives classifier_guidance."""
    import optax

    from jaxdiff.models import UNetConfig
    from jaxdiff.models.classifier import NoisyClassifier, make_classifier_loss

    cfg = UNetConfig(image_size=8, in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(), num_groups=4)
    clf = NoisyClassifier(cfg, num_classes=2)
    sched = S.get_schedule("cosine", num_steps=100)
    y = jnp.arange(64) % 2
    x = jnp.where(y[:, None, None, None] == 1, 0.6, -0.6) * jnp.ones((64, 8, 8, 1))
    params = clf.init(jax.random.key(0), x, jnp.zeros(64))["params"]
    loss_fn = make_classifier_loss(lambda p, xt, t: clf.apply({"params": p}, xt, t), sched)
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, key):
        g = jax.grad(lambda p: loss_fn(p, {"x": x, "label": y}, key)[0])(params)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), opt

    for i in range(150):
        params, opt = step(params, opt, jax.random.key(i))
    logits = lambda t: clf.apply({"params": params}, x + 0.05 * jax.random.normal(jax.random.key(1), x.shape),
                                 jnp.full(64, t))
    assert float((logits(0.1).argmax(-1) == y).mean()) > 0.95
    fn = guidance.classifier_guidance(lambda x, t, c=None: jnp.zeros_like(x),
                                      lambda x, t: clf.apply({"params": params}, x, t), sched, 2.0)
    out = fn(jnp.zeros((2, 8, 8, 1)), jnp.full(2, 0.3), jnp.array([0, 1]))
    # eps is pushed away from class 1 direction for label 1 (x -> +) and toward it for label 0
    assert float(out[1].mean()) < 0 < float(out[0].mean())


def test_ddpm_algorithm1_mean_shift_targets_component(x64):
    """Dhariwal & Nichol Algorithm 1 (mean shift by s * Sigma * grad log p(y|x_t)) with the exact classifier
    at scale 1 samples the class's component (to first order in the step size; 1000 steps here)."""
    gmm = GaussianMixture(weights=jnp.array([0.5, 0.5]), means=jnp.array([[-1.5, 0.0], [1.5, 0.5]]),
                          stds=jnp.array([[0.3, 0.3], [0.3, 0.3]]))
    gmm = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), gmm)
    sched = S.get_schedule("linear")
    x_T = jax.random.normal(jax.random.key(5), (2000, 2), jnp.float64)
    y = jnp.ones(2000, jnp.int32)
    run = jax.jit(lambda x, k: samplers.sample_ddpm(gmm.model_fn(sched), sched, x, k, cond=y,
                                                    classifier_fn=exact_classifier(gmm, sched)))
    x = run(x_T, jax.random.key(6))
    np.testing.assert_allclose(x.mean(0), gmm.means[1], atol=0.05)
    np.testing.assert_allclose(x.std(0), gmm.stds[1], rtol=0.1)


def test_cfg_rescale_matches_its_formula(problem):
    """Guidance rescale (Lin et al. 2023, eq. 15-16) at phi = 0.7, written out in numpy: x0 of the guided
    prediction rescaled to the conditional x0's per-example std, blended by phi, and turned back into eps."""
    gmm, sched, x, t, y = problem
    m = conditional_model(gmm, sched)
    phi, w = 0.7, 3.0
    got = np.asarray(guidance.cfg(m, w, null_cond=jnp.array(K), rescale=phi, schedule=sched)(x, t, y))
    x_, t_ = np.asarray(x), np.asarray(t)
    a, s = np.asarray(sched.alpha(t_))[:, None], np.asarray(sched.sigma(t_))[:, None]
    e_c = np.asarray(m(x, t, y))
    e_u = np.asarray(m(x, t, jnp.full(x.shape[0], K)))
    e_cfg = e_u + w * (e_c - e_u)
    x0_cfg, x0_pos = (x_ - s * e_cfg) / a, (x_ - s * e_c) / a
    x0_resc = x0_cfg * x0_pos.std(1, keepdims=True) / x0_cfg.std(1, keepdims=True)
    x0 = phi * x0_resc + (1 - phi) * x0_cfg
    want = (x_ - a * x0) / s
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    assert np.abs(want - e_cfg).max() > 1e-3  # the rescale really changes the guided prediction
