"""Time grids for samplers: plain functions returning decreasing arrays, t_0 = t_max down to t_N.

* ``uniform`` (DDIM "linspace"), ``quadratic`` (DDIM's quadratic spacing), ``trailing`` and ``leading``
  (Lin et al. 2023, Table 2) -- on a discrete schedule these are integer steps i/T (respacing). ``trailing``
  is uniform in t from t_max and ends with one step from t_max / N straight to t = 0 (whose result is the
  data prediction) on any schedule that ends at zero noise, instead of stepping down to the smallest noise
  level first: the few-step default of the multistep solvers (benchmarks/results/samplers_peers.md);
* ``logsnr``: uniform in lambda = logsnr/2 (DPM-Solver's "logSNR" spacing);
* ``karras``: sigma_hat = sigma/alpha spaced with rho = 7 (Karras et al. 2022 eq. 5).

When the grid must end where sigma = 0 (a discrete schedule, or the VP SDE, at t_min = 0), the spaced
points end at the first positive level and a final 0 is appended, as k-diffusion appends sigma = 0.

Flow interpolants (``flow_linear``, ``flow_gvp``) have lambda = -inf at t = 1 and +inf at t = 0. Uniform
and quadratic grids run from 1 to 0 as they are (Euler on the linear path). The logsnr and karras spacings
start with one step from t = 1 as long in t as a uniform grid's first step, space the rest in lambda (or
sigma) from there down to t = 1e-3, and end with the step to 0 that returns x0_hat. The first step leaves
lambda = -inf: the multistep solvers' first-order step there is exact DDIM (``common.lam`` floors lambda at
-50, so the next step's history term gets weight ~ 1/h -> 0), and its error shrinks with the step count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.schedules import DiscreteSchedule, Schedule, VPSchedule, alpha_vanishes


def default_t_min(schedule: Schedule) -> float:
    """0 where the schedule is finite there (discrete: the last step goes to alpha_bar_0 = 1); 1e-3 for the
    VP / sub-VP SDEs (Song et al. 2021's eps)."""
    return 1e-3 if isinstance(schedule, VPSchedule) else 0.0


def zero_noise_at_zero(schedule: Schedule) -> bool:
    return isinstance(schedule, (DiscreteSchedule, VPSchedule))


def karras_sigmas(n: int, sigma_min, sigma_max, rho: float = 7.0, *, ramp=None):
    """Karras et al. 2022 eq. 5: n sigmas from sigma_max down to sigma_min, (a + u (b - a))^rho with a =
    sigma_max^(1/rho), b = sigma_min^(1/rho) at u = i / (n - 1); or at the given ``ramp`` u in [0, 1] (a traced
    level count: consistency training's growing discretisation)."""
    ramp = jnp.linspace(0.0, 1.0, n) if ramp is None else ramp
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + ramp * (b - a)) ** rho


