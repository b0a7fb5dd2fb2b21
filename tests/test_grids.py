"""Samplers over explicit time grids: any sampler takes a grid passed in, bad grids are refused before
compiling, the NFE of a run is public, imputation's segments are grid slices, SDEdit on the exact model."""

import inspect
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import samplers
from jaxdiff import schedules as S
from jaxdiff.imputation import sdedit, segments
from jaxdiff.testing import Gaussian, random_mixture

T_MIN = 0.01
GRIDDED = [n for n in samplers.SAMPLERS if n != "ode"]


def _problem(n=8, dim=2):
    gmm = random_mixture(jax.random.key(0), 3, dim, dtype=jnp.float64)
    sched = S.get_schedule("vp")
    return gmm, sched, samplers.prior_sample(sched, jax.random.key(1), (n, dim), jnp.float64)


OPTS = {"annealed_langevin": {"n_steps_each": 2}, "ddpm": {}, "pc": {"n_corrector_steps": 1}}


@pytest.mark.parametrize("name", GRIDDED)
def test_a_grid_passed_in_equals_the_grid_built_from_num_steps(name, x64):
    gmm, sched, x_T = _problem()
    opts = OPTS.get(name, {})
    spacing = samplers.default_spacing(name)
    ts = samplers.time_grid(sched, 6, spacing, 1.0, T_MIN)
    a = samplers.sample(name, gmm.model_fn(sched), sched, x_T, jax.random.key(2), num_steps=6, t_min=T_MIN, **opts)
    b = samplers.sample(name, gmm.model_fn(sched), sched, x_T, jax.random.key(2), ts=ts, **opts)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_ode_takes_the_grid_ends(x64):
    gmm, sched, x_T = _problem()
    a = samplers.sample_ode(gmm.model_fn(sched), sched, x_T, None, t_max=0.8, t_min=0.1)
    b = samplers.sample_ode(gmm.model_fn(sched), sched, x_T, None, ts=jnp.array([0.8, 0.5, 0.1]))
    np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("ts,match", [
    ([0.9, 0.5, 0.5, 0.1], r"strictly decreasing; ts\[1\] = 0.5 <= ts\[2\] = 0.5"),
    ([0.2, 0.5, 0.1], "strictly decreasing"),
    ([1.2, 0.5, 0.0], r"range \[0, 1\]"),
    ([0.5, -0.1], r"range \[0, 1\]"),
    ([0.5], "needs at least 1"),
    ([[0.5, 0.1]], "1-D"),
])
@pytest.mark.parametrize("name", ["ddim", "dpmpp_3m", "heun", "unipc", "pc"])
def test_bad_grids_are_refused_before_the_model_is_called(name, ts, match):
    def model(x, t, cond=None):
        raise AssertionError("must fail before calling the model")

    with pytest.raises(ValueError, match=match):
        samplers.sample(name, model, S.get_schedule("vp"), jnp.ones((2, 3)), jax.random.key(0), ts=jnp.array(ts))


@pytest.mark.parametrize("sched,t_max", [(S.get_schedule("linear", num_steps=50), 0.02), (S.get_schedule("vp"), 1e-3)])
def test_a_t_max_at_the_last_step_leaves_room_for_one_step(sched, t_max):
    """The last step of a grid ending at 0 starts at 1/T (1e-3 continuous); from there N > 1 steps would repeat
    a time (SDEdit from t_start = 1/T), refused with what fits."""
    with pytest.raises(ValueError, match="room for one step.*num_steps=1"):
        samplers.time_grid(sched, 3, "uniform", t_max, 0.0)
    np.testing.assert_allclose(samplers.time_grid(sched, 1, "uniform", t_max, 0.0), [t_max, 0.0], rtol=1e-6)


def test_neither_num_steps_nor_grid():
    with pytest.raises(ValueError, match="num_steps.*or an explicit decreasing grid ts"):
        samplers.sample("dpmpp_2m", lambda x, t, c=None: x, S.get_schedule("vp"), jnp.ones((2, 3)), None)


