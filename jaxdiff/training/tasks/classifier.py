"""The noise-aware classifier task (``config.task = "classifier"``; its section is ``classifier``): p(y | x_t, t)
for classifier guidance (Dhariwal & Nichol 2021), the U-Net's encoder with a pooled head, trained by the
cross-entropy on noised labelled data (:func:`jaxdiff.models.classifier.make_classifier_loss`).
"""

from __future__ import annotations

from jaxdiff.models.classifier import NoisyClassifier, make_classifier_loss
from jaxdiff.training.build import build_pipeline, build_schedule, unet_config
from jaxdiff.training.step import batch_loss
from jaxdiff.training.tasks.base import Task, init_params, inputs


def build_classifier(config):
    return NoisyClassifier(unet_config(config), num_classes=config.classifier.num_classes)


def _loss(config, model, teacher):
    del teacher
    return batch_loss(make_classifier_loss(lambda p, x_t, t: model.apply({"params": p}, x_t, t),
                                           build_schedule(config), config.classifier.t_min))


def _check_input(config, model, shape):
    if not config.data.use_labels:
        raise ValueError("the classifier task needs labels: set data.use_labels=True")
    unet_config(config).check_input(shape)


CLASSIFIER = Task(
    model=build_classifier, init=init_params, loss=_loss, data=lambda config: build_pipeline(config),
    check_input=_check_input, prepare=lambda config: lambda b, step: {**inputs(b), "label": b["label"]},
    grid=lambda config, model: None, fields=("classifier",), product="classifier")
