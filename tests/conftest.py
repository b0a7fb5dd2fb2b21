"""Shared test setup: persistent compilation cache, float64 fixture."""

import os

# 8 simulated CPU devices for the pmap / mesh tests; LLVM at -O1: the suite's programs are small and mostly
# compile longer than they run. Measured cold on 88 of the heaviest tests (2 cores): -O0 461 s, -O1 422 s
# (-O0 makes compute-bound loops such as the NCSNv2 mixture test 3.7x slower, 56 s -> 15 s at -O1; the
# default -O3 compiles the CIFAR-10 smoke test's train step in 13.7 s against 8.6 s at -O0). The HLO passes,
# and so the numerics, are the same at every level. A flag already in XLA_FLAGS wins.
_FLAGS = {"--xla_force_host_platform_device_count": "8", "--xla_backend_optimization_level": "1"}
_env = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join([_env] + [f"{k}={v}" for k, v in _FLAGS.items() if k not in _env]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

# The persistent compilation cache, in this process and (through the environment) in the subprocesses that
# tests start (the SIGKILL / multi-process tests run the same programs three times).
_CACHE = os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


@pytest.fixture
def x64():
    """Run a test body in float64 (``jax_enable_x64``) and restore the default afterwards."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One prepared offline data directory per test session (datasets and the cached feature network of
    the evaluation are built once)."""
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture
def two_step_run(data_dir):
    """Shrink a config to a two-step training run in the shared data directory whose evaluation samples 16
    images and takes the ODE bits/dim of 4 test images (end-to-end tests of train -> evaluate)."""

    def shrink(c):
        c.data.data_dir = data_dir
        c.train.num_steps, c.train.checkpoint_every, c.train.sample_every = 2, 2, 2
        c.eval.num_samples = c.sample.num_samples = c.sample.batch_size = 16
        c.eval.ode_bpd_examples = 4
        return c

    return shrink


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Free every compiled program after each test module: one process runs the whole suite, and the
    executables of ~300 tests would otherwise accumulate (XLA aborts when memory runs out)."""
    yield
    import gc

    jax.clear_caches()
    gc.collect()
