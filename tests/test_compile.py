"""Compiling ahead of time: the train step's pre-flight (compiled before training, its memory logged, then
used for training) and the persistent compilation cache of the experiment scripts."""

import logging

import jax


def test_preflight_reports_memory_and_trains_with_the_compiled_step(tmp_path, data_dir, caplog):
    from experiments.configs.digits_ddpm import get_config
    from jaxdiff.training.loop import train_and_evaluate

    c = get_config("smoke")
    c.data.data_dir = data_dir
    c.train.num_steps, c.train.checkpoint_every, c.train.sample_every = 2, 2, 2
    with caplog.at_level(logging.INFO):
        m = train_and_evaluate(c, str(tmp_path / "run"))
    line = [r.getMessage() for r in caplog.records if "train step compiled" in r.getMessage()]
    assert line and "temporaries" in line[0] and "arguments" in line[0], [r.getMessage() for r in caplog.records]
    assert m["step"] == 2 and m["skipped_total"] == 0


def test_compilation_cache_setting(tmp_path, monkeypatch):
    from jaxdiff.training import cache

    kept = jax.config.jax_compilation_cache_dir
    assert kept  # the suite's own (tests/conftest.py) is kept, whatever is asked
    assert cache.enable_compilation_cache(str(tmp_path / "x")) == kept
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert cache.enable_compilation_cache("off") is None and not jax.config.jax_compilation_cache_dir
        monkeypatch.setenv("JAXDIFF_COMPILATION_CACHE", str(tmp_path / "env"))
        assert cache.enable_compilation_cache() == str(tmp_path / "env") == jax.config.jax_compilation_cache_dir
        assert (tmp_path / "env").is_dir()
    finally:
        jax.config.update("jax_compilation_cache_dir", kept)

