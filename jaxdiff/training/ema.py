"""Post-hoc EMA (Karras et al. 2024, "Analyzing and improving the training dynamics of diffusion models",
EDM2, Sec. 3 and Appendix C): choose the length of the parameters' exponential moving average after training.

The train step tracks power-function EMAs, one per ``gamma``: after the k-th update,
ema_k = beta_k ema_{k-1} + (1 - beta_k) theta_k with beta_k = (1 - 1/k)^(gamma + 1). Unrolled, ema_t weighs
the updates' params theta_tau (tau = 1..t) by

    w_t(tau) = (tau / t)^(gamma + 1) - ((tau - 1) / t)^(gamma + 1),

the exact integral over [tau - 1, tau] of the continuous profile p_t(s) = (gamma + 1) s^gamma / t^(gamma + 1)
(the weights sum to 1 since the sum telescopes). Its relative width is sigma_rel = std(s / t) =
sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))) (EDM2 eq. 3), the knob researchers sweep.

Snapshots of the tracked EMAs are saved every ``train.snapshot_every`` steps. Any other profile w* (another
sigma_rel, at any step) is reconstructed as sum_i x_i ema_i with the x that minimises ||sum_i x_i w_i - w*||_2
over the discrete weights, subject to sum_i x_i = 1 (a least-squares system on the Gram matrix
A_ij = <w_i, w_j>; EDM2 solves it on the continuous profiles and normalises afterwards). Since sum_tau
(sum_i x_i w_i - w*)(tau) = 0, for any trajectory theta and any constant c the reconstruction error is
``|sum_tau r(tau) (theta_tau - c)| <= ||r||_2 ||theta - c||_2`` (Cauchy-Schwarz): :func:`solve_coefficients`
returns ||r||_2 / ||w*||_2, the relative profile error that bounds it.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

SIGMA_REL_MAX = float(np.sqrt(1.0 / 12.0))  # gamma -> 0: a uniform average over all of training
PROFILE_TOL = 0.05  # relative profile error above which a sigma_rel counts as out of reach


def gamma_to_sigma_rel(gamma):
    """EDM2 eq. 3: the relative standard deviation of the power-function profile with exponent gamma."""
    g = np.asarray(gamma, np.float64)
    return np.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3)))


def sigma_rel_to_gamma(sigma_rel):
    """The exponent gamma > 0 whose profile has relative width ``sigma_rel`` in (0, sqrt(1/12)): the largest
    real root of gamma^3 + 7 gamma^2 + (16 - s^-2) gamma + (12 - s^-2) (EDM2 Algorithm 2)."""
    s = np.asarray(sigma_rel, np.float64)
    if np.any(~(s > 0)) or np.any(s >= SIGMA_REL_MAX):
        raise ValueError(f"sigma_rel={sigma_rel}; allowed: 0 < sigma_rel < sqrt(1/12) = {SIGMA_REL_MAX:.4f} "
                         "(a power-function EMA profile with gamma > 0)")
    out = [max(r.real for r in np.roots([1.0, 7.0, 16.0 - v ** -2, 12.0 - v ** -2]) if abs(r.imag) < 1e-9)
           for v in s.reshape(-1)]
    return np.asarray(out).reshape(s.shape)


def power_beta(k, gamma):
    """beta_k = (1 - 1/k)^(gamma + 1) for the k-th update (k >= 1; beta_1 = 0: the EMA starts at theta_1)."""
    k = jnp.asarray(k, jnp.float32)
    return jnp.exp((gamma + 1.0) * jnp.log1p(-1.0 / jnp.maximum(k, 1.0)))


def power_ema_update(emas: tuple, params, k, gammas: Sequence[float]) -> tuple:
    """The tracked power-function EMAs after the k-th update (``params`` = theta_k)."""
    if len(emas) != len(gammas):
        raise ValueError(f"{len(emas)} tracked EMAs in the state but {len(gammas)} gammas (optim.posthoc_ema)")
    out = []
    for ema, g in zip(emas, gammas):
        b = power_beta(k, g)
        out.append(jax.tree_util.tree_map(lambda e, p: b * e + (1.0 - b) * p, ema, params))
    return tuple(out)


def profile(t: int, gamma: float, taus=None) -> np.ndarray:
    """The weights w_t(tau) of the power EMA after t updates on theta_tau, tau = 1..t (float64; zero past t)."""
    taus = np.arange(1, t + 1, dtype=np.float64) if taus is None else np.asarray(taus, np.float64)
    with np.errstate(divide="ignore"):  # tau = 1: log1p(-1) = -inf, w = (1/t)^(gamma + 1)
        w = np.exp((gamma + 1) * np.log(np.minimum(taus, t) / t)) * -np.expm1((gamma + 1) * np.log1p(-1.0 / taus))
    return np.where(taus <= t, w, 0.0)


def _gram(steps, gammas, target_step, target_gamma, chunk: int = 1 << 16):
    """A = <w_i, w_j> over the snapshots, b = <w_i, w*> and ||w*||^2, accumulated over tau in chunks."""
    n = len(steps)
    T = int(max(max(steps), target_step))
    A, b, ww = np.zeros((n, n)), np.zeros(n), 0.0
    for lo in range(1, T + 1, chunk):
        taus = np.arange(lo, min(lo + chunk, T + 1), dtype=np.float64)
        W = np.stack([profile(s, g, taus) for s, g in zip(steps, gammas)])
        w = profile(target_step, target_gamma, taus)
        A += W @ W.T
        b += W @ w
        ww += w @ w
    return A, b, ww


def solve_coefficients(steps: Sequence[int], gammas: Sequence[float], target_step: int, target_gamma: float):
    """``(x, rel_error)``: the snapshot weights x (summing to 1) whose combined profile is nearest to the
    power profile (target_step, target_gamma) in the l2 norm over updates, and ||sum x_i w_i - w*|| / ||w*||."""
    if len(steps) != len(gammas) or not len(steps):
        raise ValueError(f"need one gamma per snapshot and at least one snapshot; got {len(steps)} steps and "
                         f"{len(gammas)} gammas")
    A, b, ww = _gram(steps, gammas, target_step, target_gamma)
    n = len(steps)
    scale = np.sqrt(np.mean(np.diag(A)))  # the KKT system in units where A is O(1)
    K = np.zeros((n + 1, n + 1))
    K[:n, :n] = A / scale**2
    K[:n, n] = K[n, :n] = 1.0
    rhs = np.concatenate([b / scale**2, [1.0]])
    sol = np.linalg.lstsq(K, rhs, rcond=1e-13)[0]
    x = sol[:n]
    resid2 = max(x @ A @ x - 2 * x @ b + ww, 0.0)
    return x, float(np.sqrt(resid2 / ww))


def reachable_range(steps, gammas, target_step: int, tol: float = PROFILE_TOL, num: int = 60):
    """``(lo, hi)``: the sigma_rel interval whose profiles at ``target_step`` the snapshots reconstruct with a
    relative profile error at most ``tol`` (scanned on ``num`` log-spaced values in [0.005, 0.285])."""
    grid = np.geomspace(0.005, 0.285, num)
    ok = [s for s in grid if solve_coefficients(steps, gammas, target_step, float(sigma_rel_to_gamma(s)))[1] <= tol]
    return (float(min(ok)), float(max(ok))) if ok else (float("nan"), float("nan"))


def combine(trees: Sequence, x) -> object:
    """sum_i x_i trees_i, leaf by leaf (float64 accumulation on host, cast back to each leaf's dtype)."""
    leaves = [jax.tree_util.tree_leaves(t) for t in trees]
    out = []
    for parts in zip(*leaves):
        acc = sum(float(c) * np.asarray(p, np.float64) for c, p in zip(x, parts))
        out.append(acc.astype(np.asarray(parts[0]).dtype))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(trees[0]), out)