@pytest.mark.parametrize("name,opts", [
    ("ddpm", {}), ("ddim", {}), ("euler", {}), ("heun", {}), ("dpm_solver", {"order": 2}),
    ("dpm_solver", {"order": 3}), ("dpmpp_2m", {}), ("dpmpp_3m", {}), ("dpmpp_3m", {"high_order_warmup": True}),
    ("dpmpp_2m_sde", {}), ("unipc", {}), ("unipc", {"final_corrector": True}), ("pc", {"n_corrector_steps": 2}),
    ("annealed_langevin", {"n_steps_each": 3}), ("dpmpp_2s", {}), ("dpmpp_2s_ancestral", {}), ("ipndm", {}),
    ("deis", {}), ("lms", {})])
@pytest.mark.parametrize("sched_name", ["vp", "linear"])
def test_nfe_counts_the_model_calls(name, opts, sched_name):
    sched = S.get_schedule(sched_name)
    calls = []

    def model(x, t, cond=None):
        jax.debug.callback(lambda: calls.append(1))
        return 0.1 * x

    kw = {"num_steps": 5} if sched_name == "vp" else {"num_steps": 5, "t_min": 0.0}
    jax.block_until_ready(samplers.sample(name, model, sched, jnp.ones((2, 3)), jax.random.key(0), **kw, **opts))
    assert len(calls) == samplers.nfe(name, sched, **kw, **opts), (name, opts, sched_name)


def test_the_registry_holds_records_and_nothing_switches_on_a_name():
    """Each record's default spacing is its function's own ``spacing`` default; ``nfe`` is the record's rule
    (no name branch); the stochastic records are the samplers whose defaults draw noise."""
    for name, rec in samplers.SAMPLERS.items():
        assert rec.spacing == inspect.signature(rec.fn).parameters["spacing"].default if name != "ode" else True
        assert samplers.default_spacing(name) == rec.spacing
    assert samplers.default_spacing("dpmpp_2m") == "logsnr" and samplers.default_spacing("heun") == "karras"
    assert "name ==" not in inspect.getsource(samplers.nfe)
    assert {n for n, r in samplers.SAMPLERS.items() if r.stochastic} == {
        "ddpm", "pc", "annealed_langevin", "flow_sde", "dpmpp_2m_sde", "dpmpp_2s_ancestral", "consistency"}
    with pytest.raises(ValueError, match="depends on the solve"):
        samplers.nfe("ode", S.get_schedule("vp"), num_steps=4)


@pytest.mark.parametrize("name,opts", [
    ("ddpm", {}), ("pc", {}), ("annealed_langevin", {"n_steps_each": 2}), ("flow_sde", {}), ("dpmpp_2m_sde", {}),
    ("dpmpp_2s_ancestral", {}), ("consistency", {"prediction": "x0"}), ("ddim", {"eta": 1.0}),
    ("heun", {"S_churn": 10.0})])
def test_a_sampler_that_draws_noise_refuses_to_run_without_a_key(name, opts):
    def model(x, t, cond=None):
        raise AssertionError("must fail before calling the model")

    with pytest.raises(ValueError, match="needs a PRNG key"):
        samplers.sample(name, model, S.get_schedule("vp"), jnp.ones((2, 3)), None, num_steps=3, **opts)
    # without noise the same samplers run keyless: DDIM at eta = 0, Heun without churn, one consistency step
    for name, opts in (("ddim", {}), ("heun", {}), ("consistency", {"num_steps": 1}), ("dpmpp_2s_ancestral",
                                                                                        {"eta": 0.0})):
        out = samplers.sample(name, lambda x, t, c=None: 0.1 * x, S.get_schedule("vp"), jnp.ones((2, 3)), None,
                              **{"num_steps": 3, **opts})
        assert np.isfinite(np.asarray(out)).all()


def test_segments_are_slices_of_the_grid():
    ts = samplers.time_grid(S.get_schedule("linear"), 12, "uniform")
    seg = segments(ts, 4)
    assert seg.shape == (3, 5)
    np.testing.assert_array_equal(np.concatenate([seg[0], seg[1][1:], seg[2][1:]]), ts)
    with pytest.raises(ValueError, match="multiple of jump_length"):
        segments(ts, 5)


