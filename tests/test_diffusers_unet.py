"""Import of diffusers ``UNet2DModel`` checkpoints and parity of jaxdiff's DDPM / DDIM samplers with diffusers'
``DDPMScheduler`` / ``DDIMScheduler``, against the committed fixture written by
``tests/fixture_makers/make_unet_fixture.py`` (diffusers' own outputs; weights from a seed)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixture_makers.make_unet_fixture import CONFIGS

from jaxdiff.interop import diffusers_parity as parity
from jaxdiff.interop import diffusers_unet as du
from jaxdiff.models.unet import UNet, count_params, ddpm_cifar10_config
from jaxdiff.schedules import get_schedule

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "diffusers_unet_fixture.npz")

# google/ddpm-cifar10-32's config.json (the fields that matter)
DDPM_CIFAR10 = {"_class_name": "UNet2DModel", "act_fn": "silu", "attention_head_dim": None,
                "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
                "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
                "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3,
                "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32,
                "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
                "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}


@pytest.fixture(scope="module")
def fx():
    return parity.load_fixture(FIXTURE)


converted = parity.converted


@pytest.mark.parametrize("name", list(CONFIGS))
def test_converted_unet_equals_diffusers(fx, name):
    assert parity.output_error(fx, name) < 1e-4
    assert np.abs(fx[f"{name}/out"]).max() > 0.1  # the outputs are not trivially small


def test_ddpm_cifar10_config_maps_to_the_preset():
    cfg = du.unet_config_from_diffusers(DDPM_CIFAR10)
    preset = ddpm_cifar10_config(dropout=0.0)
    for field in ("image_size", "in_channels", "base_channels", "channel_mult", "num_res_blocks",
                  "attention_resolutions", "num_heads", "scale_shift", "learned_variance"):
        assert getattr(cfg, field) == getattr(preset, field), field
    assert (cfg.time_offset, cfg.time_freq_shift, cfg.time_flip_sin_to_cos, cfg.norm_eps) == (-1, 1, False, 1e-6)
    x = jnp.zeros((1, 32, 32, 3))
    shapes = jax.eval_shape(lambda: UNet(cfg).init(jax.random.key(0), x, jnp.zeros(1)))["params"]
    assert count_params(shapes) == 35_746_307  # google/ddpm-cifar10-32's parameter count


def test_timestep_embedding_matches_diffusers_formula():
    from jaxdiff.models.layers import timestep_embedding

    t, dim = np.array([0.0, 3.0, 871.0]), 16
    half = dim // 2
    for shift, flip in ((1, False), (0, True)):
        freqs = np.exp(-np.log(10000) * np.arange(half) / (half - shift))  # get_timestep_embedding
        args = t[:, None] * freqs[None]
        ref = np.concatenate([np.sin(args), np.cos(args)], -1)
        if flip:
            ref = np.concatenate([ref[:, half:], ref[:, :half]], -1)
        out = timestep_embedding(jnp.asarray(t, jnp.float32), dim, freq_shift=shift, flip_sin_to_cos=flip)
        np.testing.assert_allclose(np.asarray(out), ref, atol=2e-4)


# ------------------------------------------------------------------------------------------------------------
# scheduler parity in float64

@pytest.fixture(scope="module")
def ddpm_model64(fx):
    with jax.enable_x64(True):
        yield parity.model64(fx)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_trajectory_equals_diffusers(fx, ddpm_model64, spacing, clip):
    """diffusers DDIMScheduler(clip_sample=clip, timestep_spacing=spacing, set_alpha_to_one=True), 10 steps,
    eta = 0, is jaxdiff's sample_ddim(num_steps=10, spacing=spacing) (with clip_x0_model_fn when clipping, which
    re-derives eps from the clipped x0: diffusers' step(..., use_clipped_model_output=True))."""
    with jax.enable_x64(True):
        err = parity.ddim_error(fx, ddpm_model64, spacing, clip)
    assert err["same_grid"] and err["rel_error"] < 1e-6, err


def test_ddim_eta_one_step_moments_equal_diffusers(fx, ddpm_model64):
    with jax.enable_x64(True):
        err = parity.ddim_eta_error(fx, ddpm_model64)
    assert err["mean"] < 1e-9 and err["std"] < 1e-9, err


