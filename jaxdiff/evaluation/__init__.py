"""Evaluation: Fréchet distance, the digits feature classifier, sample quality, reconstruction and forecast
scores (file writing lives in ``jaxdiff.outputs``)."""

from jaxdiff.evaluation.fid import bootstrap_fd, fd_of_features, feature_stats, frechet_distance

__all__ = ["frechet_distance", "feature_stats", "fd_of_features", "bootstrap_fd"]
