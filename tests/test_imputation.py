"""Imputation against a Gaussian whose conditional is closed form: the known part is kept exactly, and the
error of the imputed part's mean and covariance falls as RePaint's resampling increases (replacement
alone is biased for correlated data); the time-window schedule walks the base schedule's window."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import schedules as S
from jaxdiff.imputation import impute
from jaxdiff.testing import Gaussian

D = 8


@functools.lru_cache(maxsize=None)
def _problem():
    idx = np.arange(D)
    cov = 0.25 * 0.9 ** np.abs(idx[:, None] - idx[None])  # an AR(1)-like series
    known = idx < 5  # forecasting: the last 3 values are unknown
    x_known = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0, 0, 0])
    return cov, known, x_known


def _errors(resample, sampler="ddpm", num_steps=100, n=3000, seed=0):
    cov, known, xk = _problem()
    g = Gaussian(jnp.full((D,), 0.1), jnp.asarray(cov))
    m_true, c_true = g.conditional(known, xk)
    sched = S.get_schedule("linear")
    xs = jnp.broadcast_to(jnp.asarray(xk), (n, D))
    x = jax.jit(lambda k: impute(g.model_fn(sched), sched, xs, jnp.asarray(known, xs.dtype), k, sampler=sampler,
                                 num_steps=num_steps, resample=resample, jump_length=10))(jax.random.key(seed))
    x = np.asarray(x)
    np.testing.assert_array_equal(x[:, known], np.broadcast_to(xk[known], (n, known.sum())))
    xu = x[:, ~known]
    return np.abs(xu.mean(0) - m_true).max(), np.abs(np.cov(xu.T) - c_true).max()


def test_repaint_bias_falls_with_resampling(x64):
    errs = {r: _errors(r) for r in (1, 3, 10)}
    mean_err = [errs[r][0] for r in (1, 3, 10)]
    assert mean_err[0] > 0.2  # replacement alone: a real bias (the conditional mean is 0.82, 0.75, 0.68)
    assert mean_err[0] > mean_err[1] > mean_err[2]
    assert mean_err[2] < 0.45 * mean_err[0]
    assert errs[10][1] < errs[1][1]  # covariance too


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_any_sampler(sampler, x64):
    e1, _ = _errors(1, sampler, num_steps=20, n=1000)
    e5, _ = _errors(5, sampler, num_steps=20, n=1000)
    assert e5 < e1


def test_bad_input():
    g = Gaussian(jnp.zeros(4), jnp.eye(4))
    sched = S.get_schedule("linear")
    x = jnp.zeros((2, 4))
    with pytest.raises(ValueError, match="mask has shape"):
        impute(g.model_fn(sched), sched, x, jnp.ones((3,)), jax.random.key(0))
    mask = jnp.asarray([1.0, 1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="multiple of jump_length"):
        impute(g.model_fn(sched), sched, x, mask, jax.random.key(0), num_steps=25, jump_length=10)
    with pytest.raises(ValueError, match="unknown sampler"):
        impute(g.model_fn(sched), sched, x, mask, jax.random.key(0), sampler="magic")
    with pytest.raises(ValueError, match=r"nothing unobserved \(all ones\) in example\(s\) \[1\]"):
        impute(g.model_fn(sched), sched, x, jnp.asarray([[1.0, 0, 0, 0], [1, 1, 1, 1]]), jax.random.key(0))