# --- snapshots in a workdir ---------------------------------------------------------------------------

def snapshot_dir(workdir: str) -> str:
    return os.path.join(workdir, "ema_snapshots")


def snapshot_meta(sigma_rels: Sequence[float], step: int) -> dict:
    return {"step": int(step), "sigma_rels": [float(s) for s in sigma_rels],
            "gammas": [float(g) for g in sigma_rel_to_gamma(np.asarray(sigma_rels))]}


def load_snapshots(workdir: str, params_template, num_profiles: int):
    """``(steps, gammas, trees)`` of every snapshot saved in ``workdir`` (one entry per tracked profile and
    snapshot step; ``num_profiles`` tracked), read with the structure of ``params_template``."""
    from jaxdiff.training.checkpoint import Checkpointer

    d = snapshot_dir(workdir)
    if not os.path.isdir(d):
        raise FileNotFoundError(f"{workdir} has no EMA snapshots ({d}): train with optim.posthoc_ema set, e.g. "
                                "--config.optim.posthoc_ema='(0.05, 0.1)'")
    ck = Checkpointer(d, keep=None, async_save=False)
    steps, gammas, trees = [], [], []
    for s in ck.all_steps():
        template = tuple(params_template for _ in range(num_profiles))
        snap, meta, _ = ck.restore(template, s)
        for g, tree in zip(meta["gammas"], snap):
            steps.append(int(meta["step"]))
            gammas.append(float(g))
            trees.append(tree)
    ck.close()
    if not trees:
        raise FileNotFoundError(f"no complete EMA snapshot in {d}")
    return steps, gammas, trees


def reconstruct(steps, gammas, trees, sigma_rel: float, target_step: int | None = None,
                tol: float = PROFILE_TOL):
    """``(params, info)``: the params of the power EMA with ``sigma_rel`` at ``target_step`` (default: the last
    snapshot's step) from snapshots; ValueError naming the reachable range when the relative profile error
    exceeds ``tol``."""
    target_step = int(max(steps) if target_step is None else target_step)
    if target_step > max(steps):
        raise ValueError(f"target step {target_step} is past the last snapshot ({max(steps)})")
    gamma = float(sigma_rel_to_gamma(sigma_rel))
    x, err = solve_coefficients(steps, gammas, target_step, gamma)
    if err > tol:
        lo, hi = reachable_range(steps, gammas, target_step, tol)
        raise ValueError(f"sigma_rel={sigma_rel} is outside what the stored profiles (sigma_rel "
                         f"{sorted(set(np.round(gamma_to_sigma_rel(gammas), 4).tolist()))} at {len(set(steps))} "
                         f"steps) can reach at step {target_step}: relative profile error {err:.3f} > {tol}; "
                         f"reachable: sigma_rel in [{lo:.3f}, {hi:.3f}]")
    return combine(trees, x), {"sigma_rel": float(sigma_rel), "gamma": gamma, "step": target_step,
                               "profile_error": err, "coefficients": [float(c) for c in x]}

