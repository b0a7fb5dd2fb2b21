"""NCSNv2's techniques (Song & Ermon 2020, "Improved techniques for training score-based generative
models"): the noise levels and the Langevin step size of a noise-conditional score network as functions of
the training data and the sampling budget.

1. sigma_1 = the largest Euclidean distance between two training points (:func:`max_pairwise_distance`), so
   that Langevin at the first level can move between any two modes.
2. The geometric ratio gamma = sigma_{i-1} / sigma_i from neighbouring Gaussians' overlap in D dimensions:
   Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) = 1/2 (:func:`geometric_ratio`),
   and so the number of levels L from sigma_1 to sigma_L.
3. Noise conditioning by s(x, sigma) = F(x) / sigma with an unconditional F
   (``diffusion.preconditioning = "sigma_scaled"``, :class:`jaxdiff.models.precond.Preconditioned`).
4. The step size: with T Langevin steps per level, x <- x + alpha_i s + sqrt(2 alpha_i) z, alpha_i =
   eps sigma_i^2 / sigma_L^2, the eps whose ratio of the sample variance after T steps to sigma_i^2 (started
   at sigma_{i-1}^2; exact for one point of data) is closest to 1 (:func:`langevin_step_size`, their eq. 4).
   In jaxdiff's annealed Langevin (x <- x + a/2 s + sqrt(a) z, a = step_lr sigma_i^2 / sigma_L^2) that is
   ``step_lr = 2 eps``.
5. An exponential moving average of the weights (the training loop keeps one; samples use it).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize
import scipy.stats


def max_pairwise_distance(x, chunk: int = 2048) -> float:
    """max_{i, j} ||x_i - x_j||_2 over the rows of ``x [N, ...]`` (exact, in float64 chunks)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    if len(x) < 2:
        raise ValueError(f"need at least two training points, got {len(x)}")
    sq = (x**2).sum(1)
    best = 0.0
    for i in range(0, len(x), chunk):
        d = sq[i:i + chunk, None] - 2 * x[i:i + chunk] @ x.T + sq[None]
        best = max(best, float(d.max()))
    return math.sqrt(max(best, 0.0))


def overlap(gamma: float, dim: int) -> float:
    """Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma): NCSNv2's measure of how much
    N(0, sigma_{i-1}^2 I) and N(0, sigma_i^2 I) overlap in D dimensions (their Technique 2)."""
    a = math.sqrt(2 * dim) * (gamma - 1)
    return float(scipy.stats.norm.cdf(a + 3 * gamma) - scipy.stats.norm.cdf(a - 3 * gamma))


def geometric_ratio(dim: int, target: float = 0.5) -> float:
    """The gamma > 1 with :func:`overlap` (gamma, dim) = ``target`` (1/2 in NCSNv2)."""
    if dim < 1 or not 0 < target < 1:
        raise ValueError(f"need dim >= 1 and 0 < target < 1, got dim={dim}, target={target}")
    if math.sqrt(2 * dim) <= 3:  # the overlap then grows with gamma: the rule has no solution
        raise ValueError(f"NCSNv2's overlap rule needs D >= 5 dimensions (sqrt(2D) > 3), got D = {dim}; choose gamma "
                         "by hand for low-dimensional data")
    hi = 2.0
    while overlap(hi, dim) > target:
        hi *= 2
    return float(scipy.optimize.brentq(lambda g: overlap(g, dim) - target, 1.0 + 1e-12, hi, xtol=1e-14))


def num_levels(sigma_1: float, sigma_L: float, gamma: float) -> int:
    """L geometric levels from sigma_1 down to sigma_L with ratio at most gamma: ceil(log(s1/sL)/log gamma) + 1."""
    if not sigma_1 > sigma_L > 0 or not gamma > 1:
        raise ValueError(f"need sigma_1 > sigma_L > 0 and gamma > 1, got {sigma_1}, {sigma_L}, {gamma}")
    return int(math.ceil(math.log(sigma_1 / sigma_L) / math.log(gamma) - 1e-9)) + 1


def stationary_ratio(eps: float, gamma: float, sigma_L: float, T: int) -> float:
    """NCSNv2 eq. 4: the variance after T steps at level i over sigma_i^2, from variance (gamma sigma_i)^2:
    (1 - e)^(2T) (gamma^2 - 2e / (1 - (1 - e)^2)) + 2e / (1 - (1 - e)^2), e = eps / sigma_L^2."""
    e = eps / sigma_L**2
    if not 0 < e < 1:
        raise ValueError(f"eps / sigma_L^2 must lie in (0, 1), got {e}")
    c = 2 * e / (1 - (1 - e) ** 2)
    return float((1 - e) ** (2 * T) * (gamma**2 - c) + c)


def langevin_step_size(gamma: float, sigma_L: float, T: int) -> float:
    """The eps that brings :func:`stationary_ratio` closest to 1 (it is > 1 for every eps: the minimiser)."""
    if T < 1:
        raise ValueError(f"steps per level T must be >= 1, got {T}")
    log_e = scipy.optimize.minimize_scalar(lambda u: stationary_ratio(math.exp(u) * sigma_L**2, gamma, sigma_L, T),
                                           bounds=(math.log(1e-9), math.log(1 - 1e-9)), method="bounded",
                                           options={"xatol": 1e-10})
    return float(math.exp(log_e.x) * sigma_L**2)


def ncsnv2_settings(x_train, sigma_L: float = 0.01, steps_per_level: int = 5, overlap_target: float = 0.5) -> dict:
    """Every NCSNv2 choice for training data ``x_train [N, ...]`` (in the model's scale, e.g. [-1, 1]):
    sigma_1, gamma (exactly geometric from sigma_1 to sigma_L over L levels), L, the step size eps and jaxdiff's
    ``step_lr = 2 eps``, and the VE schedule's ``sigma_min`` / ``sigma_max`` whose levels t = i / L (training
    with ``diffusion.noise_levels = L``, sampling with ``num_steps = L``) are those sigmas."""
    x = np.asarray(x_train)
    dim = int(np.prod(x.shape[1:]))
    sigma_1 = max_pairwise_distance(x)
    L = num_levels(sigma_1, sigma_L, geometric_ratio(dim, overlap_target))
    gamma = (sigma_1 / sigma_L) ** (1.0 / (L - 1))
    eps = langevin_step_size(gamma, sigma_L, steps_per_level)
    return {"sigma_1": sigma_1, "sigma_L": sigma_L, "gamma": gamma, "num_levels": L, "dim": dim,
            "steps_per_level": steps_per_level, "eps": eps, "step_lr": 2 * eps,
            "stationary_ratio": stationary_ratio(eps, gamma, sigma_L, steps_per_level),
            "sigma_min": sigma_L / gamma, "sigma_max": sigma_1}
