"""Time series: windows and their time split, the baselines against statsmodels, CRPS against closed forms
and brute force, the offline builder, and forecasting end to end."""

import numpy as np
import pytest
from scipy import integrate, stats

from jaxdiff.data import series as TS


def test_windows_split_by_time_and_normalise_by_context():
    v = np.sin(np.arange(200) / 3.0) * 5 + np.arange(200) * 0.1 + 20
    tr, te = TS.make_windows(v, 32, 8, test_frac=0.2)
    split = TS.split_index(200, 0.2)
    assert (tr["start"] + 32 <= split).all() and len(tr["start"]) == split - 32 + 1
    origins = te["start"] + 24
    assert origins[0] == split and (np.diff(origins) == 8).all() and origins[-1] + 8 <= 200
    for d in (tr, te):
        for j in (0, len(d["start"]) - 1):
            s = d["start"][j]
            np.testing.assert_allclose(d["z"][j] * d["scale"][j] + d["loc"][j], v[s:s + 32], rtol=1e-5)
            ctx = v[s:s + 24]
            np.testing.assert_allclose([d["loc"][j], d["scale"][j]], [ctx.mean(), ctx.std()], rtol=1e-5)


def test_bad_windows():
    with pytest.raises(ValueError, match="too short"):
        TS.make_windows(np.arange(30.0), 32, 8)
    with pytest.raises(ValueError, match="horizon"):
        TS.make_windows(np.arange(300.0), 32, 32)
    with pytest.raises(ValueError, match="unknown series"):
        TS.load_series("wind")


def test_seasonal_naive():
    h = np.arange(30.0)
    np.testing.assert_array_equal(TS.seasonal_naive(h, 5, 12), [18, 19, 20, 21, 22])
    np.testing.assert_array_equal(TS.seasonal_naive(h, 14, 12)[12:], [18, 19])  # wraps to the last season
    np.testing.assert_array_equal(TS.seasonal_naive(h, 3, None), [29, 29, 29])


def test_ar_forecast_matches_statsmodels():
    from statsmodels.tsa.ar_model import AutoReg

    y = TS.load_series("sunspots")
    train = y[:247]
    const, coefs, sigma2 = TS.fit_ar(train, max_lag=12)
    lags = list(np.nonzero(coefs)[0] + 1)
    res = AutoReg(train, lags=lags, trend="c").fit()
    pred = res.get_prediction(start=247, end=247 + 7, dynamic=True)
    mean, std = TS.ar_forecast(train, 8, const, coefs, sigma2)
    np.testing.assert_allclose(mean, pred.predicted_mean, rtol=1e-8)
    np.testing.assert_allclose(std, np.sqrt(pred.var_pred_mean), rtol=1e-6)


def test_crps():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(50, 3))
    y = np.array([0.3, -1.0, 2.0])
    brute = np.abs(s - y).mean(0) - 0.5 * np.abs(s[:, None] - s[None]).sum((0, 1)) / (50 * 49)
    np.testing.assert_allclose(TS.crps_samples(s, y), brute, rtol=1e-12)
    # Gaussian closed form vs the definition int (F(x) - 1{x >= y})^2 dx.
    m, sd, yy = 0.4, 1.7, 1.1
    num = integrate.quad(lambda x: (stats.norm.cdf(x, m, sd) - (x >= yy)) ** 2, -30, 30, points=[yy])[0]
    np.testing.assert_allclose(TS.crps_gaussian(m, sd, yy), num, rtol=1e-7)
    big = rng.normal(m, sd, size=(20000, 1))
    np.testing.assert_allclose(TS.crps_samples(big, np.array([yy]))[0], num, rtol=0.02)


def test_validation_config_lies_inside_the_training_part(data_dir):
    """``32_8_val`` = the ``32_8`` cut of each series' training part: its origins and training windows end
    before the test part begins, and the forecast fits AR on the validation config's own training part."""
    import ml_collections

    from jaxdiff.apps.forecast import load_windows, training_ends
    from jaxdiff.data import load_source

    full = load_source("series", "train", data_dir, config="32_8")
    c = ml_collections.ConfigDict({"data": {"name": "series", "data_dir": data_dir, "config": "32_8_val"},
                                   "model": {"image_size": 32}})
    val = load_windows(c)
    ends = training_ends(c)
    assert len(full) > len(load_windows(c, "train", ("label",))["label"])
    for sid, info in enumerate(TS.SERIES):
        v = TS.load_series(info.name)
        inner = TS.training_part(v)
        assert len(inner) == TS.split_index(len(v), 0.2)
        assert ends[sid] == TS.split_index(len(inner), 0.2)
        starts = val["start"][val["label"] == sid]
        assert starts.min() + 24 == ends[sid] and (starts + 32 <= len(inner)).all()
        j = np.where(val["label"] == sid)[0][-1]
        s = val["start"][j]
        np.testing.assert_allclose(val["series"][j, :, 0] * val["scale"][j] + val["loc"][j], v[s:s + 32],
                                   rtol=1e-5)