# Integer steps in 1..T, decreasing, for each spacing that respaces a discrete schedule: (T, n) -> [n]
DISCRETE_SPACINGS = {
    "uniform": lambda T, n: np.round(np.linspace(T, 1, n)).astype(int) if n > 1 else np.array([T]),
    "quadratic": lambda T, n: np.round(1 + (T - 1) * np.linspace(1, 0, n) ** 2).astype(int),
    "trailing": lambda T, n: np.round(np.arange(T, 0, -T / n)).astype(int),
    "leading": lambda T, n: (np.arange(0, n) * (T // n) + 1)[::-1],
}


def discrete_steps(T: int, n: int, spacing: str) -> np.ndarray:
    """n integer steps in 1..T, decreasing (respacing a T-step model to n steps)."""
    if spacing not in DISCRETE_SPACINGS:
        raise ValueError(f"spacing {spacing!r} does not respace a discrete schedule; allowed: "
                         f"{list(DISCRETE_SPACINGS)}")
    steps = DISCRETE_SPACINGS[spacing](T, n)
    if len(np.unique(steps)) != n:
        raise ValueError(f"spacing {spacing!r} gives repeated steps for num_steps={n}, T={T}; "
                         "use spacing='uniform' or fewer steps")
    return steps


def _linear(schedule, n, t_max, t_min, sigma_max, to_zero):
    return jnp.linspace(t_max, t_min, n)


def _trailing(schedule, n, t_max, t_min, sigma_max, to_zero):
    if to_zero:  # Lin et al. 2023: t_max (1 - i / N), the last step from t_max / N straight to 0 (the final
        return t_max * (1.0 - jnp.arange(n) / n)  # denoising step); n points = N steps before the appended 0
    return _linear(schedule, n, t_max, t_min, sigma_max, to_zero)


def _quadratic(schedule, n, t_max, t_min, sigma_max, to_zero):
    return t_min + (t_max - t_min) * jnp.linspace(1.0, 0.0, n) ** 2


def _logsnr(schedule, n, t_max, t_min, sigma_max, to_zero):
    l0, l1 = schedule.logsnr(jnp.asarray(t_max)), schedule.logsnr(jnp.asarray(t_min))
    ts = schedule.t_from_logsnr(jnp.linspace(l0, l1, n))
    return ts.at[0].set(t_max).at[-1].set(t_min)


def _karras(schedule, n, t_max, t_min, sigma_max, to_zero):
    s_hat = lambda t: jnp.exp(-0.5 * schedule.logsnr(jnp.asarray(t)))
    s_top = s_hat(t_max) if sigma_max is None else jnp.minimum(s_hat(t_max), sigma_max)
    sig = karras_sigmas(n, s_hat(t_min), s_top)
    ts = schedule.t_from_logsnr(-2 * jnp.log(sig))
    ts = ts.at[-1].set(t_min)
    return ts if sigma_max is not None else ts.at[0].set(t_max)


# Each spacing's n decreasing points from t_max to t_min (a final t = 0 is appended after, when ``to_zero``):
# ``(schedule, n, t_max, t_min, sigma_max, to_zero) -> [n]``
SPACINGS = {"uniform": _linear, "quadratic": _quadratic, "trailing": _trailing, "leading": _linear,
            "logsnr": _logsnr, "karras": _karras}


def time_grid(schedule: Schedule, num_steps: int, spacing: str = "uniform", t_max: float = 1.0,
              t_min: float | None = None, sigma_max: float | None = None):
    """The decreasing grid ``[N + 1]`` of times for ``num_steps`` sampler steps.

    Args:
      schedule: any schedule (discrete schedules take integer steps for the DDIM spacings).
      num_steps: N >= 1 (and <= T for a discrete schedule).
      spacing: one of ``SPACINGS``.
      t_max, t_min: the ends (``t_min`` defaults to :func:`default_t_min`).
      sigma_max: for ``karras``, start at min(sigma_hat(t_max), sigma_max) instead (EDM uses 80; a DDPM
        cosine table reaches sigma_hat = 2e4 at t = 1, where rho-spaced steps would be wasted). The first
        step then begins below t_max: x_T ~ prior stands in for x at that level.
    """
    check_steps(schedule, num_steps, spacing)
    t_min = default_t_min(schedule) if t_min is None else float(t_min)
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    discrete = isinstance(schedule, DiscreteSchedule)
    if discrete and spacing in DISCRETE_SPACINGS and t_max == 1.0 \
            and t_min == 0.0:
        steps = discrete_steps(schedule.num_steps, num_steps, spacing)
        return jnp.asarray(np.append(steps / schedule.num_steps, 0.0))  # float64 under jax_enable_x64
    flow_start = alpha_vanishes(schedule) and t_max == 1.0 and (spacing == "logsnr" or spacing == "karras"
                                                                and sigma_max is None)
    # lambda(0) = +inf on a flow path: a logsnr grid ends at 1e-3, then the step to 0 (as for VP schedules)
    flow_end = alpha_vanishes(schedule) and spacing == "logsnr"
    append_zero = t_min == 0.0 and (zero_noise_at_zero(schedule) or flow_start or flow_end)
    n_pts = num_steps if append_zero else num_steps + 1
    if append_zero:
        t_min = 1.0 / schedule.num_steps if discrete else 1e-3
        if num_steps == 1:
            return jnp.asarray([t_max, 0.0])
        if t_max <= t_min:
            raise ValueError(f"t_max = {t_max:g} leaves room for one step on this schedule (its last step starts at "
                             f"t = {t_min:g}{' = 1/T' if discrete else ''}), not num_steps = {num_steps}: pass "
                             f"num_steps=1 or a t_max above {t_min:g}")
    if flow_start:  # lambda(1) = -inf: one step as long as a uniform grid's, then the spacing from there
        if n_pts == 2:
            return jnp.asarray([t_max, t_min] + ([0.0] if append_zero else []))
        t_top = t_max - (t_max - t_min) / num_steps
        rest = time_grid(schedule, n_pts - 2, spacing, t_top, t_min, sigma_max)
        tail = [jnp.zeros(1, rest.dtype)] if append_zero else []
        return jnp.concatenate([jnp.asarray([t_max], rest.dtype), rest] + tail)
    ts = SPACINGS[spacing](schedule, n_pts, t_max, t_min, sigma_max, append_zero)
    if append_zero:
        ts = jnp.append(ts, 0.0)
    return ts


def check_steps(schedule: Schedule, num_steps, spacing: str):
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; allowed: {list(SPACINGS)}")
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    if isinstance(schedule, DiscreteSchedule) and num_steps > schedule.num_steps:
        raise ValueError(f"num_steps={num_steps} exceeds the discrete schedule's T={schedule.num_steps}; "
                         f"allowed: 1..{schedule.num_steps}")


def check_grid(ts, min_steps: int = 1):
    """A sampler's grid must be 1-D with at least ``min_steps`` steps, inside the schedules' time range
    [0, 1] and strictly decreasing. Values are checked where the grid is concrete (before compiling); a
    traced grid (a slice inside a compiled loop, as imputation's segments) is checked by shape only."""
    shape = getattr(ts, "shape", None)
    if shape is None or len(shape) != 1:
        raise ValueError(f"the time grid ts must be a 1-D array [num_steps + 1], got shape {shape}")
    if shape[0] < min_steps + 1:
        raise ValueError(f"the time grid has {shape[0] - 1} steps; this sampler needs at least {min_steps} "
                         f"({min_steps + 1} times)")
    if isinstance(ts, jax.core.Tracer):
        return
    v = np.asarray(ts, np.float64)
    if not np.all(np.isfinite(v)) or v.min() < 0.0 or v.max() > 1.0:
        raise ValueError(f"the time grid must lie in the schedule's range [0, 1]; got values in "
                         f"[{v.min():.6g}, {v.max():.6g}]")
    bad = np.nonzero(np.diff(v) >= 0)[0]
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"the time grid must be strictly decreasing; ts[{i}] = {v[i]:.6g} <= ts[{i + 1}] = "
                         f"{v[i + 1]:.6g}")
