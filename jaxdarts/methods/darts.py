"""DARTS (Liu et al., 2019): the engine's defaults as a method.

Architecture gradient from the estimator named in ``cfg.estimator`` (first order, exact
``unrolled`` second order, the reference's ``finite_difference``, ``implicit``, ...; see
:mod:`jaxdarts.hypergrad`), PyTorch Adam on alpha, softmax mixing weights, the reference
order (architecture step, then the weight step at the new alpha), top-2 derivation. No
config section of its own; ``cfg.num_seeds > 1`` runs several seeds as one ``vmap``-ed
search (:func:`jaxdarts.search.run_single`).
"""

from jaxdarts.contract import Method

METHOD = Method(name="darts")