@pytest.mark.e2e  # a config end to end through the drivers: the newest-versions CI pass skips it
def test_builder_and_forecast_end_to_end(tmp_path, data_dir):
    from experiments.configs.series_ddpm import get_config
    from jaxdiff.apps.forecast import forecast
    from jaxdiff.data import load_source
    from jaxdiff.training.loop import train_and_evaluate

    src = load_source("series", "test", data_dir, config="32_8")
    ex = src[0]
    assert ex["series"].shape == (32, 1) and ex["series"].dtype == np.float32
    labels = {int(src[i]["label"]) for i in range(len(src))}
    assert labels == set(range(len(TS.SERIES)))
    c = get_config("smoke")
    c.data.data_dir = data_dir
    c.train.num_steps, c.train.checkpoint_every, c.train.sample_every = 2, 2, 2
    wd = str(tmp_path / "series")
    train_and_evaluate(c, wd)
    res = forecast(wd, num_samples=3)
    assert [r["series"] for r in res["series"]] == list(TS.SERIES_NAMES)
    for r in res["series"]:
        for k in ("crps_diff", "crps_naive", "crps_ar", "mse_diff"):
            assert np.isfinite(r[k]) and r[k] >= 0, (r["series"], k)
    # The baselines' scores, recomputed from the raw series: origins split..n-8 every 8, AR fit on the training part.
    for info, r in zip(TS.SERIES, res["series"]):
        v = TS.load_series(info.name)
        split = TS.split_index(len(v), 0.2)
        origins = range(split, len(v) - 7, 8)
        const, coefs, s2 = TS.fit_ar(v[:split], 12)
        naive = [np.abs(TS.seasonal_naive(v[:o], 8, info.period) - v[o:o + 8]).mean() for o in origins]
        ar = [TS.crps_gaussian(*TS.ar_forecast(v[:o], 8, const, coefs, s2), v[o:o + 8]).mean() for o in origins]
        # (rtol: the forecast's targets come from the float32 windows)
        np.testing.assert_allclose([r["crps_naive"], r["crps_ar"]], [np.mean(naive), np.mean(ar)], rtol=1e-4)
        assert r["origins"] == len(origins)

    # Labels reach a class-conditional model's imputation (random weights: only the plumbing is tested);
    # the known values are kept exactly; labels given to an unconditional model are refused.
    import jax
    import jax.numpy as jnp

    from jaxdiff.training.build import build_model
    from jaxdiff.training.generate import generate_imputed
    from jaxdiff.training.restore import restore_trained

    config, _, schedule, params, _ = restore_trained(wd)
    known = np.zeros((32, 1), np.float32)
    known[:24] = 1
    x_known = np.repeat(ex["series"][None] * known, 2, axis=0)
    with pytest.raises(ValueError, match="class-conditional"):
        generate_imputed(config, build_model(config)[0], schedule, params, x_known, known, sampler="ddpm",
                         num_steps=2, jump_length=2, labels=np.array([0, 1]))
    config.data.use_labels, config.model.num_classes = True, 6
    model, _ = build_model(config)
    p = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 1)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))
    leaves, tree = jax.tree.flatten(p["params"])  # perturbed: the zero-initialised output layer ignores labels
    p = jax.tree.unflatten(tree, [w + 0.05 * np.random.default_rng(i).normal(size=w.shape).astype(np.float32)
                                  for i, w in enumerate(leaves)])
    run = lambda y: generate_imputed(config, model, schedule, p, x_known, known, clip_x0=10.0,
                                     sampler="ddpm", num_steps=2, jump_length=2, labels=np.array(y), seed=1)
    a, b = run([0, 1]), run([4, 5])
    np.testing.assert_array_equal(a[:, :24], x_known[:, :24])
    assert np.isfinite(a).all() and not np.allclose(a[:, 24:], b[:, 24:])
