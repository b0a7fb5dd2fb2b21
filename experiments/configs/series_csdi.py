"""Conditional imputation on the statsmodels series (CSDI, Tashiro et al. 2021): series_ddpm.py's 1-D U-Net
and data, but the network sees the observed values and the mask (3 input channels) and trains on random
masks: half forecast-shaped (the last 8 of 32 values missing, the forecasting task), a quarter random points,
a quarter one block (gap filling); the loss is on the missing values only. Forecasts sample once with the
context as input (no RePaint: NFE = the sampler's steps; DPM-Solver++(2M), 20 steps, chosen on the validation
split).

    python -m experiments.train --config experiments/configs/series_csdi.py --workdir runs/series_csdi
    python -m experiments.forecast --workdir runs/series_csdi     # CRPS / MSE vs seasonal-naive and AR
"""

from experiments.configs import series_ddpm


def get_config(variant: str = ""):
    c = series_ddpm.get_config(variant)
    c.task = "imputation"
    c.imputation.mask_probs = (0.25, 0.25, 0.5)  # random points, blocks, forecast-shaped
    c.imputation.horizon = c.forecast.horizon
    c.forecast.resample = 1  # unused: one pass with the context as input
    if variant != "smoke":  # chosen on the validation split (32_8_val; README "Imputation"): DPM-Solver++(2M)
        c.forecast.sampler = "dpmpp_2m"  # at 20 steps 0.920 CRPS / CRPS(AR), DDIM 100 0.931, DDPM 100 1.000
        c.forecast.num_steps = 20
    return c
