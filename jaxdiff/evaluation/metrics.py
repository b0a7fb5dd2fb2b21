"""Sample-quality metrics on feature sets, as the literature computes them on Inception features: FID
(Heusel et al. 2017; :mod:`jaxdiff.evaluation.fid`), KID (Bińkowski et al. 2018, the unbiased MMD^2 with
the cubic polynomial kernel, averaged over subsets), precision / recall (Kynkäänniemi et al. 2019, k-NN
manifolds), and reference statistics as ``.npz`` files with ``mu`` and ``sigma`` (the layout pytorch-fid and
clean-fid read and write), so that published reference statistics can be used.
"""

from __future__ import annotations

import os

import numpy as np

from jaxdiff.evaluation.fid import feature_stats, frechet_distance


def fid_from_stats(features, stats: dict) -> float:
    """FID between a feature set and reference statistics ``{"mu", "sigma"}``."""
    mu, sigma = feature_stats(features)
    return frechet_distance(mu, sigma, stats["mu"], stats["sigma"])


def save_stats(path: str, features) -> dict:
    """Write ``mu`` / ``sigma`` of ``features`` to ``path`` (.npz, pytorch-fid's layout); never overwrites."""
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; jaxdiff never overwrites saved statistics")
    mu, sigma = feature_stats(features)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma, num_features=len(features))
    return {"mu": mu, "sigma": sigma}


def load_stats(path: str, dim: int | None = None) -> dict:
    """``{"mu", "sigma"}`` from an ``.npz`` (pytorch-fid / clean-fid layout); errors name what is wrong."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no reference statistics at {path}")
    with np.load(path) as f:
        missing = [k for k in ("mu", "sigma") if k not in f.files]
        if missing:
            raise ValueError(f"{path} has no {missing} (keys: {f.files}); reference statistics are an .npz with "
                             "'mu' [D] and 'sigma' [D, D], as pytorch-fid's --save-stats writes")
        mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size) or (dim is not None and mu.size != dim):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not [D] and [D, D]"
                         + (f" with D = {dim} (the features')" if dim else ""))
    return {"mu": mu, "sigma": sigma}


def _poly_kernel(x, y):
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y) -> float:
    """The unbiased MMD^2 estimate with k(a, b) = (a.b / d + 1)^3 (Bińkowski et al. 2018, eq. 1 with the
    within-set diagonals left out)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid(a, b, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: the mean and standard deviation of :func:`mmd2_unbiased` over ``num_subsets`` random subsets of
    ``min(subset_size, len(a), len(b))`` rows of each set (drawn without replacement)."""
    rng = np.random.default_rng(seed)  # evaluation only: not part of any jitted computation
    a, b = np.asarray(a), np.asarray(b)
    s = min(subset_size, len(a), len(b))
    if s < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {len(a)} and {len(b)}")
    vals = [mmd2_unbiased(a[rng.choice(len(a), s, replace=False)], b[rng.choice(len(b), s, replace=False)])
            for _ in range(num_subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def _sq_dists(x, y, chunk: int = 4096):
    for i in range(0, len(x), chunk):
        xi = x[i:i + chunk]
        yield i, np.maximum((xi**2).sum(1)[:, None] - 2 * xi @ y.T + (y**2).sum(1)[None], 0.0)


def knn_radii(x, k: int = 3) -> np.ndarray:
    """Squared distance from each row of ``x`` to its k-th nearest other row."""
    x = np.asarray(x, np.float64)
    if len(x) <= k:
        raise ValueError(f"k-NN radii need more than k = {k} features, got {len(x)}")
    out = np.empty(len(x))
    for i, d in _sq_dists(x, x):
        out[i:i + len(d)] = np.partition(d, k, axis=1)[:, k]  # column 0 of the sort is the point itself
    return out


def coverage(query, support, radii) -> float:
    """The share of ``query`` rows inside at least one ball (``support`` row, squared radius ``radii``)."""
    query, support = np.asarray(query, np.float64), np.asarray(support, np.float64)
    inside = np.zeros(len(query), bool)
    for i, d in _sq_dists(query, support):
        inside[i:i + len(d)] = (d <= radii[None]).any(1)
    return float(inside.mean())


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019: precision = share of ``fake`` inside the real manifold (the union of balls
    reaching each real feature's k-th neighbour), recall = share of ``real`` inside the fake manifold."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    return coverage(fake, real, knn_radii(real, k)), coverage(real, fake, knn_radii(fake, k))
