"""Flax (linen) networks: the 2-D / 1-D U-Net and shared blocks."""

from jaxdiff.models.unet import UNet, UNetConfig, count_params, ddpm_cifar10_config
from jaxdiff.models.unet1d import UNet1D, unet1d_config

__all__ = ["UNet", "UNet1D", "UNetConfig", "count_params", "ddpm_cifar10_config", "unet1d_config"]
