"""Post-hoc EMA (EDM2, Karras et al. 2024): the power-function profiles against their recurrence and
closed form, the train step's tracking, reconstruction of profiles in the snapshots' span (exact) and
between them (within the stated bound), errors naming the reachable range, the workdir command."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdiff.training import ema as E
from jaxdiff.training.state import create_train_state
from jaxdiff.training.step import batch_loss, make_train_step


def test_sigma_rel_gamma_roundtrip_and_closed_form():
    g = E.sigma_rel_to_gamma(np.array([0.01, 0.05, 0.1, 0.2, 0.28]))
    np.testing.assert_allclose(E.gamma_to_sigma_rel(g), [0.01, 0.05, 0.1, 0.2, 0.28], rtol=1e-10)
    np.testing.assert_allclose(E.sigma_rel_to_gamma(0.05), 16.97, atol=0.01)  # EDM2's two profiles
    np.testing.assert_allclose(E.sigma_rel_to_gamma(0.10), 6.94, atol=0.01)
    # The discrete profile's relative std tends to sigma_rel (its continuous limit) as t grows.
    t = 20000
    w = E.profile(t, float(g[2]))
    u = np.arange(1, t + 1) / t
    np.testing.assert_allclose(np.sqrt(w @ u**2 - (w @ u) ** 2), 0.1, rtol=1e-3)
    for bad in (0.0, -0.1, 0.3, float("nan")):
        with pytest.raises(ValueError, match="allowed: 0 < sigma_rel < sqrt\\(1/12\\)"):
            E.sigma_rel_to_gamma(bad)


@pytest.mark.parametrize("gamma", [0.5, 6.94, 16.97])
def test_profile_is_the_recurrence(gamma):
    """w_t(tau) = (tau/t)^(g+1) - ((tau-1)/t)^(g+1) equals the unrolled beta_k = (1 - 1/k)^(g+1) EMA."""
    t = 300
    w = np.zeros(t)
    for k in range(1, t + 1):
        b = (1 - 1 / k) ** (gamma + 1)
        w *= b
        w[k - 1] += 1 - b
    np.testing.assert_allclose(E.profile(t, gamma), w, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(E.profile(t, gamma).sum(), 1.0, rtol=1e-12)


def _quadratic_run(num_steps, gammas):
    """The train step on a tiny quadratic loss with SGD; returns the states' params per step and the final
    state (the step tracks the power EMAs)."""
    target = jnp.arange(6.0).reshape(2, 3)

    def loss_fn(p, batch, keys):
        per = ((p["w"] - target) ** 2).sum() + 0.0 * batch["x"].sum(-1)
        return per.mean(), {"loss": per}

    tx = optax.sgd(0.05)
    state = create_train_state({"w": jnp.zeros((2, 3))}, tx, seed=0, num_posthoc=len(gammas))
    step = jax.jit(make_train_step(batch_loss(loss_fn), tx, ema_decay=0.9, posthoc_gammas=gammas))
    batch = {"x": jnp.zeros((4, 1)), "index": jnp.arange(4)}
    thetas = []
    for _ in range(num_steps):
        state, _ = step(state, batch)
        thetas.append(np.asarray(state.params["w"], np.float64))
    return np.stack(thetas), state


def test_train_step_tracks_the_power_profiles():
    gammas = tuple(float(g) for g in E.sigma_rel_to_gamma([0.05, 0.1]))
    thetas, state = _quadratic_run(40, gammas)
    for g, tracked in zip(gammas, state.posthoc):
        ref = np.tensordot(E.profile(40, g), thetas, 1)
        np.testing.assert_allclose(np.asarray(tracked["w"]), ref, rtol=1e-5, atol=1e-6)


def _snapshots(thetas, gammas, every):
    """Float64 snapshots of the tracked EMAs of a trajectory ``thetas [T, ...]`` every ``every`` steps."""
    T = len(thetas)
    steps, gs, trees = [], [], []
    for s in range(every, T + 1, every):
        for g in gammas:
            steps.append(s)
            gs.append(g)
            trees.append({"w": np.tensordot(E.profile(s, g), thetas[:s], 1)})
    return steps, gs, trees


def _trajectory(T=1000, d=50, seed=0):
    """A noisy decaying trajectory, like SGD's parameters: a drift to the optimum plus noise."""
    rng = np.random.default_rng(seed)
    tau = np.arange(1, T + 1)[:, None]
    return np.exp(-tau / 300) * rng.normal(size=(1, d)) + 0.3 * rng.normal(size=(T, d)) + 1.0


