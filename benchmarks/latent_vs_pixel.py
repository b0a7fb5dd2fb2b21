"""Latent vs pixel diffusion on the digits at 32x32: train-step time and sampling time of the same U-Net in
pixel space (32x32x1) and on the f = 4 autoencoder's latents (8x8x2, sampling includes decoding), measured
in one process; then (``--eval``) the Fréchet distance of both trained models and the autoencoder's PSNR.

    python benchmarks/latent_vs_pixel.py                      # timings only (random weights suffice)
    python benchmarks/latent_vs_pixel.py --eval               # + FD / PSNR of runs/digits32{,_ldm,_ae}

The configs are experiments/configs/digits32_ddpm.py, digits32_ldm.py and digits32_autoencoder.py.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
from stamp import median_time  # noqa: E402  (benchmarks/ is the script's directory)

from experiments.configs import digits32_autoencoder, digits32_ddpm, digits32_ldm
from jaxdiff import samplers
from jaxdiff.latent import decode_after
from jaxdiff.models.autoencoder import AutoencoderKL
from jaxdiff.models.model_fn import model_fn_for
from jaxdiff.training.build import build_model, build_optimizer, build_schedule
from jaxdiff.training.restore import state_template
from jaxdiff.training.step import batch_loss, make_train_step
from jaxdiff.training.tasks import DIFFUSION
from jaxdiff.training.tasks import autoencoder as ae
from jaxdiff.training.tasks.diffusion import make_denoising_loss


def timings(batch: int, num_samples: int, steps: int, reps: int) -> dict:
    out = {}
    ae_cfg = digits32_autoencoder.get_config()
    vae = ae.build_autoencoder(ae_cfg)
    vae_params = ae.init_params(ae_cfg, vae)
    for name, config in (("pixel", digits32_ddpm.get_config()), ("latent", digits32_ldm.get_config())):
        model, ucfg = build_model(config)
        schedule = build_schedule(config)
        state = state_template(config, DIFFUSION, model)
        tx = build_optimizer(config, state.params)
        shape = (ucfg.image_size,) * 2 + (ucfg.in_channels,)
        step = jax.jit(make_train_step(batch_loss(make_denoising_loss(config, model)), tx))
        b = {"x": jax.random.normal(jax.random.PRNGKey(1), (batch,) + shape), "index": jnp.arange(batch)}
        train_s = median_time(lambda: step(state, b)[1]["loss"], reps)

        def sample(params, key, model=model, schedule=schedule, shape=shape):
            x_T = samplers.prior_sample(schedule, key, (num_samples,) + shape)
            return samplers.sample_dpmpp_2m(model_fn_for(model, params), schedule, x_T, key, num_steps=steps)

        if name == "latent":
            dec = lambda z: vae.apply({"params": vae_params}, z, method=AutoencoderKL.decode)
            sample = decode_after(sample, dec, 1.0)
        fn = jax.jit(sample)
        sample_s = median_time(lambda: fn(state.ema_params, jax.random.PRNGKey(2)), reps)
        out[name] = {"params": int(sum(p.size for p in jax.tree_util.tree_leaves(state.params))),
                     "data_shape": list(shape), "train_step_s": train_s, "sample_s_per_image": sample_s / num_samples}
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--num_samples", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="DPM-Solver++(2M) steps")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--eval", action="store_true", help="FD of runs/digits32 and runs/digits32_ldm, PSNR of "
                   "runs/digits32_ae")
    a = p.parse_args()
    print(f"device: {jax.devices()[0].device_kind}, {jax.device_count()} device(s)")
    t = timings(a.batch, a.num_samples, a.steps, a.reps)
    px, lt = t["pixel"], t["latent"]
    print("| model | data | params | train step (s, batch %d) | sampling (s / image, %d steps%s) |"
          % (a.batch, a.steps, ", incl. decoding"))
    print("|---|---|---|---|---|")
    for name, r in t.items():
        print(f"| {name} | {'x'.join(map(str, r['data_shape']))} | {r['params']:,} | {r['train_step_s']:.4f} | "
              f"{r['sample_s_per_image']:.5f} |")
    print(f"\nlatent is {px['train_step_s'] / lt['train_step_s']:.1f}x cheaper per train step and "
          f"{px['sample_s_per_image'] / lt['sample_s_per_image']:.1f}x per sample")
    result = {"timings": t}
    if a.eval:
        from jaxdiff.apps.evaluate import evaluate

        for name, wd in (("pixel", "runs/digits32"), ("latent", "runs/digits32_ldm")):
            m = evaluate(wd, sampler="dpmpp_2m", num_steps=a.steps, vlb=False, ode=False)
            result[name] = {k: m[k] for k in ("fd", "fd_ci", "fd_floor_train_vs_test", "sample_frac_confident_0.9",
                                              "step")}
            print(name, json.dumps(result[name]))
        result["autoencoder"] = ae.evaluate_autoencoder("runs/digits32_ae")
        print("autoencoder", json.dumps(result["autoencoder"]))
        r = result["latent"]["fd"] / result["pixel"]["fd"]
        print(f"FD latent / pixel: {r:.2f} (goal <= 1.5)")
        with open("benchmarks/results/latent_vs_pixel.json", "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
