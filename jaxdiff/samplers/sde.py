"""Score-based stochastic samplers: predictor-corrector (Song et al. 2021b, Algorithms 2-3) and annealed
Langevin dynamics (Song & Ermon 2019, Algorithm 1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.samplers.common import finish, prepare, require_key, scan_steps, step_key


def _score(den, schedule, x, t):
    _, eps = den(x, t)
    return -eps / schedule.sigma(t)


def langevin_corrector(den, schedule, x, t, key, *, snr, n_steps: int, step_scale):
    """Langevin MCMC on p_t with the step size set by the target signal-to-noise ratio ``snr``
    (Song et al. 2021b Algorithm 4): eps_i = 2 alpha_i (snr ||z|| / ||score||)^2 with the norms averaged
    over the batch, as score_sde does (a per-example step that depends on its own noise draw would bias
    the chain in low dimensions)."""
    flat = lambda v: v.reshape(v.shape[0], -1)

    def body(j, x):
        z = jax.random.normal(jax.random.fold_in(key, j), x.shape, x.dtype)
        grad = _score(den, schedule, x, t)
        g_norm = jnp.linalg.norm(flat(grad), axis=-1).mean()
        z_norm = jnp.linalg.norm(flat(z), axis=-1).mean()
        step = 2 * step_scale * (snr * z_norm / g_norm) ** 2
        return x + step * grad + jnp.sqrt(2 * step) * z

    return jax.lax.fori_loop(0, n_steps, body, x)


def sample_pc(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None, prediction: str = "eps",
              snr=0.16,
              n_corrector_steps: int = 1, spacing: str = "uniform", t_max: float = 1.0, t_min=None,
              cond=None, denoise_final: bool = True, return_trajectory: bool = False):
    """Predictor-corrector sampling (Song et al. 2021b): at each time a Langevin corrector, then the
    reverse-diffusion predictor x_mean = x - f_i x + G_i^2 score, x = x_mean + G_i z, with the
    discretization x_t = alpha_{t|s} x_s + G z of the forward SDE (f_i = alpha_{t|s} - 1,
    G_i^2 = sigma^2_{t|s}), which is score_sde's for VP and VE. Returns the last x_mean when
    ``denoise_final`` (score_sde's noise removal). NFE = num_steps (1 + n_corrector_steps)."""
    require_key(key, "pc")
    den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction,
                      spacing=spacing, t_max=t_max, t_min=t_min, cond=cond,
                      stateless="pc with a corrector" if n_corrector_steps > 0 else None)
    snr = jnp.asarray(snr, x_T.dtype)

    def step(carry, t, s, i):
        x, _ = carry
        k = step_key(key, i)
        alpha_ts, var_ts = schedule.transition(s, t)
        if n_corrector_steps > 0:
            x = langevin_corrector(den, schedule, x, t, jax.random.fold_in(k, 1), snr=snr,
                                   n_steps=n_corrector_steps, step_scale=alpha_ts**2)
        score = _score(den, schedule, x, t)
        x_mean = x - (alpha_ts - 1) * x + var_ts * score
        z = jax.random.normal(jax.random.fold_in(k, 0), x.shape, x.dtype)
        return (x_mean + jnp.sqrt(var_ts) * z, x_mean)

    (x, x_mean), traj = scan_steps(step, (x_T, x_T), ts, return_trajectory, den=den)
    return finish(x_mean if denoise_final else x, traj, return_trajectory)


def sample_annealed_langevin(model_fn, schedule, x_T, key, *, num_steps: int | None = None, ts=None,
                             prediction: str = "eps",
                             n_steps_each: int = 100, step_lr=2e-5, spacing: str = "uniform",
                             t_max: float = 1.0, t_min=None, cond=None, denoise_final: bool = True,
                             consistent: bool = False, return_trajectory: bool = False):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) over ``num_steps`` noise levels
    sigma_1 > ... > sigma_L (the grid's sigma_t; geometric for the VE schedule): at each level
    ``n_steps_each`` steps x <- x + a_i/2 score + sqrt(a_i) z, a_i = step_lr sigma_i^2 / sigma_L^2 (NCSNv2's
    eps is step_lr / 2: :mod:`jaxdiff.ncsn`). ``denoise_final`` adds Tweedie's x + sigma_L^2 score
    (Jolicoeur-Martineau et al. 2021). ``consistent``: their consistent annealed sampling (Algorithm 2), one
    step per level with ``n_steps_each = 1``: x <- x + eta sigma_i^2 score + sqrt(sigma_{i+1}^2 - (1 - eta)^2
    sigma_i^2) z, eta = step_lr / (2 sigma_L^2), sigma_{L+1} = 0, so that x keeps the noise level of the
    grid at every step (exactly, for a point of data). NFE = num_steps x n_steps_each (+1)."""
    if consistent and n_steps_each != 1:
        raise ValueError(f"consistent annealed sampling takes one step per level: n_steps_each=1, got "
                         f"{n_steps_each}; use more levels (num_steps) instead")
    require_key(key, "annealed_langevin")
    den, ts = prepare(model_fn, schedule, x_T, ts=ts, num_steps=num_steps, prediction=prediction,
                      spacing=spacing, t_max=t_max, t_min=t_min, cond=cond, stateless="annealed_langevin")
    levels = ts[:-1]  # the num_steps noise levels visited
    sigma_L = schedule.sigma(levels[-1])
    step_lr = jnp.asarray(step_lr, x_T.dtype)

    def step(carry, t, s, i):
        (x,) = carry
        a = step_lr * (schedule.sigma(t) / sigma_L) ** 2
        if consistent:
            sig = schedule.sigma(t)
            sig_next = jnp.where(i == levels.shape[0] - 1, 0.0, schedule.sigma(s))
            eta = step_lr / (2 * sigma_L**2)
            z = jax.random.normal(step_key(key, i), x.shape, x.dtype)
            noise = jnp.sqrt(jnp.maximum(sig_next**2 - (1 - eta) ** 2 * sig**2, 0.0))
            return (x + eta * sig**2 * _score(den, schedule, x, t) + noise * z,)

        def body(j, x):
            z = jax.random.normal(jax.random.fold_in(step_key(key, i), j), x.shape, x.dtype)
            return x + 0.5 * a * _score(den, schedule, x, t) + jnp.sqrt(a) * z

        return (jax.lax.fori_loop(0, n_steps_each, body, x),)

    (x,), traj = scan_steps(step, (x_T,), ts, return_trajectory)
    if denoise_final:
        t_L = levels[-1]
        x = x + schedule.sigma(t_L) ** 2 * _score(den, schedule, x, t_L)
    return finish(x, traj, return_trajectory)
