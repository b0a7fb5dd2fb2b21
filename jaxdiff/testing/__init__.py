"""Analytic models with exact eps / score / x0 for tests and benchmarks."""

from jaxdiff.testing.gmm import Gaussian, GaussianMixture, random_mixture

__all__ = ["Gaussian", "GaussianMixture", "random_mixture"]
