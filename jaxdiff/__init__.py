"""jaxdiff: diffusion models in JAX/Flax.

Pure functions for schedules (:mod:`jaxdiff.schedules`), the forward process (:mod:`jaxdiff.forward`),
parameterizations (:mod:`jaxdiff.parameterization`), losses (:mod:`jaxdiff.losses`) and samplers
(:mod:`jaxdiff.samplers`); Flax networks in :mod:`jaxdiff.models`; training in :mod:`jaxdiff.training`.
"""

__version__ = "0.1.0"
