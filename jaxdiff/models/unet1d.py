"""The 1-D U-Net for audio and time series: the 2-D U-Net's module with ``dims = 1`` (Conv1D, 1-D
up/downsampling, attention over positions), so time embedding, class/context conditioning, learned
variance, scale-shift norm and skip rescaling are the same code (``jaxdiff.models.layers``).

``UNet1D(unet1d_config(length=32, channels=1))(x [B, L, C], t [B], cond)`` -> ``[B, L, C_out]``.
"""

from __future__ import annotations

from jaxdiff.models.unet import UNet, UNetConfig


def unet1d_config(length: int, channels: int = 1, **overrides) -> UNetConfig:
    """A 1-D U-Net config for sequences of ``length`` with ``channels`` channels; ``attention_resolutions``
    are sequence lengths (e.g. 8 attends at length 8). Defaults suit short series (4 levels, base 32)."""
    base = dict(image_size=length, in_channels=channels, base_channels=32, channel_mult=(1, 2, 2),
                num_res_blocks=2, attention_resolutions=(length // 4,), num_heads=4, num_groups=8,
                scale_shift=True, dims=1)
    base.update(overrides)
    return UNetConfig(**base).validate()


class UNet1D(UNet):
    """:class:`UNet` checked to be one-dimensional."""

    def __post_init__(self):
        if self.config.dims != 1:
            raise ValueError(f"UNet1D needs config.dims = 1, got {self.config.dims}; use unet1d_config")
        super().__post_init__()
