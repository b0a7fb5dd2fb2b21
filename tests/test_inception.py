"""The FID Inception in Flax against pytorch-fid (fixture: its features under seed-made weights), the weight
converter's named errors, PyTorch's bilinear resize."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixture_makers.make_inception_fixture import large_image

from jaxdiff.evaluation.inception import FIDInceptionV3, resize_bilinear, resize_matrix, to_inception_input
from jaxdiff.interop import inception as conv

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "inception_fid_fixture.npz")


@pytest.fixture(scope="module")
def fixture_features():
    """The Flax network's features of the fixture's images (one compile: both sizes resized to 299 first)."""
    f = np.load(FIXTURE)
    params = conv.convert_state_dict(conv.random_state_dict(int(f["seed"])))
    imgs = [jnp.asarray(f["images_32"], jnp.float32) / 255, jnp.asarray(large_image(), jnp.float32) / 255]
    x = jnp.concatenate([resize_bilinear(i, 299) for i in imgs])
    out = jax.jit(lambda p, x: FIDInceptionV3("all", resize_input=False).apply({"params": p}, x))(params, x)
    return f, out


@pytest.mark.parametrize("name", ["pool", "mixed_6e"])
def test_features_equal_pytorch_fid(fixture_features, name):
    """2048-d pool and 768-d Mixed_6e features equal pytorch-fid's within 1e-4 (relative, float32), for
    32x32 images (upsampled to 299) and a 333x310 one (downsampled)."""
    f, out = fixture_features
    ref = np.concatenate([f[f"{name}_32"], f[f"{name}_333x310"]])
    got = np.asarray(out[name])
    assert got.shape == ref.shape == (3, {"pool": 2048, "mixed_6e": 768}[name])
    scale = np.abs(ref).max()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * scale)


def test_resize_matrix_is_pytorch_bilinear():
    """align_corners=False: rows sum to 1; a linear ramp stays linear away from the clamped edges; the
    identity at equal sizes; downsampling by 2 averages neighbour pairs (no antialiasing)."""
    m = resize_matrix(7, 19)
    np.testing.assert_allclose(m.sum(1), 1.0)
    src = (np.arange(19) + 0.5) * 7 / 19 - 0.5
    inner = (src >= 0) & (src <= 6)
    np.testing.assert_allclose((m @ np.arange(7.0))[inner], src[inner], atol=1e-12)
    np.testing.assert_allclose(resize_matrix(5, 5), np.eye(5))
    np.testing.assert_allclose(resize_matrix(8, 4) @ np.arange(8.0), [0.5, 2.5, 4.5, 6.5])


def test_converter_errors_name_the_tensor():
    sd = conv.random_state_dict(0)
    sd["fc.weight"] = np.zeros((1008, 2048), np.float32)  # the classifier head is ignored
    params = conv.convert_state_dict(sd)
    assert params["Mixed_7c"]["branch_pool"]["kernel"].shape == (1, 1, 2048, 192)
    missing = dict(sd)
    del missing["Mixed_6e.branch7x7dbl_4.bn.running_var"]
    with pytest.raises(ValueError, match="no tensor 'Mixed_6e.branch7x7dbl_4.bn.running_var'"):
        conv.convert_state_dict(missing)
    bad = dict(sd, **{"Conv2d_1a_3x3.conv.weight": np.zeros((32, 1, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"'Conv2d_1a_3x3.conv.weight' has shape \(32, 1, 3, 3\).*\(32, 3, 3, 3\)"):
        conv.convert_state_dict(bad)
    with pytest.raises(ValueError, match="does not use: \\['Mixed_8a.conv.weight'\\]"):
        conv.convert_state_dict(dict(sd, **{"Mixed_8a.conv.weight": np.zeros(3)}))
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05"):
        conv.load_fid_inception("/nonexistent/pt_inception.pth")


def test_npz_weights_roundtrip(tmp_path):
    sd = conv.random_state_dict(3)
    np.savez(tmp_path / "w.npz", **sd)
    a, b = conv.load_fid_inception(str(tmp_path / "w.npz")), conv.convert_state_dict(sd)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_inception_input_and_bad_shapes():
    x = to_inception_input(np.array([[[0, 16]]], np.uint8)[..., None], num_levels=17)
    np.testing.assert_allclose(x[0, 0, :, 0], [0.0, 1.0])
    assert x.shape == (1, 1, 2, 3)
    np.testing.assert_allclose(to_inception_input(np.full((1, 2, 2, 3), -1.0)), 0.0)
    with pytest.raises(ValueError, match=r"\[N, H, W, 1 or 3\]"):
        to_inception_input(np.zeros((2, 4, 4, 2)))
    with pytest.raises(ValueError, match="allowed"):
        FIDInceptionV3("logits").init(jax.random.key(0), jnp.zeros((1, 75, 75, 3)))


@pytest.mark.skipif(not __import__("importlib").util.find_spec("pytorch_fid"), reason="needs the [fid] extra")
def test_live_pytorch_fid_comparison():
    """With pytorch-fid installed (the [fid] extra): its features of fresh images equal the Flax network's."""
    from fixture_makers.make_inception_fixture import pytorch_fid_features

    imgs = np.random.default_rng(5).integers(0, 256, (2, 40, 56, 3)).astype(np.uint8)
    ref = pytorch_fid_features(imgs, seed=11)["pool"]
    params = conv.convert_state_dict(conv.random_state_dict(11))
    got = FIDInceptionV3().apply({"params": params}, jnp.asarray(imgs, jnp.float32) / 255)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


