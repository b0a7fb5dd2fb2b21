"""Gaussian mixtures with diagonal covariances: the exact diffused density under any schedule.

If x0 ~ sum_k pi_k N(mu_k, diag(s_k^2)) then x_t = alpha x0 + sigma eps has the closed-form density
p_t(x) = sum_k pi_k N(x; alpha mu_k, diag(alpha^2 s_k^2 + sigma^2)), hence the exact score, eps = -sigma
score and E[x0 | x_t] (Tweedie). Samplers driven by this model must reproduce the mixture, and
deterministic samplers must follow its probability-flow ODE.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp, ndtr

from jaxdiff.forward import bcast
from jaxdiff.schedules import Schedule


@flax.struct.dataclass
class GaussianMixture:
    """A mixture ``sum_k weights_k N(means_k, diag(stds_k^2))`` in ``d`` dimensions (flattened data)."""

    weights: jax.Array  # [K]
    means: jax.Array  # [K, d]
    stds: jax.Array  # [K, d]

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    def _flat(self, x):
        return x.reshape(x.shape[0], -1)

    def log_prob_t(self, x, alpha, sigma):
        """log p_t(x) for ``x [B, ...]`` and per-example ``alpha, sigma [B]`` (or scalars)."""
        xf = self._flat(x)
        a = bcast(jnp.broadcast_to(alpha, (xf.shape[0],)), xf)[:, None]  # [B, 1, 1]
        s = bcast(jnp.broadcast_to(sigma, (xf.shape[0],)), xf)[:, None]
        var = a**2 * self.stds[None] ** 2 + s**2  # [B, K, d]
        diff = xf[:, None] - a * self.means[None]
        comp = -0.5 * jnp.sum(diff**2 / var + jnp.log(2 * jnp.pi * var), -1)  # [B, K]
        return logsumexp(comp + jnp.log(self.weights), axis=-1)

    def responsibilities(self, x, alpha, sigma):
        xf = self._flat(x)
        a = bcast(jnp.broadcast_to(alpha, (xf.shape[0],)), xf)[:, None]
        s = bcast(jnp.broadcast_to(sigma, (xf.shape[0],)), xf)[:, None]
        var = a**2 * self.stds[None] ** 2 + s**2
        diff = xf[:, None] - a * self.means[None]
        comp = -0.5 * jnp.sum(diff**2 / var + jnp.log(var), -1) + jnp.log(self.weights)
        return jax.nn.softmax(comp, -1), diff, var, a

    def score_t(self, x, alpha, sigma):
        """grad_x log p_t(x), closed form: sum_k r_k(x) * (alpha mu_k - x) / var_k."""
        r, diff, var, _ = self.responsibilities(x, alpha, sigma)
        return jnp.sum(r[..., None] * (-diff / var), 1).reshape(x.shape)

    def x0_t(self, x, alpha, sigma):
        """E[x0 | x_t = x] (exact posterior mean, per-component Gaussian conditioning)."""
        r, diff, var, a = self.responsibilities(x, alpha, sigma)
        post = self.means[None] + a * self.stds[None] ** 2 / var * diff  # [B, K, d]
        return jnp.sum(r[..., None] * post, 1).reshape(x.shape)

    def model_fn(self, schedule: Schedule, prediction: str = "eps"):
        """An exact ``model_fn(x, t, cond=None)`` returning ``prediction`` under ``schedule``."""
        from jaxdiff.parameterization import from_x0_eps_at

        def fn(x, t, cond=None):
            alpha, sigma = schedule.alpha(t), schedule.sigma(t)
            score = self.score_t(x, alpha, sigma)
            eps = -bcast(sigma, x) * score
            if prediction == "score":
                return score
            x0 = self.x0_t(x, alpha, sigma) if prediction in ("x0", "v", "velocity") else None
            return from_x0_eps_at(x0, eps, prediction, schedule, t)

        return fn

    def sample(self, key, n: int, alpha=1.0, sigma=0.0):
        """``n`` draws of x_t (x0 when alpha=1, sigma=0), flattened ``[n, d]``."""
        k1, k2 = jax.random.split(key)
        comp = jax.random.choice(k1, self.weights.shape[0], (n,), p=self.weights)
        z = jax.random.normal(k2, (n, self.dim), self.means.dtype)
        std = jnp.sqrt(alpha**2 * self.stds[comp] ** 2 + sigma**2)
        return alpha * self.means[comp] + std * z

    def quantized_log_prob(self, x, num_levels: int):
        """log P(bin of x) for data quantized to ``num_levels`` values in [-1, 1] (edge bins open),
        ``x [B, d]`` at bin centers; exact for this mixture."""
        xf = self._flat(x)
        half = 1.0 / (num_levels - 1)
        lo = jnp.where(xf <= -1 + 1e-6, -jnp.inf, xf - half)[:, None]
        hi = jnp.where(xf >= 1 - 1e-6, jnp.inf, xf + half)[:, None]
        m, s = self.means[None], self.stds[None]
        mass = ndtr((hi - m) / s) - ndtr((lo - m) / s)  # [B, K, d]
        return logsumexp(jnp.sum(jnp.log(mass), -1) + jnp.log(self.weights), -1)


def random_mixture(key, num_components: int, dim: int, *, mean_scale: float = 1.0,
                   std_range=(0.2, 0.5), dtype=jnp.float32) -> GaussianMixture:
    """A random mixture: means ~ N(0, mean_scale^2), stds ~ U(std_range), weights ~ Dirichlet(2)."""
    k1, k2, k3 = jax.random.split(key, 3)
    means = mean_scale * jax.random.normal(k1, (num_components, dim), dtype)
    stds = jax.random.uniform(k2, (num_components, dim), dtype, *std_range)
    w = jax.random.dirichlet(k3, 2.0 * jnp.ones(num_components, dtype))
    return GaussianMixture(weights=w.astype(dtype), means=means, stds=stds)


def numpy_log_prob(gmm: GaussianMixture, x, alpha, sigma):
    """Independent numpy/scipy reference of log p_t (for tests)."""
    from scipy.stats import multivariate_normal

    w, mu, sd = (np.asarray(a, np.float64) for a in (gmm.weights, gmm.means, gmm.stds))
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    dens = sum(w[k] * multivariate_normal(alpha * mu[k], np.diag(alpha**2 * sd[k] ** 2 + sigma**2)).pdf(x)
               for k in range(len(w)))
    return np.log(dens)


@flax.struct.dataclass
class Gaussian:
    """One Gaussian N(mean, cov) with a full covariance in ``d`` dimensions: exact eps/score/x0 under any
    schedule (x_t ~ N(alpha mean, alpha^2 cov + sigma^2 I)) and the exact conditional of some coordinates
    given the others, the reference for imputation (a correlated series: replacement is then biased)."""

    mean: jax.Array  # [d]
    cov: jax.Array  # [d, d]

    def _inv_t(self, alpha, sigma):
        lam, U = jnp.linalg.eigh(self.cov)
        return lam, U, (U / (alpha**2 * lam + sigma**2)[..., None, :]) @ U.T

    def model_fn(self, schedule: Schedule, prediction: str = "eps"):
        from jaxdiff.parameterization import from_x0_eps_at

        def fn(x, t, cond=None):
            alpha, sigma = schedule.alpha(t), schedule.sigma(t)
            a = jnp.broadcast_to(alpha, (x.shape[0],))[:, None]
            s = jnp.broadcast_to(sigma, (x.shape[0],))[:, None]
            xf = x.reshape(x.shape[0], -1)
            lam, U = jnp.linalg.eigh(self.cov)
            diff = (xf - a * self.mean) @ U  # eigenbasis
            prec = 1.0 / (a**2 * lam + s**2)  # [B, d]
            score = -(diff * prec) @ U.T
            x0 = self.mean + ((a * lam * prec) * diff) @ U.T
            eps = (-s * score).reshape(x.shape)
            if prediction == "score":
                return score.reshape(x.shape)
            return from_x0_eps_at(x0.reshape(x.shape), eps, prediction, schedule, t)

        return fn

    def sample(self, key, n: int):
        L = jnp.linalg.cholesky(self.cov)
        return self.mean + jax.random.normal(key, (n, self.mean.shape[0]), self.mean.dtype) @ L.T

    def conditional(self, known, x_known):
        """Mean and covariance of the coordinates where ``known`` is False given ``x_known`` there
        (Schur complement): ``(mean [d_u], cov [d_u, d_u])``."""
        known = np.asarray(known, bool)
        mu, S = np.asarray(self.mean, np.float64), np.asarray(self.cov, np.float64)
        k, u = known, ~known
        gain = S[np.ix_(u, k)] @ np.linalg.inv(S[np.ix_(k, k)])
        mean = mu[u] + gain @ (np.asarray(x_known, np.float64)[k] - mu[k])
        return mean, S[np.ix_(u, u)] - gain @ S[np.ix_(k, u)]
