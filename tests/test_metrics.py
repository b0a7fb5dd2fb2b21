"""FID, KID and precision / recall on feature sets against independent computations and their defining
properties; reference statistics files."""

import numpy as np
import pytest
import scipy.linalg

from jaxdiff.evaluation import metrics as M
from jaxdiff.evaluation.fid import fd_of_features


def _fid_reference(a, b):
    """FID in float64 by another route: tr (S1 S2)^(1/2) = sum of sqrt of the eigenvalues of
    S1^(1/2) S2 S1^(1/2) (symmetric PSD), S1^(1/2) by scipy's sqrtm."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    r = np.real(scipy.linalg.sqrtm(s1))
    ev = np.linalg.eigvalsh(r @ s2 @ r)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


def test_fid_equals_the_formula_independently():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(size=(300, 16)) * 1.3 + 0.4
    ref = _fid_reference(a, b)
    assert abs(fd_of_features(a, b) - ref) <= 1e-6 * abs(ref)
    assert abs(fd_of_features(a, a)) < 1e-6 * np.trace(np.cov(a, rowvar=False))


def test_kid_is_unbiased():
    """Over many pairs of sets drawn from one distribution, the MMD^2 estimates average 0 (3 standard errors),
    while a shifted distribution is clearly positive."""
    rng = np.random.default_rng(1)
    vals = [M.mmd2_unbiased(rng.normal(size=(30, 8)), rng.normal(size=(40, 8))) for _ in range(400)]
    se = np.std(vals) / np.sqrt(len(vals))
    assert abs(np.mean(vals)) < 3 * se
    mean, std = M.kid(rng.normal(size=(200, 8)) + 0.5, rng.normal(size=(200, 8)), num_subsets=20, subset_size=100)
    assert mean > 5 * std / np.sqrt(20) and mean > 0


def test_mmd_matches_the_kernel_sums():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / 20
    np.testing.assert_allclose(M.mmd2_unbiased(x, y), xx + yy - 2 * xy, rtol=1e-12)


def test_precision_recall():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(500, 4))
    assert M.precision_recall(real, real) == (1.0, 1.0)
    prs = [M.precision_recall(real, rng.normal(size=(500, 4)) + s) for s in (0.0, 1.0, 2.0, 4.0)]
    p, r = np.array(prs).T
    assert p[0] > 0.8 and r[0] > 0.8
    assert np.all(np.diff(p) < 0) and np.all(np.diff(r) < 0) and p[-1] < 0.05
    # k-th neighbour radii against brute force
    x = rng.normal(size=(20, 3))
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.testing.assert_allclose(M.knn_radii(x, 3), np.sort(d, 1)[:, 3], rtol=1e-10)


def test_stats_files(tmp_path):
    rng = np.random.default_rng(4)
    f = rng.normal(size=(50, 6))
    M.save_stats(str(tmp_path / "s.npz"), f)
    s = M.load_stats(str(tmp_path / "s.npz"), dim=6)
    np.testing.assert_allclose(s["mu"], f.mean(0))
    np.testing.assert_allclose(M.fid_from_stats(f, s), 0.0, atol=1e-8)
    with pytest.raises(FileExistsError, match="never overwrites"):
        M.save_stats(str(tmp_path / "s.npz"), f)
    with pytest.raises(ValueError, match="D = 2048"):
        M.load_stats(str(tmp_path / "s.npz"), dim=2048)
    np.savez(tmp_path / "bad.npz", mean=f.mean(0))
    with pytest.raises(ValueError, match=r"no \['mu', 'sigma'\]"):
        M.load_stats(str(tmp_path / "bad.npz"))
