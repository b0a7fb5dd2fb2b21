"""Probabilistic forecasting with a trained series model (experiments/configs/series_ddpm.py), by
imputation: the last ``horizon`` values of every rolling-origin test window are sampled given the first
``window - horizon`` (RePaint over any sampler), ``num_samples`` draws each, de-normalised to the series'
units. Scored by CRPS (ensemble, fair form) and the MSE of the ensemble mean, per series, beside the
seasonal-naive (naive where no period) forecast and an AR model (lags by AIC, fit on the training part by
statsmodels, Gaussian predictive).

    python -m experiments.forecast --workdir runs/series [--resample 5 --sampler ddpm --num_steps 100]

Writes ``eval/forecast_<sampler>_<steps>_r<resample>.json`` and ``.md`` in the workdir (never overwriting).
"""

import json

from absl import flags

from experiments import common
from jaxdiff.apps.forecast import forecast

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir of a series model.")
flags.DEFINE_string("sampler", None, "Sampler (default: config.forecast.sampler).")
flags.DEFINE_integer("num_steps", None, "Sampler steps (default: config.forecast.num_steps).")
flags.DEFINE_integer("resample", None, "RePaint passes per segment (default: config.forecast.resample).")
flags.DEFINE_integer("num_samples", None, "Forecast draws per origin (default: config.forecast.num_samples).")
flags.DEFINE_integer("batch_size", 2000, "Windows per compiled call.")
flags.DEFINE_float("clip_x0", None, "Clip the implied x0 (normalised units) at every step (default: "
                   "config.forecast.clip_x0).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    res = forecast(FLAGS.workdir, FLAGS.sampler, FLAGS.num_steps, FLAGS.resample, FLAGS.num_samples,
                   FLAGS.batch_size, FLAGS.clip_x0)
    print(res["table"])
    print(json.dumps({k: v for k, v in res.items() if k not in ("table", "series")}, indent=2))


if __name__ == "__main__":
    common.run(main)