# --- the N-sample protocol: chunks, resume, evaluation ------------------------------------------------------

def _toy_sample_fn(p, keys):
    return jax.vmap(lambda k: jax.random.uniform(k, (4, 4, 1), minval=-1.0, maxval=1.0))(keys)


def test_chunks_are_per_index_and_never_overwritten(tmp_path):
    """Sample i is the same whatever the chunk size; an existing chunk is kept; a different generation in the
    same directory is refused."""
    from jaxdiff.evaluation.inception_eval import generate_chunks, read_chunks

    fn = jax.jit(_toy_sample_fn)
    n = jax.local_device_count()  # chunks split over the local devices
    for cs in (n, 2 * n):
        generate_chunks(fn, None, str(tmp_path / f"c{cs}"), num_samples=5 * n + 3, chunk_size=cs, seed=3,
                        log=lambda s: 0)
    a = read_chunks(str(tmp_path / f"c{n}"), 5 * n + 3, n, "samples")
    b = read_chunks(str(tmp_path / f"c{2 * n}"), 5 * n + 3, 2 * n, "samples")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(read_chunks(str(tmp_path / f"c{n}"), 5 * n + 3, n, "indices"), np.arange(5 * n + 3))
    d = tmp_path / f"c{n}"
    before = os.path.getmtime(d / f"chunk_{n:08d}.npz")
    generate_chunks(fn, None, str(d), num_samples=5 * n + 3, chunk_size=n, seed=3, log=lambda s: 0)
    assert os.path.getmtime(d / f"chunk_{n:08d}.npz") == before
    with pytest.raises(ValueError, match="another generation"):
        generate_chunks(fn, None, str(d), num_samples=5 * n + 3, chunk_size=n, seed=4)
    with pytest.raises(ValueError, match="multiple of the"):
        generate_chunks(fn, None, str(tmp_path / "bad"), num_samples=8, chunk_size=n + 1, seed=4)
    os.remove(d / f"chunk_{2 * n:08d}.npz")
    with pytest.raises(FileNotFoundError, match="1 chunks missing"):
        read_chunks(str(d), 5 * n + 3, n)


RESUME_SCRIPT = """
import sys, time, jax
sys.path.insert(0, {tests!r})
from test_inception import _toy_sample_fn
from jaxdiff.evaluation.inception_eval import generate_chunks
generate_chunks(jax.jit(_toy_sample_fn), None, {out!r}, num_samples=80, chunk_size=8, seed=5,
                log=lambda s: time.sleep(0.4))
"""


