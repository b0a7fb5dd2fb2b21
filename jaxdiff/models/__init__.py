"""Flax (linen) networks: the 2-D / 1-D U-Net and shared blocks."""

from jaxdiff.models.unet import UNet, UNetConfig, count_params, ddpm_cifar10_config

__all__ = ["UNet", "UNetConfig", "count_params", "ddpm_cifar10_config"]
