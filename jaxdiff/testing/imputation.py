"""The imputation reference problem and its exact models: an AR(1)-like Gaussian series whose conditional is
closed form, the exact conditional imputation model of a Gaussian (what a perfectly trained CSDI network
computes), and a small MLP backbone for conditional imputation models of vectors (tests, benchmarks)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.schedules import Schedule
from jaxdiff.testing.gmm import Gaussian


def ar1_problem():
    """``(gaussian, known, x_known)``: 8 values with mean 0.1 and cov 0.25 * 0.9^|i - j|, the first 5 known
    (0.5, 0.6, ..., 0.9), the last 3 to impute (a forecast; exact conditional by ``gaussian.conditional``)."""
    idx = np.arange(8)
    g = Gaussian(jnp.full((8,), 0.1), jnp.asarray(0.25 * 0.9 ** np.abs(idx[:, None] - idx[None])))
    return g, idx < 5, np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0, 0, 0])


def exact_conditional_model_fn(g: Gaussian, known, schedule: Schedule):
    """``model_fn(x [B, d], t, cond={"obs", "mask"})`` of the exact conditional imputation model of ``g`` for
    the fixed ``known`` coordinates: eps of the Gaussian p(x_u | x_k = obs_k) (its mean moves with each
    example's observed values; Schur complement) at the unknown coordinates, 0 at the known ones."""
    k = np.asarray(known, bool)
    u = ~k
    mu, S = np.asarray(g.mean, np.float64), np.asarray(g.cov, np.float64)
    gain = S[np.ix_(u, k)] @ np.linalg.inv(S[np.ix_(k, k)])
    cov_u = S[np.ix_(u, u)] - gain @ S[np.ix_(k, u)]

    def fn(x, t, cond):
        B = x.shape[0]
        obs = jnp.asarray(cond["obs"], x.dtype).reshape(B, -1)
        mean_u = jnp.asarray(mu[u], x.dtype) + (obs[:, k] - jnp.asarray(mu[k], x.dtype)) @ jnp.asarray(gain.T, x.dtype)
        tb = jnp.broadcast_to(jnp.asarray(t, x.dtype), (B,))
        one = lambda m, xu, ti: Gaussian(m, jnp.asarray(cov_u, x.dtype)).model_fn(schedule)(xu[None], ti[None])[0]
        eps_u = jax.vmap(one)(mean_u, x.reshape(B, -1)[:, u], tb)
        return jnp.zeros((B, x[0].size), x.dtype).at[:, u].set(eps_u).reshape(x.shape)

    return fn


class MLPBackbone(nn.Module):
    """An MLP on flattened ``[B, ..., 3 C]`` conditional-imputation inputs (or any inputs, ``in_factor=1``)
    with a sinusoidal embedding of 1000 t; outputs ``[B, ..., C]``. Small vector problems only."""

    width: int = 256
    depth: int = 3
    in_factor: int = 3

    @nn.compact
    def __call__(self, x, t, cond=None, train: bool = False):
        del cond, train
        B = x.shape[0]
        out_shape = x.shape[:-1] + (x.shape[-1] // self.in_factor,)
        tb = jnp.broadcast_to(jnp.asarray(t, x.dtype), (B,)) * 1000.0
        freqs = jnp.exp(-jnp.log(1000.0) * jnp.arange(16, dtype=x.dtype) / 16)
        h = jnp.concatenate([x.reshape(B, -1), jnp.sin(tb[:, None] * freqs), jnp.cos(tb[:, None] * freqs)], -1)
        for _ in range(self.depth):
            h = nn.silu(nn.Dense(self.width)(h))
        return nn.Dense(int(np.prod(out_shape[1:])))(h).reshape(out_shape)


def train_mlp_imputer(g: Gaussian, schedule: Schedule, horizon: int, *, steps: int = 1500, batch: int = 256,
                      lr: float = 2e-3, seed: int = 0):
    """``(model, params)``: an :class:`~jaxdiff.models.imputation.ImputationNet` over :class:`MLPBackbone`
    trained on samples of ``g`` (as ``[B, d, 1]`` series) with forecast-shaped masks (the last ``horizon``
    values missing), eps-prediction, Adam with cosine decay, in one ``lax.scan``."""
    import optax

    from jaxdiff.imputation import make_conditional_loss
    from jaxdiff.losses import make_loss
    from jaxdiff.models.imputation import ImputationNet

    d = g.mean.shape[0]
    model = ImputationNet(MLPBackbone(), 1)
    params = model.init(jax.random.key(seed), jnp.zeros((1, d, 1)), jnp.zeros((1,)))["params"]
    base = make_loss(lambda p, x, t, c, k: model.apply({"params": p}, x, t, c), schedule, prediction="eps")
    loss = make_conditional_loss(base, (0.0, 0.0, 1.0), horizon=horizon)
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))

    @jax.jit
    def train(params):
        def body(carry, i):
            p, o = carry
            k = jax.random.fold_in(jax.random.key(seed + 1), i)
            x = g.sample(k, batch)[..., None]
            grads = jax.grad(lambda p: loss(p, {"x": x}, jax.random.fold_in(k, 1))[0])(p)
            u, o = tx.update(grads, o, p)
            return (optax.apply_updates(p, u), o), None

        return jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))[0][0]

    return model, train(params)
