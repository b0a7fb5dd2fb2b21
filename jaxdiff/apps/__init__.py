"""Applications above the library: load a trained workdir (or an imported checkpoint) and generate, evaluate or
forecast from it. They compose ``jaxdiff.training`` (restoring a run, its builders, generation) with
``jaxdiff.evaluation`` (metrics over arrays); neither of those imports the other or this package.

* :mod:`~jaxdiff.apps.evaluate`: a workdir's sample quality, label accuracy, bits/dim (``experiments.evaluate``);
* :mod:`~jaxdiff.apps.reconstruction`: an autoencoder workdir's reconstruction PSNR / SSIM;
* :mod:`~jaxdiff.apps.inception`: Inception FID / KID / precision-recall of a workdir, resumable in chunks;
* :mod:`~jaxdiff.apps.forecast`: probabilistic forecasts of a time-series workdir and their scores;
* :mod:`~jaxdiff.apps.diffusers`: a downloaded diffusers U-Net checkpoint as a jaxdiff run.
"""
