"""jaxdarts: differentiable architecture search (DARTS and descendants) in JAX/Flax.

Public API (stable): ``jaxdarts.spaces.get``, :class:`Supernet`, :func:`init_alpha`,
:func:`mixing_weights`, ``jaxdarts.genotype`` (``Genotype``, ``derive``, ``to_alpha``),
:class:`NetworkCIFAR`, :class:`NetworkImageNet`, ``jaxdarts.hypergrad`` (estimators),
``jaxdarts.analysis`` (Hessians, eigenvalues), ``jaxdarts.search`` (the engine's public
names and programs: task, step, runner, hook events; split by role into
``jaxdarts.contract``, the plug-in contract, ``jaxdarts.task`` and ``jaxdarts.runner``),
``jaxdarts.methods`` (the method registry: ``methods.get(name)``).
"""

from jaxdarts import genotype, hypergrad, ops, spaces
from jaxdarts.networks import NetworkCIFAR, NetworkImageNet
from jaxdarts.supernet import Supernet, count_params, init_alpha, mixing_weights

__all__ = ["genotype", "hypergrad", "ops", "spaces", "Supernet", "init_alpha", "mixing_weights",
           "count_params", "NetworkCIFAR", "NetworkImageNet"]
__version__ = "0.1.0"
