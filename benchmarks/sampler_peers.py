"""Few-NFE accuracy of jaxdiff's samplers against the PyTorch peers, on the same problems in one process.

    pip install -e ".[bench]" && pip install --no-deps k-diffusion torchsde torchdiffeq trampoline
    python benchmarks/samplers.py --only peers > benchmarks/results/samplers_peers.md

Problems: random Gaussian mixtures (``jaxdiff.testing.random_mixture``; d = 2 and d = 64, components,
spread and seeds in each table's heading) under the DDPM linear and cosine schedules (T = 1000) and the
VP SDE (beta 0.1..20), with the exact eps model, in float64. Every solver starts from the same x_T at t = 1.
Reference: the exact probability-flow ODE (diffrax Dopri8, rtol = atol = 1e-12) from t = 1 to the last
noise level (t = 1 / T: diffusers' timestep 0; the VP SDE at t = 1e-3, its table sampled at t = (k + 1) / T),
then the final denoising step x0_hat. In y = x / alpha and rho = sigma / alpha that solution depends only
on rho at the two ends, so the peers' own views of the schedule (tables, interpolated sigmas) solve the same
problem. Cells: RMSE of the endpoint to the reference at each NFE (the number of model calls, counted).

Peers: diffusers' schedulers at their defaults (and DDIM / PNDM with "trailing" spacing, and DPM-Solver++
with Karras sigmas, the settings users pick for few steps), fed the same beta table; k-diffusion's samplers
(``k_diffusion/sampling.py`` only: its package imports torchvision) on its Karras grid (rho = 7) and on the
log-uniform grid, with sigma_max = rho(1), sigma_min = rho(last level) and a final zero.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import samplers
from jaxdiff import schedules as S
from jaxdiff.samplers.common import rho
from jaxdiff.testing import random_mixture

NFES = (4, 5, 6, 8, 10, 15, 20)
T = 1000
N_SAMPLES = 256
PROBLEMS = [  # (dim, components, mean_scale, schedule)
    (2, 8, 1.0, "linear"), (2, 8, 1.0, "cosine"), (2, 8, 1.0, "vp"),
    (64, 10, 1.0, "linear"), (64, 10, 1.0, "cosine"), (64, 10, 1.0, "vp"),
]
MIXTURE_SEED, NOISE_SEED = 0, 1

# jaxdiff: label -> (sampler, options). Each at its default spacing and at the others listed.
JAXDIFF = {
    "ddim": ("ddim", {}), "euler": ("euler", {}), "heun": ("heun", {}), "dpmpp_2s": ("dpmpp_2s", {}),
    "dpmpp_2m": ("dpmpp_2m", {}), "dpmpp_3m": ("dpmpp_3m", {}),
    "unipc-2 bh2": ("unipc", {}), "unipc-2 bh1": ("unipc", {"variant": "bh1"}), "unipc-3 bh2": ("unipc", {"order": 3}),
    "ipndm-4": ("ipndm", {}), "ipndm-3": ("ipndm", {"order": 3}), "deis-3": ("deis", {}), "lms-4": ("lms", {}),
}
SPACINGS = ("logsnr", "uniform", "trailing")  # and each sampler's default (one of these: its row is reused)


def load_k_sampling():
    """``k_diffusion.sampling`` alone: the package's ``__init__`` imports torchvision, which PyPI's build does not
    import beside torch 2.13.0 here; sampling.py needs only ``utils.append_dims`` from it."""
    spec = importlib.util.find_spec("k_diffusion")
    root = spec.submodule_search_locations[0]
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [root]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules["k_diffusion"], sys.modules["k_diffusion.utils"] = pkg, utils
    s = importlib.util.spec_from_file_location("k_diffusion.sampling", os.path.join(root, "sampling.py"))
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
    return mod


class Problem:
    def __init__(self, dim, components, mean_scale, sched_name):
        self.short = f"d={dim}, {sched_name}"
        self.label = (f"d={dim}, {components} components (means ~ N(0, {mean_scale}^2), stds ~ U(0.2, 0.5), "
                      f"seed {MIXTURE_SEED}), {sched_name} schedule, x_T seed {NOISE_SEED}, {N_SAMPLES} samples")
        self.gmm = random_mixture(jax.random.key(MIXTURE_SEED), components, dim, mean_scale=mean_scale,
                                  dtype=jnp.float64)
        self.sched = S.get_schedule(sched_name)
        self.x_T = jax.random.normal(jax.random.key(NOISE_SEED), (N_SAMPLES, dim), jnp.float64)
        self.t_last = 1.0 / T if isinstance(self.sched, S.DiscreteSchedule) else 1e-3
        self.eps = jax.jit(self.gmm.model_fn(self.sched, "eps"))
        self.x0 = jax.jit(self.gmm.model_fn(self.sched, "x0"))
        # The table the peers see: alpha_bar at t_k = (k + 1) / T (exact for the discrete schedules).
        tk = jnp.arange(1, T + 1, dtype=jnp.float64) / T
        self.alphas_cumprod = np.asarray(self.sched.alpha(tk) ** 2)
        self.betas = 1 - self.alphas_cumprod / np.concatenate([[1.0], self.alphas_cumprod[:-1]])
        self.sigmas_table = np.sqrt((1 - self.alphas_cumprod) / self.alphas_cumprod)
        x = samplers.sample_ode(self.gmm.model_fn(self.sched), self.sched, self.x_T, None, rtol=1e-12, atol=1e-12,
                                solver="dopri8", t_min=self.t_last, max_steps=200_000)
        self.ref = np.asarray(self.x0(x, jnp.full((N_SAMPLES,), self.t_last)))

    def t_of_rho(self, r):
        return self.sched.t_from_logsnr(-2 * jnp.log(jnp.asarray(r, jnp.float64)))

    def rmse(self, x):
        return float(np.sqrt(np.mean((np.asarray(x, np.float64) - self.ref) ** 2)))


@functools.lru_cache(maxsize=None)
def _runner(name, opts: tuple, n: int):
    """One compiled run per setting and step count, shared by the problems of one dimension and schedule
    family (the mixture, the schedule and x_T are arguments)."""
    kw = dict(opts)
    return jax.jit(lambda gmm, sched, x_T: samplers.sample(name, gmm.model_fn(sched), sched, x_T, None,
                                                           num_steps=n, **kw))


def jaxdiff_row(p: Problem, name, opts, spacing):
    """RMSE at each NFE (None where no step count gives exactly that NFE or the solver needs more steps)."""
    out = []
    for target in NFES:
        kw = dict(opts, t_min=0.0, spacing=spacing)
        cands = [n for n in range(1, target + 1) if samplers.nfe(name, p.sched, num_steps=n, **kw) == target]
        if not cands:
            out.append(None)
            continue
        try:
            x = _runner(name, tuple(sorted(kw.items())), cands[0])(p.gmm, p.sched, p.x_T)
        except ValueError:  # fewer steps than the order needs
            out.append(None)
            continue
        out.append(p.rmse(x))
    return out


def torch_eps_model(p: Problem, counter):
    import torch

    def model(x, k):
        counter[0] += 1
        k = float(k)
        sig = np.interp(k, np.arange(T), p.sigmas_table)  # the noise level the scheduler believes
        t = jnp.full((x.shape[0],), p.t_of_rho(sig))
        return torch.from_numpy(np.asarray(p.eps(jnp.asarray(x.numpy(), jnp.float64), t)))

    return model


def diffusers_peers():
    import diffusers as d

    def make(cls, **kw):
        return lambda betas: getattr(d, cls)(num_train_timesteps=T, trained_betas=betas, **kw)

    return {
        "DDIMScheduler": make("DDIMScheduler"),
        "DDIMScheduler trailing": make("DDIMScheduler", timestep_spacing="trailing"),
        "PNDMScheduler (PLMS)": make("PNDMScheduler", skip_prk_steps=True),
        "PNDMScheduler (PLMS) trailing": make("PNDMScheduler", skip_prk_steps=True, timestep_spacing="trailing"),
        "DPMSolverMultistepScheduler": make("DPMSolverMultistepScheduler"),
        "DPMSolverMultistepScheduler order 3": make("DPMSolverMultistepScheduler", solver_order=3),
        "DPMSolverMultistepScheduler karras": make("DPMSolverMultistepScheduler", use_karras_sigmas=True),
        "DPMSolverSinglestepScheduler": make("DPMSolverSinglestepScheduler"),
        "DPMSolverSinglestepScheduler order 3": make("DPMSolverSinglestepScheduler", solver_order=3),
        "UniPCMultistepScheduler": make("UniPCMultistepScheduler"),
        "UniPCMultistepScheduler order 3": make("UniPCMultistepScheduler", solver_order=3),
        "UniPCMultistepScheduler bh1": make("UniPCMultistepScheduler", solver_type="bh1"),
        "DEISMultistepScheduler": make("DEISMultistepScheduler"),
        "DEISMultistepScheduler order 3": make("DEISMultistepScheduler", solver_order=3),
        "LMSDiscreteScheduler": make("LMSDiscreteScheduler"),
        "EulerDiscreteScheduler": make("EulerDiscreteScheduler"),
        "HeunDiscreteScheduler": make("HeunDiscreteScheduler"),
    }


def diffusers_row(p: Problem, make):
    import torch

    out = []
    for target in NFES:
        got = None
        for n in sorted({target, (target + 1) // 2, target // 2, target - 1}):
            if n < 1:
                continue
            counter = [0]
            model = torch_eps_model(p, counter)
            sch = make(p.betas.tolist())
            try:
                sch.set_timesteps(n)
            except ValueError:
                continue
            x = torch.from_numpy(np.asarray(p.x_T)) * float(sch.init_noise_sigma)
            try:
                for k in sch.timesteps:
                    x = sch.step(model(sch.scale_model_input(x, k), k), k, x).prev_sample
            except (IndexError, RuntimeError) as e:  # e.g. Karras sigmas that collapse to repeated timesteps
                print(f"diffusers {type(sch).__name__} at {n} steps failed: {e!r}", file=sys.stderr)
                continue
            if counter[0] == target:
                got = p.rmse(x.double().numpy())
                break
        out.append(got)
    return out


def k_diffusion_peers():
    K = load_k_sampling()
    grids = {"karras": lambda n, lo, hi: K.get_sigmas_karras(n, lo, hi, rho=7.0),
             "log-uniform": lambda n, lo, hi: K.get_sigmas_exponential(n, lo, hi)}
    samplers_ = {  # name -> (function, kwargs, NFE(n steps, the last to zero))
        "sample_euler": (K.sample_euler, {}, lambda n: n),
        "sample_heun": (K.sample_heun, {}, lambda n: 2 * n - 1),
        "sample_dpm_2": (K.sample_dpm_2, {}, lambda n: 2 * n - 1),
        "sample_lms": (K.sample_lms, {}, lambda n: n),
        "sample_dpmpp_2s_ancestral eta=0": (K.sample_dpmpp_2s_ancestral, {"eta": 0.0}, lambda n: 2 * n - 1),
        "sample_dpmpp_2m": (K.sample_dpmpp_2m, {}, lambda n: n),
        "sample_dpmpp_3m_sde eta=0": (K.sample_dpmpp_3m_sde, {"eta": 0.0}, lambda n: n),
    }
    return {f"{name} {g}": (fn, kw, nfe, grids[g]) for name, (fn, kw, nfe) in samplers_.items() for g in grids}


def k_diffusion_row(p: Problem, fn, kw, nfe, grid):
    import torch

    a1 = float(p.sched.alpha(1.0))
    hi, lo = float(p.sigmas_table[-1]), float(rho(p.sched, p.t_last))

    def denoiser(x, sigma):
        t = jnp.full((x.shape[0],), p.t_of_rho(float(sigma[0])))
        xv = jnp.asarray(x.numpy(), jnp.float64) * p.sched.alpha(t)[:, None]
        return torch.from_numpy(np.asarray(p.x0(xv, t)))

    out = []
    for target in NFES:
        ns = [n for n in range(1, target + 1) if nfe(n) == target]
        if not ns:
            out.append(None)
            continue
        torch.set_default_dtype(torch.float64)  # k-diffusion makes its grids and noise in the default dtype
        try:
            sig = grid(ns[0], lo, hi).double()
            x = torch.from_numpy(np.asarray(p.x_T) / a1)
            out.append(p.rmse(fn(denoiser, x, sig, disable=True, **kw).numpy()))
        finally:
            torch.set_default_dtype(torch.float32)
    return out


def fmt(v):
    return "-" if v is None else f"{v:.2e}"


def run_problem(spec, peers_d, peers_k):
    p = Problem(*spec)
    rows = {}
    for label, (name, opts) in JAXDIFF.items():
        for sp in SPACINGS:
            if name in ("euler", "heun"):  # EDM's samplers on their own (karras) grid only
                sp = "karras"
                if f"jaxdiff {label}, {sp} grid" in rows:
                    continue
            row = jaxdiff_row(p, name, opts, sp)
            rows[f"jaxdiff {label}, {sp} grid"] = row
            if sp == samplers.default_spacing(name):
                rows[f"jaxdiff {label}, default grid"] = row
    for label, make in peers_d.items():
        rows[f"diffusers {label}"] = diffusers_row(p, make)
    for label, args in peers_k.items():
        rows[f"k-diffusion {label}"] = k_diffusion_row(p, *args)
    return p, rows


def best(rows, prefix, i):
    vals = [(r[i], k) for k, r in rows.items() if k.startswith(prefix) and r[i] is not None and np.isfinite(r[i])]
    return min(vals) if vals else (None, None)


def main():
    jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    from importlib.metadata import version

    peers_d, peers_k = diffusers_peers(), k_diffusion_peers()
    print(f"\nPeers: torch {version('torch')}, diffusers {version('diffusers')}, k-diffusion {version('k-diffusion')} "
          f"(k_diffusion/sampling.py), scipy {version('scipy')}; float64 throughout (diffusers' internal tables are "
          "its own dtype)")
    summary = []
    for spec in PROBLEMS:
        p, rows = run_problem(spec, peers_d, peers_k)
        print(f"\n### {p.label}\n")
        print("| sampler | " + " | ".join(f"NFE {k}" for k in NFES) + " |")
        print("|---|" + "---|" * len(NFES))
        for label, errs in rows.items():
            print(f"| {label} | " + " | ".join(fmt(e) for e in errs) + " |")
        summary.append((p.short, rows))
        sys.stdout.flush()
        _runner.cache_clear()  # thousands of live executables exhaust XLA:CPU's code memory; the disk cache
        jax.clear_caches()     # serves the next problem's recompiles
    print("\n### Best of each side (jaxdiff's registry defaults: `, default grid` rows of default options)\n")
    print("| problem | NFE | best jaxdiff at defaults | best jaxdiff setting | best PyTorch peer | defaults / peer | "
          "best setting / peer |")
    print("|---|---|---|---|---|---|---|")
    for short, rows in summary:
        for target in (5, 10, 20):
            i = NFES.index(target)
            dflt = {k: r for k, r in rows.items() if k.endswith("default grid")
                    and k.split(", ")[0].replace("jaxdiff ", "") in DEFAULT_LABELS}
            bd, bdk = best(dflt, "jaxdiff", i)
            bj, bjk = best(rows, "jaxdiff", i)
            bp, bpk = best(rows, "diffusers", i)
            bk, bkk = best(rows, "k-diffusion", i)
            if bk is not None and (bp is None or bk < bp):
                bp, bpk = bk, bkk
            print(f"| {short} | {target} | {fmt(bd)} ({bdk}) | {fmt(bj)} ({bjk}) | {fmt(bp)} ({bpk}) | "
                  f"{bd / bp:.2f} | {bj / bp:.2f} |")


# Rows that are a registry sampler at its default options (the goal's "defaults").
DEFAULT_LABELS = {"ddim", "euler", "heun", "dpmpp_2s", "dpmpp_2m", "dpmpp_3m", "unipc-2 bh2", "ipndm-4", "deis-3",
                  "lms-4"}


if __name__ == "__main__":
    main()