def test_resume_after_sigkill_generates_every_index_once(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from jaxdiff.evaluation.inception_eval import generate_chunks, read_chunks

    out = tmp_path / "killed"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    code = RESUME_SCRIPT.format(tests=os.path.dirname(__file__), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(out.glob("chunk_*.npz"))) < 2:
        time.sleep(0.05)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed and len(list(out.glob("chunk_*.npz"))) < 10, "the run finished before it was killed"
    fn = jax.jit(_toy_sample_fn)
    generate_chunks(fn, None, str(out), num_samples=80, chunk_size=8, seed=5, log=lambda s: 0)
    generate_chunks(fn, None, str(tmp_path / "full"), num_samples=80, chunk_size=8, seed=5, log=lambda s: 0)
    np.testing.assert_array_equal(read_chunks(str(out), 80, 8, "indices"), np.arange(80))
    np.testing.assert_array_equal(read_chunks(str(out), 80, 8, "samples"),
                                  read_chunks(str(tmp_path / "full"), 80, 8, "samples"))
    assert sorted(p.name for p in out.glob("chunk_*.npz")) == [f"chunk_{s:08d}.npz" for s in range(0, 80, 8)]


@pytest.mark.slow  # the Inception at 299x299 on 8 samples and a 2-step training run
def test_evaluate_inception_end_to_end(tmp_path, two_step_run):
    """experiments.evaluate --metric inception_fid on a digits workdir with the fixture's random weights and a
    reference .npz: FID equals the formula on the chunks' features; bad weights are named before compiling."""
    from experiments.configs.digits_ddpm import get_config
    from jaxdiff.apps.inception import evaluate_inception
    from jaxdiff.evaluation import metrics as M
    from jaxdiff.evaluation.inception_eval import read_chunks
    from jaxdiff.training.loop import train_and_evaluate

    c = two_step_run(get_config("smoke"))
    wd = str(tmp_path / "run")
    train_and_evaluate(c, wd)
    weights = str(tmp_path / "w.npz")
    np.savez(weights, **conv.random_state_dict(7))
    rng = np.random.default_rng(0)
    ref_feats = rng.normal(size=(64, 2048)) * 0.1 + 0.3
    M.save_stats(str(tmp_path / "ref.npz"), ref_feats)
    m = evaluate_inception(wd, weights, str(tmp_path / "ref.npz"), num_samples=8, chunk_size=8, sampler="ddim",
                           num_steps=2, log=lambda s: 0)
    feats = read_chunks(os.path.join(wd, "eval", "inception_ddim_2_seed1"), 8, 8)
    assert feats.shape == (8, 2048)
    np.testing.assert_allclose(m["fid"], M.fid_from_stats(feats, M.load_stats(str(tmp_path / "ref.npz"))),
                               rtol=1e-9)
    bad = conv.random_state_dict(7)
    del bad["Mixed_5b.branch1x1.conv.weight"]
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match="no tensor 'Mixed_5b.branch1x1.conv.weight'"):
        evaluate_inception(wd, str(tmp_path / "bad.npz"), str(tmp_path / "ref.npz"), num_samples=8, chunk_size=8)


TWO_PROCESS_SCRIPT = """
import sys, jax
sys.path.insert(0, {tests!r})
from jaxdiff.training import parallel
parallel.initialize({coord!r}, 2, {pid}, initialization_timeout_s=120)
from test_inception import _toy_sample_fn
from jaxdiff.evaluation.inception_eval import generate_chunks
mine = generate_chunks(jax.jit(_toy_sample_fn), None, {out!r}, num_samples=36, chunk_size=4, seed=5, log=lambda s: 0)
print("MINE", ",".join(p[-12:-4] for p in mine))
"""


@pytest.mark.slow  # two processes start and connect: ~20 s
def test_two_processes_split_the_chunks(tmp_path):
    """Two processes (jax.distributed) write disjoint chunks (c mod 2) that together hold every index once,
    equal to one process's samples."""
    import subprocess
    import sys

    from test_parallel import _free_port

    from jaxdiff.evaluation.inception_eval import generate_chunks, read_chunks

    coord = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [subprocess.Popen([sys.executable, "-c", TWO_PROCESS_SCRIPT.format(
        tests=os.path.dirname(__file__), coord=coord, pid=i, out=str(tmp_path / "two"))], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
    mine = [[int(s) for s in [l for l in o.splitlines() if l.startswith("MINE")][-1][5:].split(",")] for o in outs]
    assert mine == [list(range(0, 36, 8)), list(range(4, 36, 8))]
    n = jax.local_device_count()  # this process: another chunk size, the same samples per index
    generate_chunks(jax.jit(_toy_sample_fn), None, str(tmp_path / "one"), num_samples=36, chunk_size=n, seed=5,
                    log=lambda s: 0)
    np.testing.assert_array_equal(read_chunks(str(tmp_path / "two"), 36, 4, "indices"), np.arange(36))
    np.testing.assert_array_equal(read_chunks(str(tmp_path / "two"), 36, 4, "samples"),
                                  read_chunks(str(tmp_path / "one"), 36, n, "samples"))
