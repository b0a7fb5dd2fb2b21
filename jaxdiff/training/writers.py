"""Metric writers with clu's interface (write_scalars / write_images / flush / close).

clu's ``metric_writers`` package imports TensorFlow when loaded, which jaxdiff does not need, so the
TensorBoard event files are written with tensorboardX instead; every scalar is also logged.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("jaxdiff.metrics")


class MetricWriter:
    """TensorBoard event files in ``logdir`` (process 0) plus log lines; ``just_logging`` skips files."""

    def __init__(self, logdir: str, just_logging: bool = False):
        self._tb = None
        if not just_logging:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir)

    def write_scalars(self, step: int, scalars: dict):
        log.info("[%d] %s", step, ", ".join(f"{k}={float(v):.5g}" for k, v in scalars.items()))
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, float(v), step)

    def write_images(self, step: int, images: dict):
        """``images``: name -> uint8 or [0, 1] float array ``[N, H, W, C]``."""
        if self._tb is None:
            return
        for k, v in images.items():
            v = np.asarray(v)
            if v.dtype != np.uint8:
                v = (np.clip(v, 0, 1) * 255).astype(np.uint8)
            self._tb.add_images(k, v, step, dataformats="NHWC")

    def flush(self):
        if self._tb is not None:
            self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()


def create_default_writer(logdir: str, just_logging: bool = False) -> MetricWriter:
    return MetricWriter(logdir, just_logging)
