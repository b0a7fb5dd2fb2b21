"""Probabilistic forecasting with a trained series model by imputation (the logic behind
``experiments/forecast.py``): the last ``horizon`` values of every rolling-origin test window are sampled
given the first ``window - horizon`` (RePaint over any sampler), ``num_samples`` draws each, de-normalised to
the series' units, scored by CRPS (ensemble, fair form) and the MSE of the ensemble mean, per series, beside
the seasonal-naive forecast and an AR model (lags by AIC, fit on the training part, Gaussian predictive).
"""

from __future__ import annotations

import os
import time

import numpy as np

from jaxdiff.data import load_source
from jaxdiff.data.series import (
    SERIES,
    ar_forecast,
    crps_gaussian,
    crps_samples,
    fit_ar,
    load_series,
    seasonal_naive,
)
from jaxdiff.models.imputation import takes_observations
from jaxdiff.outputs import save_json, save_new
from jaxdiff.training.generate import generate_imputed
from jaxdiff.training.restore import restore_trained


def load_windows(config, split="test", keys=("series", "label", "loc", "scale", "start")):
    """The chosen features of every window of a split of the model's series data, stacked."""
    src = load_source(config.data.name, split, config.data.data_dir or None, config=config.data.config)
    ex = [src[i] for i in range(len(src))]
    return {k: np.stack([e[k] for e in ex]) for k in keys}


def training_ends(config) -> dict[int, int]:
    """Per series id, the index where the model's training data end (the last training window's end):
    the AR baseline is fit on the values before it, so a validation config (``*_val``) fits on its own
    shorter training part."""
    tr = load_windows(config, "train", ("label", "start"))
    return {int(k): int(tr["start"][tr["label"] == k].max()) + config.model.image_size
            for k in np.unique(tr["label"])}


def forecast(workdir, sampler=None, num_steps=None, resample=None, num_samples=None, batch_size=2000,
             clip_x0=None) -> dict:
    config, model, schedule, params, step = restore_trained(workdir)
    f = config.forecast
    sampler, num_steps = sampler or f.sampler, num_steps or f.num_steps
    resample, S = resample or f.resample, num_samples or f.num_samples
    clip_x0 = f.clip_x0 if clip_x0 is None else clip_x0
    H, W = f.horizon, config.model.image_size
    C = W - H
    win = load_windows(config)
    N = len(win["label"])
    known = np.zeros((W, 1), np.float32)
    known[:C] = 1.0
    x_known = np.repeat(win["series"] * known, S, axis=0)  # [N*S, W, 1]
    labels = np.repeat(win["label"].astype(np.int32), S) if config.data.use_labels else None
    ends = training_ends(config)

    t0 = time.time()
    x = generate_imputed(config, model, schedule, params, x_known, known, sampler=sampler, num_steps=num_steps,
                         resample=resample, jump_length=f.jump_length, batch_size=batch_size, seed=0,
                         labels=labels, clip_x0=clip_x0)
    z = x[:, C:, 0].reshape(N, S, H)
    seconds = time.time() - t0
    samples = z * win["scale"][:, None, None] + win["loc"][:, None, None]
    truth = win["series"][:, C:, 0] * win["scale"][:, None] + win["loc"][:, None]

    rows = []
    for sid, info in enumerate(SERIES):
        idx = np.where(win["label"] == sid)[0]
        if not len(idx):
            continue
        values = load_series(info.name)
        const, coefs, sigma2 = fit_ar(values[: ends[sid]], max_lag=min(C, 12))
        r = {"series": info.name, "period": info.period, "origins": int(len(idx)), "ar_order": int(len(coefs))}
        acc = {k: [] for k in ("crps_diff", "mse_diff", "crps_naive", "mse_naive", "crps_ar", "mse_ar")}
        for j in idx:
            origin = int(win["start"][j]) + C
            hist, y = values[:origin], truth[j]
            np.testing.assert_allclose(y, values[origin:origin + H], rtol=1e-4, atol=1e-3 * np.abs(y).max())
            acc["crps_diff"].append(crps_samples(samples[j], y))
            acc["mse_diff"].append((samples[j].mean(0) - y) ** 2)
            naive = seasonal_naive(hist, H, info.period)
            acc["crps_naive"].append(np.abs(naive - y))  # CRPS of a point forecast = absolute error
            acc["mse_naive"].append((naive - y) ** 2)
            mean, std = ar_forecast(hist, H, const, coefs, sigma2)
            acc["crps_ar"].append(crps_gaussian(mean, std, y))
            acc["mse_ar"].append((mean - y) ** 2)
        r.update({k: float(np.mean(v)) for k, v in acc.items()})
        rows.append(r)
    rel_ar = [r["crps_diff"] / r["crps_ar"] for r in rows]
    conditional = takes_observations(model)
    if conditional:
        resample = 1  # one pass of the sampler with the observed values as input
    res = {"step": step, "data": os.path.basename(str(config.data.config)), "labels": bool(config.data.use_labels),
           "conditional": conditional,
           "sampler": sampler, "num_steps": num_steps, "resample": resample,
           "clip_x0": clip_x0,
           "jump_length": min(f.jump_length, num_steps), "num_samples": S, "horizon": H, "context": C,
           "seconds": seconds, "series": rows,
           "beats_naive_crps": all(r["crps_diff"] < r["crps_naive"] for r in rows),
           "beats_ar_crps": int(sum(r["crps_diff"] <= r["crps_ar"] for r in rows)),
           # geometric mean over series of CRPS(diffusion) / CRPS(AR): the one number settings are chosen by
           "crps_ratio_ar": float(np.exp(np.mean(np.log(rel_ar))))}
    res["table"] = table(res)
    path = save_json(res, os.path.join(workdir, "eval", f"forecast_{sampler}_{num_steps}_r{resample}.json"))
    save_new(path[:-5] + ".md", lambda fh: fh.write((res["table"] + "\n").encode()))
    res["path"] = path
    return res


def table(res) -> str:
    imputation = "conditional model (CSDI)" if res.get("conditional") else \
        f"RePaint r={res['resample']} j={res['jump_length']}"
    lines = [f"Forecast {res['horizon']} steps from {res['context']}, {res['num_samples']} samples, "
             f"{res['sampler']} {res['num_steps']} steps, {imputation} (model step {res['step']}, data {res['data']}, "
             f"{'class-conditional' if res['labels'] else 'one model for all series'}; "
             f"CRPS / CRPS(AR) geometric mean {res['crps_ratio_ar']:.3f})",
             "| series | period | origins | CRPS diffusion | CRPS seasonal-naive | CRPS AR(p) | MSE diffusion "
             "| MSE seasonal-naive | MSE AR(p) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["series"]:
        best = min(r["crps_diff"], r["crps_naive"], r["crps_ar"])
        f = lambda v: f"**{v:.4g}**" if v == best else f"{v:.4g}"
        lines.append(f"| {r['series']} | {r['period'] or '-'} | {r['origins']} | {f(r['crps_diff'])} | "
                     f"{f(r['crps_naive'])} | {f(r['crps_ar'])} (p={r['ar_order']}) | {r['mse_diff']:.4g} | "
                     f"{r['mse_naive']:.4g} | {r['mse_ar']:.4g} |")
    return "\n".join(lines)
