"""Import of diffusers ``UNet2DModel`` checkpoints into jaxdiff's :class:`~jaxdiff.models.unet.UNet`, and of
diffusers scheduler configs into jaxdiff schedules and sampler settings.

``UNet2DModel`` configs in the DDPM / ADM block layouts (``DownBlock2D`` / ``AttnDownBlock2D`` with conv
down-sampling, ``UpBlock2D`` / ``AttnUpBlock2D``, ``UNetMidBlock2D``; plain or scale-shift time conditioning;
optional class embedding; learned-variance output channels) map onto jaxdiff's U-Net exactly, e.g.
``google/ddpm-cifar10-32`` (35,746,307 parameters, :func:`jaxdiff.models.unet.ddpm_cifar10_config`). A
config the U-Net cannot express is an error naming the field; a state dict with a missing, unknown or
mis-shaped tensor is an error naming the tensor.

Time: diffusers' models take the step index j = 0..T-1 of ``alphas_cumprod[j]``; jaxdiff's discrete
schedules put ``alpha_bar`` of step j + 1 at t = (j + 1) / T (``alpha_bar_0 = 1`` at t = 0), so the imported
network embeds ``T t - 1`` (``time_scale = T``, ``time_offset = -1``).

Weights are read from ``diffusion_pytorch_model.safetensors`` by the small numpy reader below (no torch
needed), or from ``diffusion_pytorch_model.bin`` with torch (the ``[interop]`` extra).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np

from jaxdiff.models.unet import UNet, UNetConfig

DOWN_BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True}
UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True}
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


# --------------------------------------------------------------------------------------------------------------
# safetensors (https://github.com/huggingface/safetensors: 8-byte little-endian header size, a JSON header of
# {name: {dtype, shape, data_offsets}}, then the raw little-endian bytes)

def _st_dtypes():
    import ml_dtypes  # ships with jax

    return {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
            "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file as numpy arrays."""
    dtypes = _st_dtypes()
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: not a safetensors file (only {len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8:8 + n])
    except ValueError as e:
        raise ValueError(f"{path}: not a safetensors file (bad header: {e})") from None
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}; allowed: {sorted(dtypes)}")
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtypes[info["dtype"]]).reshape(info["shape"]).copy()
    return out


def write_safetensors(path: str, tensors: dict[str, np.ndarray]):
    """Write numpy arrays as a ``.safetensors`` file (for fixtures and tests; never over an existing file)."""
    names = {np.dtype(v): k for k, v in _st_dtypes().items()}
    header, chunks, offset = {}, [], 0
    for name, value in tensors.items():
        a = np.ascontiguousarray(value)
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "xb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(chunks))


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """A diffusers weight file (``.safetensors`` by the numpy reader, ``.bin`` by torch) as numpy arrays."""
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path} is a PyTorch pickle; reading it needs torch (pip install -e '.[interop]'), "
                          "or use the checkpoint's diffusion_pytorch_model.safetensors") from None
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in sd.items()}


# --------------------------------------------------------------------------------------------------------------
# config

def _need(cfg: dict, field: str, allowed, default=None):
    value = cfg.get(field, default)
    if isinstance(value, list):
        value = tuple(value)
    if value not in allowed:
        raise ValueError(f"diffusers UNet2DModel config: {field}={value!r} cannot be expressed by jaxdiff's U-Net; "
                         f"allowed: {list(allowed)}")
    return value


