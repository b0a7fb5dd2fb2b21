"""Evaluate samples of a digits model: Fréchet distance in a digits classifier's feature space against
the test split (with the train-vs-test floor at equal counts and bootstrap intervals), the classifier's
confidence and class balance on samples, and the test bits/dim from the variational bound."""

from __future__ import annotations

import numpy as np
from scipy.stats import chisquare

from jaxdiff.data import to_float, to_levels
from jaxdiff.evaluation import classifier as clf
from jaxdiff.evaluation.fid import bootstrap_fd


def sample_quality(samples, train_x, train_y, test_x, test_y, *, num_levels: int, cache_dir: str,
                   cache_name: str, bootstrap: int = 200, seed: int = 0) -> dict:
    """Metrics of ``samples`` (floats in [-1, 1]) against the test split.

    ``train_x``/``test_x`` are K-level integer images; samples are quantized to the same levels first.
    """
    params = clf.load_or_train(cache_dir, cache_name, to_float(train_x, num_levels), train_y)
    q = to_float(to_levels(samples, num_levels), num_levels)
    p_s, f_s = clf.predict(params, q)
    p_te, f_te = clf.predict(params, to_float(test_x, num_levels))
    _, f_tr = clf.predict(params, to_float(train_x, num_levels))
    n = len(test_x)
    fd, fd_lo, fd_hi = bootstrap_fd(f_s, f_te, bootstrap, seed, n=n)
    floor, fl_lo, fl_hi = bootstrap_fd(f_tr, f_te, bootstrap, (seed, 1), n=n)  # the floor's own subsets
    conf = p_s.max(-1)
    counts = np.bincount(p_s.argmax(-1), minlength=p_s.shape[-1])
    return {
        "fd": fd, "fd_ci": [fd_lo, fd_hi], "fd_floor_train_vs_test": floor, "fd_floor_ci": [fl_lo, fl_hi],
        "fd_ratio": fd / floor, "num_compared": n,
        "classifier_test_accuracy": float((p_te.argmax(-1) == test_y).mean()),
        "sample_mean_confidence": float(conf.mean()),
        "sample_frac_confident_0.9": float((conf >= 0.9).mean()),
        "sample_class_counts": counts.tolist(),
        "sample_class_balance_pvalue": float(chisquare(counts).pvalue),
        "num_samples": int(len(samples)),
    }


def label_accuracy(samples, labels, train_x, train_y, *, num_levels: int, cache_dir: str,
                   cache_name: str) -> float:
    """Classifier accuracy of conditional samples against the labels they were drawn for."""
    params = clf.load_or_train(cache_dir, cache_name, to_float(train_x, num_levels), train_y)
    p, _ = clf.predict(params, to_float(to_levels(samples, num_levels), num_levels))
    return float((p.argmax(-1) == np.asarray(labels)).mean())
