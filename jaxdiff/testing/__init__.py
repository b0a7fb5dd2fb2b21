"""Analytic models with exact eps / score / x0 for tests and benchmarks."""

from jaxdiff.testing.gmm import Gaussian, GaussianMixture, random_mixture
from jaxdiff.testing.imputation import MLPBackbone, ar1_problem, exact_conditional_model_fn, train_mlp_imputer

__all__ = ["Gaussian", "GaussianMixture", "MLPBackbone", "ar1_problem", "exact_conditional_model_fn",
           "random_mixture", "train_mlp_imputer"]
