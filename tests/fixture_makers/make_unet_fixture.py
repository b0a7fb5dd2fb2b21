"""Write ``tests/fixtures/diffusers_unet_fixture.npz``: two small random diffusers ``UNet2DModel``s (the DDPM
layout of ``google/ddpm-cifar10-32`` and an ADM-like one: scale-shift, multi-head attention everywhere,
learned variance, class embedding, symmetric down-sampling padding), their outputs, and diffusers'
``DDPMScheduler`` / ``DDIMScheduler`` results on the DDPM-layout model in float64. The weights are not stored:
they come from a seed (:func:`random_state_dict`), the shapes from the stored config. Needs the ``[interop]``
extra (torch, diffusers); run once:

    pip install -e ".[interop]" && python tests/fixture_makers/make_unet_fixture.py

Stored (NHWC arrays): ``<name>/config`` (JSON), ``<name>/shapes`` (JSON), ``<name>/x``, ``<name>/j`` (diffusers
step indices), ``<name>/labels``, ``<name>/out`` (float32 outputs); ``ddim/<spacing>_clip<0|1>/traj`` ([N + 1, B,
...]: x_T then each step's sample, eta = 0, 10 steps) and ``/timesteps``; ``ddim_eta/...`` one eta = 1 step's mean
and std; ``ddpm/<case>/{x, j, prev, mean, std}``: per-step moments of ``DDPMScheduler.step``.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

from jaxdiff.interop.diffusers_parity import SEED, random_state_dict

CONFIGS = {
    "ddpm": dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                 norm_num_groups=4, freq_shift=1, flip_sin_to_cos=False, downsample_padding=0, norm_eps=1e-6,
                 attention_head_dim=None),
    "adm": dict(sample_size=8, in_channels=3, out_channels=6, block_out_channels=(8, 16), layers_per_block=1,
                down_block_types=("AttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "AttnUpBlock2D"),
                norm_num_groups=4, attn_norm_num_groups=4, resnet_time_scale_shift="scale_shift",
                attention_head_dim=4, num_class_embeds=5, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0),
}
DDIM_STEPS = 10


def diffusers_unet(config: dict, seed: int = SEED):
    import torch
    from diffusers import UNet2DModel

    model = UNet2DModel(**config).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state_dict(seed, shapes).items()})
    return model, shapes


def run(model, x: np.ndarray, j: np.ndarray, labels=None) -> np.ndarray:
    """The model's output on NHWC ``x`` at step indices ``j`` (in the model's dtype), NHWC."""
    import torch

    p = next(model.parameters())
    with torch.no_grad():
        out = model(torch.from_numpy(x.transpose(0, 3, 1, 2)).to(p.dtype), torch.from_numpy(j),
                    class_labels=None if labels is None else torch.from_numpy(labels)).sample
    return out.numpy().transpose(0, 2, 3, 1)


def float64_time_embedding(model):
    """Make ``model`` embed its timesteps in float64: diffusers' ``get_timestep_embedding`` always computes in
    float32 (the formula is unchanged: frequencies max_period^(-k / (half - shift)), [sin, cos], optional flip)."""
    import torch

    tp = model.time_proj

    def forward(timesteps):
        half = tp.num_channels // 2
        exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - tp.downscale_freq_shift)
        emb = tp.scale * timesteps[:, None].double() * torch.exp(exponent)[None]
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], -1)
        return torch.cat([emb[:, half:], emb[:, :half]], -1) if tp.flip_sin_to_cos else emb

    tp.forward = forward
    return model


def float64_scheduler(cls, **config):
    """A diffusers scheduler (linear betas) whose tables are float64 (diffusers builds them in float32)."""
    import torch

    s = cls(**config)
    c = s.config
    s.betas = torch.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=torch.float64)
    s.alphas = 1.0 - s.betas
    s.alphas_cumprod = torch.cumprod(s.alphas, 0)
    if hasattr(s, "final_alpha_cumprod"):
        s.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if config.get("set_alpha_to_one", True) \
            else s.alphas_cumprod[0]
    return s


def ddim_trajectory(model, x_T, spacing: str, clip: bool):
    import torch
    from diffusers import DDIMScheduler

    s = float64_scheduler(DDIMScheduler, clip_sample=clip, timestep_spacing=spacing, set_alpha_to_one=True)
    s.set_timesteps(DDIM_STEPS)
    x = torch.from_numpy(x_T.transpose(0, 3, 1, 2))
    traj = [x]
    for t in s.timesteps:
        with torch.no_grad():
            eps = model(x, t).sample
        x = s.step(eps, t, x, eta=0.0, use_clipped_model_output=clip).prev_sample  # eps from the clipped x0
        traj.append(x)
    return np.stack([a.numpy().transpose(0, 2, 3, 1) for a in traj]), s.timesteps.numpy()


def ddim_eta_moments(model, x, t: int):
    """Mean and std of one eta = 1 DDIM step (leading spacing, 10 steps) at diffusers step ``t``."""
    import torch
    from diffusers import DDIMScheduler

    s = float64_scheduler(DDIMScheduler, clip_sample=False, set_alpha_to_one=True)
    s.set_timesteps(DDIM_STEPS)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
    with torch.no_grad():
        eps = model(xt, torch.tensor(t)).sample
    zero, one = torch.zeros_like(xt), torch.ones_like(xt)
    mean = s.step(eps, t, xt, eta=1.0, variance_noise=zero).prev_sample
    std = s.step(eps, t, xt, eta=1.0, variance_noise=one).prev_sample - mean
    return mean.numpy().transpose(0, 2, 3, 1), std.numpy()[:, 0, 0, 0]


def ddpm_moments(model, x, js, num_inference_steps=None, **config):
    """Per-step mean and std of ``DDPMScheduler.step`` at steps ``js`` (its noise patched to 0, then to 1)."""
    import diffusers.schedulers.scheduling_ddpm as sd
    import torch
    from diffusers import DDPMScheduler

    s = float64_scheduler(DDPMScheduler, **config)
    if num_inference_steps:
        s.set_timesteps(num_inference_steps)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
    orig = sd.randn_tensor
    means, stds, prevs = [], [], []
    try:
        for j in js:
            with torch.no_grad():
                eps = model(xt, torch.tensor(int(j))).sample
            out = []
            for fill in (0.0, 1.0):
                sd.randn_tensor = lambda shape, fill=fill, **kw: torch.full(shape, fill, dtype=torch.float64)
                out.append(s.step(eps, int(j), xt).prev_sample)
            means.append(out[0].numpy().transpose(0, 2, 3, 1))
            stds.append((out[1] - out[0]).numpy()[:, 0, 0, 0])
            prevs.append(int(s.previous_timestep(int(j))))
    finally:
        sd.randn_tensor = orig
    return np.stack(means), np.stack(stds), np.array(prevs)


def main(path: str):
    import torch

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    arrays = {}
    for name, config in CONFIGS.items():
        model, shapes = diffusers_unet(config)
        x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
        j = np.array([3, 871])
        labels = np.array([1, 4]) if config.get("num_class_embeds") else None
        arrays.update({f"{name}/config": json.dumps(config), f"{name}/shapes": json.dumps(shapes),
                       f"{name}/x": x, f"{name}/j": j, f"{name}/out": run(model, x, j, labels)})
        if labels is not None:
            arrays[f"{name}/labels"] = labels
    model, _ = diffusers_unet(CONFIGS["ddpm"])
    model = float64_time_embedding(model.double())  # the whole network in float64
    x_T = rng.standard_normal((2, 8, 8, 3))
    for spacing in ("leading", "trailing"):
        for clip in (False, True):
            traj, ts = ddim_trajectory(model, x_T, spacing, clip)
            arrays[f"ddim/{spacing}_clip{int(clip)}/traj"] = traj
            arrays[f"ddim/{spacing}_clip{int(clip)}/timesteps"] = ts
    x = rng.standard_normal((2, 8, 8, 3))
    arrays["ddim_eta/x"] = x
    arrays["ddim_eta/mean"], arrays["ddim_eta/std"] = ddim_eta_moments(model, x, 500)
    cases = {"full_small_clip": (None, dict(variance_type="fixed_small", clip_sample=True)),
             "full_large": (None, dict(variance_type="fixed_large", clip_sample=False)),
             "n50_small": (50, dict(variance_type="fixed_small", clip_sample=False))}
    for case, (n, config) in cases.items():
        js = np.array([999, 500, 40, 1, 0]) if n is None else np.array([980, 500, 20, 0])
        x = rng.standard_normal((2, 8, 8, 3)) * 0.5
        mean, std, prev = ddpm_moments(model, x, js, n, **config)
        arrays.update({f"ddpm/{case}/x": x, f"ddpm/{case}/j": js, f"ddpm/{case}/prev": prev,
                       f"ddpm/{case}/mean": mean, f"ddpm/{case}/std": std})
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: {len(arrays)} arrays")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/diffusers_unet_fixture.npz")
