"""Evaluation: Fréchet distance, the digits feature classifier, sample grids."""

from jaxdiff.evaluation.fid import bootstrap_fd, fd_of_features, feature_stats, frechet_distance
from jaxdiff.evaluation.grid import make_grid, save_grid, unique_path

__all__ = ["frechet_distance", "feature_stats", "fd_of_features", "bootstrap_fd", "make_grid",
           "save_grid", "unique_path"]
