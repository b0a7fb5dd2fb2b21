"""Analytic models with exact eps / score / x0 for tests and benchmarks."""

from jaxdiff.testing.gmm import GaussianMixture, random_mixture

__all__ = ["GaussianMixture", "random_mixture"]
