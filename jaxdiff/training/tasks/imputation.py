"""Conditional imputation (CSDI; Tashiro et al. 2021), ``config.task = "imputation"``: the network sees the
observed values and their mask beside the noisy data (:class:`jaxdiff.models.imputation.ImputationNet`, a
backbone of 3 C input channels), each training example gets a random mask (random points, blocks or
forecast-shaped; ``imputation.*``) and the loss counts the unobserved entries only
(:func:`jaxdiff.imputation.make_conditional_loss`). Samplers impute in one pass
(:func:`jaxdiff.imputation.conditional_impute`).
"""

from __future__ import annotations

import dataclasses

from jaxdiff.imputation import check_mask_probs, make_conditional_loss
from jaxdiff.models.imputation import ImputationNet
from jaxdiff.training.build import build_model, build_network, text_enabled
from jaxdiff.training.step import batch_loss
from jaxdiff.training.tasks.diffusion import diffusion_method, make_denoising_loss


def network(config, cfg):
    """The backbone of 3 C input channels (noisy, observed, mask) and C outputs inside an ImputationNet."""
    inner = dataclasses.replace(cfg, in_channels=3 * cfg.in_channels,
                                out_channels=cfg.out_channels or cfg.in_channels)
    return ImputationNet(build_network(config, inner), cfg.in_channels)


def check(config):
    """The eps / x0 / v MSE on pixel (or series) data, without text, guidance dropout or latents; mask
    proportions and horizon valid."""
    im, d = config.imputation, config.diffusion
    unsupported = [(text_enabled(config), "text.enabled"), (d.p_uncond > 0, "diffusion.p_uncond > 0"),
               (d.loss_type != "mse", f"diffusion.loss_type={d.loss_type!r}"),
               (bool(config.latent.autoencoder), "latent.autoencoder")]
    bad = [name for on, name in unsupported if on]
    if bad:
        raise ValueError(f"config.task='imputation' cannot be combined with {', '.join(bad)}; a conditional "
                         "imputation model trains with loss_type='mse' on pixel (or series) data, without text")
    check_mask_probs(im.mask_probs)
    if not 0.0 < im.max_block <= 1.0:
        raise ValueError(f"imputation.max_block={im.max_block}; allowed: a fraction of each axis in (0, 1]")
    length = config.model.image_size
    if not isinstance(im.horizon, int) or not 0 <= im.horizon < length:
        raise ValueError(f"imputation.horizon={im.horizon!r}; allowed: an integer in [0, {length}) (0 = drawn "
                         "per example)")


def loss(config, model, teacher):
    del teacher
    im = config.imputation
    return batch_loss(make_conditional_loss(make_denoising_loss(config, model), tuple(im.mask_probs), im.horizon,
                                            im.max_block))


IMPUTATION = diffusion_method(model=lambda config: build_model(config, network)[0], loss=loss, check=check,
                              fields=("imputation",))
