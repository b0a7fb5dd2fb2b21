"""Score-based training pieces: dequantization, NCSN's discrete noise levels, the likelihood weighting with
importance-sampled t through make_loss, the input-scaled U-Net; and the score-SDE experiment end to end
(train a few steps, evaluate the probability-flow ODE bits/dim)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import losses as L
from jaxdiff import schedules as S


def test_dequantize_adds_uniform_noise_over_the_bin():
    K, c, B = 17, 0.25, 20000
    x = jnp.full((B, 2), c)
    zero = lambda p, x_t, t, cond, k: jnp.zeros_like(x_t)
    for deq, want in ((False, c**2), (True, c**2 + (1 / (K - 1)) ** 2 / 3)):
        fn = L.make_loss(zero, S.get_schedule("vp"), prediction="x0", num_levels=K, dequantize=deq)
        _, m = fn(None, {"x": x}, jax.random.key(0))
        # mse = mean (x0 + u)^2; E = c^2 + h^2 / 3 for u ~ U(-h, h), h = 1/(K-1)
        assert abs(float(m["mse"].mean()) - want) < 3e-4, (deq, float(m["mse"].mean()), want)


def test_ncsn_levels_are_discrete():
    L_levels = 10
    sched = S.get_schedule("ve", sigma_min=0.01, sigma_max=10.0)
    fn = L.make_loss(lambda p, x_t, t, c, k: jnp.zeros_like(x_t), sched, weighting="simple",
                     num_steps=L_levels)
    _, m = fn(None, {"x": jnp.zeros((512, 4))}, jax.random.key(1))
    k = np.asarray(m["t"]) * L_levels
    np.testing.assert_allclose(k, np.round(k), atol=1e-5)
    assert set(np.round(k).astype(int)) == set(range(1, L_levels + 1))  # sigma_i = 0.01 * 1000^(i/L)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_likelihood_weighting_importance_sampling_matches_uniform_t(name):
    """With an eps model that predicts 0, eps-MSE = mean eps^2 ~ 1, so the loss is the weighting's mean:
    E_uniform = int w / (1 - t_min); importance sampling gives int w with far smaller variance."""
    sched = S.get_schedule(name)
    t_min = 1e-5
    zero = lambda p, x_t, t, c, k: jnp.zeros_like(x_t)
    x = {"x": jnp.zeros((4096, 16))}
    out = {}
    for ts in ("uniform", "importance"):
        fn = L.make_loss(zero, sched, weighting="likelihood", t_sampling=ts, t_min=t_min)
        _, m = fn(None, x, jax.random.key(2))
        out[ts] = np.asarray(m["loss"])
    a, b = out["uniform"] * (1 - t_min), out["importance"]
    se = np.sqrt(a.var() / a.size + b.var() / b.size)
    assert abs(a.mean() - b.mean()) < 4 * se
    if name != "ve":  # VE's g^2/sigma^2 is constant: nothing to gain there
        assert b.std() < 0.5 * a.std()


@pytest.mark.e2e  # a config end to end through the drivers: the newest-versions CI pass skips it
def test_score_sde_config_end_to_end(tmp_path, two_step_run):
    """digits_vesde:smoke trains, and evaluate reports the ODE bits/dim next to the FD."""
    from experiments.configs.digits_ncsn import get_config as ncsn_config
    from experiments.configs.digits_vesde import get_config
    from jaxdiff.apps.evaluate import evaluate
    from jaxdiff.training.loop import train_and_evaluate

    c = two_step_run(get_config("smoke,likelihood"))
    wd = str(tmp_path / "ve")
    train_and_evaluate(c, wd)
    m = evaluate(wd)
    assert m["sampler"] == "ode" and m["nfe"] > 0
    assert np.isfinite(m["test_ode_bpd"]) and m["test_ode_bpd"] > 0 and m["test_ode_nfe"] > 0
    assert "test_bpd_total" not in m  # no discrete VLB for a continuous schedule
    with pytest.raises(ValueError, match="variant"):
        ncsn_config("smok")
