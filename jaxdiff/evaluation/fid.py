"""Fréchet distance (Heusel et al. 2017) between Gaussian fits of two feature sets, with bootstrap."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of features ``[N, D]`` (float64)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, D], got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}); the matrix square root by scipy's sqrtm, with
    a small diagonal offset when the product is singular (as the reference TTUR implementation)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    s1, s2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"shape mismatch: means {mu1.shape} vs {mu2.shape}, covariances {s1.shape} vs "
                         f"{s2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fd_of_features(a, b) -> float:
    """The Frechet distance (FID on Inception features) between two feature sets ``[N, D]`` (float64 fits)."""
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def bootstrap_fd(a, b, num: int = 200, seed: int | tuple = 0, level: float = 0.95, n: int | None = None
                 ) -> tuple[float, float, float]:
    """FD between ``n`` rows of ``a`` (default: ``len(b)``) and all of ``b``, with an interval over
    ``num`` random subsets of ``a`` drawn without replacement.

    Resampling with replacement (the plain bootstrap) duplicates points, which shrinks the fitted
    covariance and biases FD upward, so its percentile interval does not even contain the estimate;
    subsets without replacement keep every draw an honest n-sample FD. ``seed``: an int or a tuple of ints
    (numpy's seed sequence: one stream per use, never seed arithmetic). Returns (FD of the first n rows,
    lower, upper)."""
    rng = np.random.default_rng(seed)  # evaluation only: not part of any jitted computation
    a, b = np.asarray(a), np.asarray(b)
    n = min(n or len(b), len(a))
    vals = [fd_of_features(a[rng.choice(len(a), n, replace=False)], b) for _ in range(num)]
    lo, hi = np.percentile(vals, [50 * (1 - level), 100 - 50 * (1 - level)])
    return fd_of_features(a[:n], b), float(lo), float(hi)