@pytest.mark.parametrize("case", list(parity.DDPM_CASES))
def test_ddpm_step_moments_equal_diffusers(fx, ddpm_model64, case):
    """DDPMScheduler.step's posterior mean and std (its noise set to 0 and 1) at steps j -> prev equal
    jaxdiff's sample_ddpm on the grid [(j + 1) / T, (prev + 1) / T] (0 where prev = -1)."""
    with jax.enable_x64(True):
        err = parity.ddpm_error(fx, ddpm_model64, case)
    assert err["mean"] < 1e-8 and err["std"] < 1e-8, err


def test_scheduler_config_maps_to_jaxdiff_settings():
    got = du.scheduler_from_diffusers({"_class_name": "DDPMScheduler", "beta_schedule": "linear", "beta_start": 1e-4,
                                       "beta_end": 0.02, "num_train_timesteps": 1000, "clip_sample": True,
                                       "variance_type": "fixed_small"})
    assert got == dict(schedule="linear", schedule_kwargs=dict(beta_start=1e-4, beta_end=0.02), num_steps=1000,
                       prediction="eps", variance="fixed_small", clip_x0=1.0, spacing="leading")
    sched = get_schedule(got["schedule"], num_steps=1000, **got["schedule_kwargs"])
    betas = np.linspace(1e-4, 0.02, 1000)  # diffusers' linear betas
    np.testing.assert_allclose(np.asarray(sched.alpha_bar[1:]), np.cumprod(1 - betas), rtol=1e-5)
    cos = du.scheduler_from_diffusers({"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction",
                                       "clip_sample": False, "timestep_spacing": "trailing"})
    assert (cos["schedule"], cos["prediction"], cos["clip_x0"], cos["spacing"]) == ("cosine", "v", 0.0, "trailing")
    for bad, field in (({"thresholding": True}, "thresholding"), ({"steps_offset": 1}, "steps_offset"),
                       ({"beta_schedule": "exp"}, "beta_schedule"), ({"prediction_type": "flow"}, "prediction_type")):
        with pytest.raises(ValueError, match=field):
            du.scheduler_from_diffusers(bad)


# ------------------------------------------------------------------------------------------------------------
# errors name the tensor or the field