def unet_config_from_diffusers(cfg: dict, num_train_timesteps: int = 1000, **overrides) -> UNetConfig:
    """The :class:`UNetConfig` of a diffusers ``UNet2DModel`` config (its ``config.json`` as a dict)."""
    if cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ValueError(f"diffusers config: _class_name={cfg['_class_name']!r}; allowed: ['UNet2DModel']")
    size = cfg.get("sample_size")
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"diffusers UNet2DModel config: sample_size={size} is not square; jaxdiff's U-Net "
                             "takes square images")
        size = size[0]
    if not isinstance(size, int):
        raise ValueError(f"diffusers UNet2DModel config: sample_size={size!r}; allowed: an integer")
    _need(cfg, "center_input_sample", (False,), False)
    _need(cfg, "time_embedding_type", ("positional",), "positional")
    _need(cfg, "act_fn", ("silu", "swish"), "silu")
    _need(cfg, "mid_block_type", ("UNetMidBlock2D",), "UNetMidBlock2D")
    _need(cfg, "add_attention", (True,), True)
    _need(cfg, "mid_block_scale_factor", (1, 1.0), 1)
    _need(cfg, "downsample_type", ("conv",), "conv")
    _need(cfg, "upsample_type", ("conv",), "conv")
    _need(cfg, "class_embed_type", (None,), None)
    pad = _need(cfg, "downsample_padding", (0, 1), 1)
    shift = _need(cfg, "resnet_time_scale_shift", ("default", "scale_shift"), "default")
    widths = tuple(cfg.get("block_out_channels", (64, 128, 256, 512)))
    base = widths[0]
    if any(w % base for w in widths):
        raise ValueError(f"diffusers UNet2DModel config: block_out_channels={widths} are not multiples of the "
                         "first; jaxdiff's U-Net has widths base_channels * channel_mult")
    temb = cfg.get("time_embedding_dim")
    if temb not in (None, 4 * base):
        raise ValueError(f"diffusers UNet2DModel config: time_embedding_dim={temb}; allowed: None or "
                         f"4 * block_out_channels[0] = {4 * base}")
    layers = cfg.get("layers_per_block", 2)
    if isinstance(layers, (list, tuple)):
        if len(set(layers)) != 1:
            raise ValueError(f"diffusers UNet2DModel config: layers_per_block={layers}; allowed: the same "
                             "count at every level")
        layers = layers[0]
    down = tuple(cfg.get("down_block_types", ()))
    up = tuple(cfg.get("up_block_types", ()))
    for field, types, allowed in (("down_block_types", down, DOWN_BLOCKS), ("up_block_types", up, UP_BLOCKS)):
        bad = [b for b in types if b not in allowed]
        if bad or len(types) != len(widths):
            raise ValueError(f"diffusers UNet2DModel config: {field}={list(types)}; allowed: "
                             f"{len(widths)} (one per block_out_channels) of {list(allowed)}")
    attn_down = [DOWN_BLOCKS[b] for b in down]
    attn_up = [UP_BLOCKS[b] for b in reversed(up)]
    if attn_down != attn_up:
        raise ValueError(f"diffusers UNet2DModel config: down_block_types={list(down)} and up_block_types="
                         f"{list(up)} put attention at different levels; jaxdiff's U-Net attends at the same "
                         "resolutions on both paths")
    groups = cfg.get("norm_num_groups", 32)
    if cfg.get("attn_norm_num_groups") not in (None, groups):
        raise ValueError(f"diffusers UNet2DModel config: attn_norm_num_groups={cfg['attn_norm_num_groups']}; "
                         f"allowed: None or norm_num_groups={groups}")
    if shift != "default" and cfg.get("attn_norm_num_groups") is None:  # diffusers' UNetMidBlock2D quirk
        raise ValueError("diffusers UNet2DModel config: resnet_time_scale_shift='scale_shift' with "
                         "attn_norm_num_groups=None has no GroupNorm in the middle block's attention; jaxdiff's "
                         f"has one; allowed: attn_norm_num_groups={groups} (= norm_num_groups)")
    in_ch, out_ch = cfg.get("in_channels", 3), cfg.get("out_channels", 3)
    head = cfg.get("attention_head_dim")
    fields = dict(
        image_size=size, in_channels=in_ch, base_channels=base, channel_mult=tuple(w // base for w in widths),
        num_res_blocks=layers, attention_resolutions=tuple(size // 2**i for i, a in enumerate(attn_down) if a),
        num_heads=1, head_channels=head, dropout=float(cfg.get("dropout", 0.0)), scale_shift=shift == "scale_shift",
        resblock_updown=False, conv_resample=True, learned_variance=out_ch == 2 * in_ch,
        out_channels=None if out_ch in (in_ch, 2 * in_ch) else out_ch, num_classes=cfg.get("num_class_embeds"),
        time_embedding="sinusoidal", time_scale=float(num_train_timesteps), time_offset=-1.0,
        time_freq_shift=float(cfg.get("freq_shift", 0)), time_flip_sin_to_cos=bool(cfg.get("flip_sin_to_cos", True)),
        num_groups=groups, norm_eps=float(cfg.get("norm_eps", 1e-5)),
        downsample_padding="same" if pad == 0 else "symmetric")
    fields.update(overrides)
    return UNetConfig(**fields).validate()


# --------------------------------------------------------------------------------------------------------------
# weights

def _torch_order(config: UNetConfig):
    """(flax path, diffusers prefix, kind) of every parameterised layer, in jaxdiff's module order."""
    L, n = len(config.channel_mult), config.num_res_blocks
    out = [(("Dense_0",), "time_embedding.linear_1", "linear"), (("Dense_1",), "time_embedding.linear_2", "linear")]
    if config.num_classes is not None:
        out.append((("Embed_0",), "class_embedding", "embed"))
    out.append((("Conv_0",), "conv_in", "conv"))
    r = a = d = u = 0

    def res(prefix):
        nonlocal r
        out.append(((f"ResBlock_{r}",), prefix, "resblock"))
        r += 1

    def attn(prefix):
        nonlocal a
        out.append(((f"AttentionBlock_{a}",), prefix, "attention"))
        a += 1

    for level in range(L):
        has_attn = config.image_size // 2**level in config.attention_resolutions
        for i in range(n):
            res(f"down_blocks.{level}.resnets.{i}")
            if has_attn:
                attn(f"down_blocks.{level}.attentions.{i}")
        if level != L - 1:
            out.append(((f"Downsample_{d}", "Conv_0"), f"down_blocks.{level}.downsamplers.0.conv", "conv"))
            d += 1
    res("mid_block.resnets.0")
    attn("mid_block.attentions.0")
    res("mid_block.resnets.1")
    for j, level in enumerate(reversed(range(L))):
        has_attn = config.image_size // 2**level in config.attention_resolutions
        for i in range(n + 1):
            res(f"up_blocks.{j}.resnets.{i}")
            if has_attn:
                attn(f"up_blocks.{j}.attentions.{i}")
        if level != 0:
            out.append(((f"Upsample_{u}", "Conv_0"), f"up_blocks.{j}.upsamplers.0.conv", "conv"))
            u += 1
    out.append((("GroupNorm_0",), "conv_norm_out", "norm"))
    out.append((("Conv_1",), "conv_out", "conv"))
    return out


def params_from_diffusers(state_dict: dict, config: UNetConfig, dtype=np.float32) -> dict:
    """jaxdiff U-Net params (a nested dict of numpy arrays of ``dtype``) from a diffusers ``UNet2DModel`` state
    dict (numpy arrays or torch tensors) of the config :func:`unet_config_from_diffusers` gave."""
    sd = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in state_dict.items()}
    used: set[str] = set()

    def get(key):  # a leaf is (array, the torch name it came from)
        if key not in sd:
            raise ValueError(f"diffusers state dict: missing tensor {key!r} (is it a UNet2DModel of this config?)")
        used.add(key)
        return sd[key]

    def leaf(key, f=lambda a: a):
        return f(get(key)), key

    def conv(prefix):
        return {"kernel": leaf(prefix + ".weight", lambda w: w.transpose(2, 3, 1, 0)), "bias": leaf(prefix + ".bias")}

    def linear(prefix):
        return {"kernel": leaf(prefix + ".weight", lambda w: w.T), "bias": leaf(prefix + ".bias")}

    def norm(prefix):
        return {"scale": leaf(prefix + ".weight"), "bias": leaf(prefix + ".bias")}

    def resblock(p):
        block = {"GroupNorm_0": norm(p + ".norm1"), "Conv_0": conv(p + ".conv1"),
                 "Dense_0": linear(p + ".time_emb_proj"), "GroupNorm_1": norm(p + ".norm2"),
                 "Conv_1": conv(p + ".conv2")}
        if p + ".conv_shortcut.weight" in sd:
            block["Conv_2"] = conv(p + ".conv_shortcut")
        return block

    def attention(p):
        qkv = [linear(f"{p}.to_{s}") for s in "qkv"]
        fused = {n: (np.concatenate([w[n][0] for w in qkv], axis=-1),
                     f"{p}.to_q/k/v.{'weight' if n == 'kernel' else n}") for n in ("kernel", "bias")}
        return {"GroupNorm_0": norm(p + ".group_norm"), "Dense_0": fused, "Dense_1": linear(p + ".to_out.0")}

    def embed(p):
        table = get(p + ".weight")  # jaxdiff's table has one more row: the null label of guidance (zeros)
        return {"embedding": (np.concatenate([table, np.zeros_like(table[:1])]), p + ".weight")}

    kinds = {"conv": conv, "linear": linear, "norm": norm, "resblock": resblock, "attention": attention,
             "embed": embed}
    tree: dict = {}
    for path, prefix, kind in _torch_order(config):
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = kinds[kind](prefix)
    extra = sorted(set(sd) - used)
    if extra:
        raise ValueError(f"diffusers state dict: {len(extra)} tensors that jaxdiff's U-Net of this config does not "
                         f"have, e.g. {extra[:3]} (is the config.json the checkpoint's own?)")
    import jax

    is_leaf = lambda v: isinstance(v, tuple)
    params = jax.tree_util.tree_map(lambda v: v[0], tree, is_leaf=is_leaf)
    origin = jax.tree_util.tree_map(lambda v: v[1], tree, is_leaf=is_leaf)
    _check_shapes(params, origin, config)
    return jax.tree_util.tree_map(lambda v: np.asarray(v, dtype), params)


def _check_shapes(params, origin, config: UNetConfig):
    import jax
    import jax.numpy as jnp

    x = jnp.zeros((1, config.image_size, config.image_size, config.in_channels))
    want = jax.eval_shape(lambda: UNet(config).init(jax.random.key(0), x, jnp.zeros((1,))))["params"]
    got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    names = dict(jax.tree_util.tree_flatten_with_path(origin)[0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(want)[0]:
        where = "/".join(k.key for k in path)
        if path not in got:
            raise ValueError(f"diffusers state dict: no tensor for jaxdiff's {where}")
        if np.shape(got[path]) != leaf.shape:
            raise ValueError(f"diffusers state dict: tensor {names[path]!r} (jaxdiff's {where}) has shape "
                             f"{np.shape(got[path])} after conversion; the U-Net of this config needs {leaf.shape}")


# --------------------------------------------------------------------------------------------------------------
# schedulers

PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
VARIANCES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
             "fixed_large_log": "fixed_large", "learned_range": "learned_range"}
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}


def scheduler_from_diffusers(cfg: dict) -> dict:
    """jaxdiff settings of a diffusers ``DDPMScheduler`` / ``DDIMScheduler`` config: ``schedule`` and
    ``schedule_kwargs`` (for :func:`jaxdiff.schedules.get_schedule`), ``num_steps`` (T), ``prediction``,
    ``variance``, ``clip_x0`` (0 = off) and ``spacing``. Errors name a setting jaxdiff cannot reproduce."""
    T = int(cfg.get("num_train_timesteps", 1000))
    if cfg.get("trained_betas") is not None:
        raise ValueError("diffusers scheduler config: trained_betas; build the schedule with "
                         "jaxdiff.schedules.from_betas(trained_betas) instead")
    name = _need(cfg, "beta_schedule", tuple(BETA_SCHEDULES), "linear")
    kwargs: dict[str, Any] = {}
    if name in ("linear", "scaled_linear"):
        start, end = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
        scale = T / 1000.0 if name == "linear" else 1.0  # jaxdiff's linear betas are scaled by 1000 / T
        kwargs.update(beta_start=start * scale, beta_end=end * scale)
    if cfg.get("rescale_betas_zero_snr"):
        kwargs["zero_terminal_snr"] = True
    if cfg.get("thresholding"):
        raise ValueError("diffusers scheduler config: thresholding=True (Imagen's dynamic thresholding) has no "
                         "jaxdiff equivalent; allowed: False (clip_sample clips x0 to a fixed range)")
    if int(cfg.get("steps_offset", 0)) != 0:
        raise ValueError(f"diffusers scheduler config: steps_offset={cfg['steps_offset']}; jaxdiff's spacings "
                         "correspond to steps_offset=0 (pass an explicit ts grid for shifted steps)")
    prediction = PREDICTIONS[_need(cfg, "prediction_type", tuple(PREDICTIONS), "epsilon")]
    variance = VARIANCES[_need(cfg, "variance_type", tuple(VARIANCES), "fixed_small")]
    clip = float(cfg.get("clip_sample_range", 1.0)) if cfg.get("clip_sample", True) else 0.0
    spacing = {"leading": "leading", "trailing": "trailing", "linspace": "uniform"}[
        _need(cfg, "timestep_spacing", ("leading", "trailing", "linspace"), "leading")]
    return dict(schedule=BETA_SCHEDULES[name], schedule_kwargs=kwargs, num_steps=T, prediction=prediction,
                variance=variance, clip_x0=clip, spacing=spacing)


# --------------------------------------------------------------------------------------------------------------
# checkpoint directories

def _read_json(path):
    with open(path) as f:
        return json.load(f)


def find_diffusers_unet(directory: str) -> tuple[str, str, str | None]:
    """``(config.json, weights, scheduler_config.json or None)`` of a diffusers UNet2DModel checkpoint: a model
    directory (as ``google/ddpm-cifar10-32``) or a pipeline directory with ``unet/`` and ``scheduler/``."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"--from_diffusers {directory!r}: no such directory (download the checkpoint, "
                                "e.g. huggingface-cli download google/ddpm-cifar10-32 --local-dir DIR)")
    unet_dir = os.path.join(directory, "unet") if os.path.isdir(os.path.join(directory, "unet")) else directory
    config = os.path.join(unet_dir, "config.json")
    if not os.path.exists(config):
        raise FileNotFoundError(f"{directory}: no config.json (nor unet/config.json) of a diffusers UNet2DModel")
    weights = next((os.path.join(unet_dir, w) for w in WEIGHT_FILES if os.path.exists(os.path.join(unet_dir, w))),
                   None)
    if weights is None:
        raise FileNotFoundError(f"{unet_dir}: none of {list(WEIGHT_FILES)}")
    sched = next((p for p in (os.path.join(directory, "scheduler", "scheduler_config.json"),
                              os.path.join(directory, "scheduler_config.json")) if os.path.exists(p)), None)
    return config, weights, sched


def load_diffusers_unet(directory: str, dtype=np.float32):
    """``(UNetConfig, params, scheduler settings)`` of a downloaded diffusers checkpoint directory; without a
    scheduler config, diffusers' ``DDPMScheduler`` defaults (linear betas 1e-4 .. 0.02, T = 1000)."""
    config_path, weights, sched_path = find_diffusers_unet(directory)
    sched = scheduler_from_diffusers(_read_json(sched_path) if sched_path else {})
    config = unet_config_from_diffusers(_read_json(config_path), num_train_timesteps=sched["num_steps"])
    if config.learned_variance and sched["variance"] != "learned_range":
        sched["variance"] = "learned_range"
    params = params_from_diffusers(load_state_dict(weights), config, dtype)
    return config, params, sched
