"""Test-split reconstruction metrics of a trained autoencoder (the LDM's first stage)."""

from __future__ import annotations

import os

import numpy as np

from jaxdiff.data import to_float
from jaxdiff.latent import psnr, ssim
from jaxdiff.training.build import build_pipeline
from jaxdiff.training.tasks.autoencoder import autoencoder_config, reconstruct_fn, restore_autoencoder


def evaluate_autoencoder(workdir: str, batch_size: int = 256) -> dict:
    """Test-split reconstruction metrics of a trained autoencoder (EMA params, posterior mean): PSNR and
    SSIM (images in [-1, 1]), L1, the latent shape and the scale factor."""
    model, params, scale, step, config = restore_autoencoder(os.path.abspath(workdir))
    test = build_pipeline(config, "test", 1)
    x = to_float(test.all_images(), config.data.num_levels)
    rec = reconstruct_fn(model)
    r = np.concatenate([np.clip(np.asarray(rec(params, x[i:i + batch_size])), -1, 1)
                        for i in range(0, len(x), batch_size)])
    p, s = psnr(x, r), ssim(x, r)
    acfg = autoencoder_config(config)
    f = acfg.downsampling_factor
    return {"test_psnr_db": float(p.mean()), "test_psnr_se": float(p.std(ddof=1) / np.sqrt(len(p))),
            "test_ssim": float(s.mean()), "test_l1": float(np.abs(x - r).mean()), "num_test": int(len(x)),
            "downsampling_factor": f, "latent_shape": [x.shape[1] // f, x.shape[2] // f, acfg.latent_channels],
            "scale_factor": scale, "step": step}