def test_wrong_state_dict_names_the_tensor(fx):
    cfg, _, sd, _ = converted(fx, "ddpm")
    missing = dict(sd)
    del missing["mid_block.attentions.0.to_k.weight"]
    with pytest.raises(ValueError, match=r"mid_block\.attentions\.0\.to_k\.weight"):
        du.params_from_diffusers(missing, cfg)
    extra = dict(sd, **{"down_blocks.0.resnets.7.conv1.weight": np.zeros((8, 8, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"down_blocks\.0\.resnets\.7\.conv1\.weight"):
        du.params_from_diffusers(extra, cfg)
    shaped = dict(sd, **{"up_blocks.1.resnets.0.conv1.weight": np.zeros((8, 24, 3, 1), np.float32)})
    with pytest.raises(ValueError, match=r"up_blocks\.1\.resnets\.0\.conv1"):
        du.params_from_diffusers(shaped, cfg)


@pytest.mark.parametrize("field,value", [("center_input_sample", True), ("time_embedding_type", "fourier"),
                                         ("down_block_types", ["CrossAttnDownBlock2D"] * 4),
                                         ("up_block_types", ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"]),
                                         ("block_out_channels", [128, 192, 256, 256]),
                                         ("downsample_type", "resnet"), ("mid_block_scale_factor", 2.0),
                                         ("class_embed_type", "timestep"), ("sample_size", [32, 64]),
                                         ("add_attention", False), ("time_embedding_dim", 256)])
def test_inexpressible_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        du.unet_config_from_diffusers(dict(DDPM_CIFAR10, **{field: value}))
    with pytest.raises(ValueError, match="attn_norm_num_groups"):
        du.unet_config_from_diffusers(dict(DDPM_CIFAR10, resnet_time_scale_shift="scale_shift"))


# ------------------------------------------------------------------------------------------------------------
# checkpoint directories (safetensors read without torch)

def write_checkpoint(fx, directory, weights="safetensors"):
    _, _, sd, config = converted(fx, "ddpm")
    os.makedirs(directory)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(dict(config, _class_name="UNet2DModel"), f)
    with open(os.path.join(directory, "scheduler_config.json"), "w") as f:
        json.dump({"_class_name": "DDPMScheduler", "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
                   "num_train_timesteps": 1000, "clip_sample": True, "variance_type": "fixed_small"}, f)
    du.write_safetensors(os.path.join(directory, "diffusion_pytorch_model.safetensors"), sd)
    return sd


def test_safetensors_round_trip(tmp_path):
    import ml_dtypes

    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1.5, -2], ml_dtypes.bfloat16),
              "c": np.arange(4, dtype=np.int64)}
    path = str(tmp_path / "x.safetensors")
    du.write_safetensors(path, arrays)
    back = du.read_safetensors(path)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
    with pytest.raises(FileExistsError):
        du.write_safetensors(path, arrays)  # never over an existing file


def test_load_diffusers_directory(fx, tmp_path):
    write_checkpoint(fx, str(tmp_path / "ckpt"))
    cfg, params, sched = du.load_diffusers_unet(str(tmp_path / "ckpt"))
    out = UNet(cfg).apply({"params": params}, fx["ddpm/x"], (fx["ddpm/j"] + 1) / 1000.0)
    np.testing.assert_allclose(np.asarray(out), fx["ddpm/out"], atol=1e-4)
    assert sched["clip_x0"] == 1.0 and sched["spacing"] == "leading"
    with pytest.raises(FileNotFoundError, match="no such directory"):
        du.load_diffusers_unet(str(tmp_path / "nothing"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="config.json"):
        du.load_diffusers_unet(str(tmp_path / "empty"))


# ------------------------------------------------------------------------------------------------------------
# live comparison (the [interop] extra)

def test_live_against_diffusers(fx):
    pytest.importorskip("diffusers")
    from fixture_makers.make_unet_fixture import diffusers_unet, run

    for name, config in CONFIGS.items():
        model, shapes = diffusers_unet(config)
        assert json.loads(str(fx[f"{name}/shapes"])) == {k: list(v) for k, v in shapes.items()}
        labels = fx.get(f"{name}/labels")
        np.testing.assert_allclose(run(model, fx[f"{name}/x"], fx[f"{name}/j"], labels), fx[f"{name}/out"],
                                   atol=1e-5)
    from diffusers import UNet2DModel

    ref = UNet2DModel(**{k: v for k, v in DDPM_CIFAR10.items() if not k.startswith("_")})
    assert sum(p.numel() for p in ref.parameters()) == 35_746_307
    cfg = du.unet_config_from_diffusers(DDPM_CIFAR10)
    params = du.params_from_diffusers(ref.state_dict(), cfg)
    assert count_params(params) == 35_746_307


def test_sample_from_diffusers_directory(fx, tmp_path, monkeypatch):
    """``experiments.sample --from_diffusers DIR`` samples the imported network with a jaxdiff sampler, writes
    under runs/from_diffusers/<name>/samples (never over earlier files) and refuses --workdir beside it."""
    from absl import flags
    from test_readme_commands import run

    write_checkpoint(fx, str(tmp_path / "ddpm-tiny"))
    monkeypatch.chdir(tmp_path)
    argv = ["experiments.sample", f"--from_diffusers={tmp_path / 'ddpm-tiny'}", "--sampler=ddim", "--num_steps=4",
            "--num_samples=3"]
    run(argv)
    run(argv)
    out = tmp_path / "runs" / "from_diffusers" / "ddpm-tiny" / "samples"
    npz = sorted(p.name for p in out.glob("*.npz"))
    assert npz == ["ddim_4.1.npz", "ddim_4.npz"], npz
    with np.load(out / "ddim_4.npz") as f:
        x = f["samples"]
    assert x.shape == (3, 8, 8, 3) and np.all(np.abs(x) <= 1.0)  # the scheduler's clip_sample: x0 in [-1, 1]
    with pytest.raises(flags.IllegalFlagValueError, match="exactly one of --workdir"):
        run(argv + ["--workdir=runs/x"])