def test_a_sampler_walks_exactly_the_given_times(x64):
    """(Port of the TimeWindow test.) DDIM on the grid 0.6 -> 0.5 -> 0.45 -> 0.3 -> 0.2 equals those steps
    written out by hand."""
    g = Gaussian(jnp.zeros(2), jnp.array([[1.0, 0.5], [0.5, 1.0]]))
    vp = S.get_schedule("vp")
    x = jax.random.normal(jax.random.key(0), (16, 2), jnp.float64)
    b = x
    for t, s in ((0.6, 0.5), (0.5, 0.45), (0.45, 0.3), (0.3, 0.2)):
        eps = g.model_fn(vp)(b, jnp.full((16,), t))
        x0 = (b - vp.sigma(t) * eps) / vp.alpha(t)
        b = vp.alpha(s) * x0 + vp.sigma(s) * eps
    a = samplers.sample_ddim(g.model_fn(vp), vp, x, None, ts=jnp.array([0.6, 0.5, 0.45, 0.3, 0.2]))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


def test_sdedit_from_one_is_plain_sampling_and_from_small_t_stays_near_its_input(x64):
    gmm, sched, _ = _problem(n=512)
    model = gmm.model_fn(sched)
    x_init = gmm.sample(jax.random.key(3), 512)
    eps = jax.random.normal(jax.random.key(4), x_init.shape, jnp.float64)
    out = sdedit(model, sched, x_init, jax.random.key(5), t_start=1.0, sampler="dpmpp_2m", num_steps=10,
                 t_min=T_MIN, noise=eps)
    x_T = sched.alpha(1.0) * x_init + sched.sigma(1.0) * eps
    plain = samplers.sample("dpmpp_2m", model, sched, x_T, None, num_steps=10, t_min=T_MIN)
    np.testing.assert_allclose(out, plain, rtol=1e-12, atol=1e-12)
    t0 = 0.05
    near = sdedit(model, sched, x_init, jax.random.key(6), t_start=t0, sampler="ddim", num_steps=5, t_min=1e-4)
    noise_level = float(sched.sigma(t0) / sched.alpha(t0))
    dist = float(jnp.sqrt(jnp.mean(jnp.sum((near - x_init) ** 2, -1))))
    assert dist < 2.0 * noise_level * np.sqrt(2), (dist, noise_level)
    far = sdedit(model, sched, x_init, jax.random.key(6), t_start=0.9, sampler="ddim", num_steps=5, t_min=1e-4)
    assert float(jnp.sqrt(jnp.mean(jnp.sum((far - x_init) ** 2, -1)))) > 3 * dist
    with pytest.raises(ValueError, match="t_start"):
        sdedit(model, sched, x_init, jax.random.key(6), t_start=0.0, num_steps=5)


def test_sampler_modules_are_small_and_dpmpp_2m_is_short():
    from jaxdiff.samplers import dpmpp

    here = os.path.join(os.path.dirname(__file__), "..", "jaxdiff", "samplers")
    for f in os.listdir(here):
        if f.endswith(".py"):
            assert len(open(os.path.join(here, f)).read().splitlines()) <= 200, f
    assert len(inspect.getsource(dpmpp.dpmpp_2m_update).splitlines()) <= 25


def test_classifier_gradient_closed_form():
    """grad_x log softmax(W x)_y = W_y - sum_k p_k W_k for a linear classifier."""
    from jaxdiff.guidance import classifier_log_prob_grad

    W = jax.random.normal(jax.random.key(0), (4, 3))
    x = jax.random.normal(jax.random.key(1), (5, 3))
    y = jnp.array([0, 1, 2, 3, 1])
    g = classifier_log_prob_grad(lambda x, t: x @ W.T, x, jnp.zeros(5), y)
    p = jax.nn.softmax(x @ W.T, -1)
    np.testing.assert_allclose(g, W[y] - p @ W, rtol=1e-5, atol=1e-6)


def test_a_flow_paths_logsnr_grid_below_t1_ends_with_a_step_to_zero():
    """lambda(0) = +inf on the flow paths: a logsnr grid from t_max < 1 runs to 1e-3, then steps to 0 (it was
    [0.9, 0, 0, 0, 0] before, which the sampler's grid check refuses)."""
    for name in ("flow_linear", "flow_gvp"):
        sched = S.get_schedule(name)
        ts = np.asarray(samplers.time_grid(sched, 4, "logsnr", 0.9))
        assert ts.shape == (5,) and ts[0] == np.float32(0.9) and ts[-2] == np.float32(1e-3) and ts[-1] == 0
        lam = np.asarray(sched.logsnr(ts[:-1]))
        np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-4)  # equal steps in lambda