def test_profile_in_the_span_is_reproduced_exactly():
    """A stored profile, and a combination of stored profiles, are reconstructed to 1e-6 (relative)."""
    gammas = tuple(float(g) for g in E.sigma_rel_to_gamma([0.05, 0.1]))
    thetas = _trajectory()
    steps, gs, trees = _snapshots(thetas, gammas, 50)
    for j in (len(steps) - 1, len(steps) - 2, 21):
        x, err = E.solve_coefficients(steps, gs, steps[j], gs[j])
        assert err < 1e-6
        out = E.combine(trees, x)["w"]
        assert np.linalg.norm(out - trees[j]["w"]) <= 1e-6 * np.linalg.norm(trees[j]["w"])
    # The real snapshot files: a tracked profile at the last step comes back as that snapshot.
    params, info = E.reconstruct(steps, gs, trees, 0.1)
    assert info["profile_error"] < 1e-6
    np.testing.assert_allclose(params["w"], trees[-1]["w"], rtol=1e-6)


@pytest.mark.parametrize("sigma_rel", [0.06, 0.075, 0.09, 0.15])
def test_between_profiles_within_the_stated_bound(sigma_rel):
    """Snapshots of sigma_rel 0.05 and 0.10 every T/20 steps reconstruct any sigma_rel in [0.05, 0.15] with a
    relative profile error below 2%, and the parameters within the Cauchy-Schwarz bound
    ||error|| <= ||r||_2 ||theta - theta_T||_F (r: the profile residual; ema.py's docstring) -- checked against
    actually tracking that profile."""
    gammas = tuple(float(g) for g in E.sigma_rel_to_gamma([0.05, 0.1]))
    T = 1000
    thetas = _trajectory(T)
    steps, gs, trees = _snapshots(thetas, gammas, T // 20)
    g = float(E.sigma_rel_to_gamma(sigma_rel))
    x, rel = E.solve_coefficients(steps, gs, T, g)
    assert rel < 0.02
    w_star = E.profile(T, g)
    truth = w_star @ thetas
    recon = E.combine(trees, x)["w"]
    bound = rel * np.linalg.norm(w_star) * np.linalg.norm(thetas - thetas[-1])
    assert np.linalg.norm(recon - truth) <= bound
    assert np.linalg.norm(recon - truth) < 0.02 * np.linalg.norm(truth - thetas.mean(0)) + 1e-3 * np.linalg.norm(truth)


def test_out_of_reach_sigma_rel_names_the_range():
    gammas = tuple(float(g) for g in E.sigma_rel_to_gamma([0.05, 0.1]))
    steps, gs, trees = _snapshots(_trajectory(400, 4), gammas, 40)
    lo, hi = E.reachable_range(steps, gs, 400)
    assert 0.02 < lo < 0.05 and 0.15 < hi < 0.285
    with pytest.raises(ValueError, match=r"outside what the stored profiles .* reachable: sigma_rel in \[0\.0"):
        E.reconstruct(steps, gs, trees, 0.006)
    with pytest.raises(ValueError, match="allowed: 0 < sigma_rel"):
        E.reconstruct(steps, gs, trees, 0.5)
    with pytest.raises(ValueError, match="past the last snapshot"):
        E.reconstruct(steps, gs, trees, 0.1, target_step=401)
