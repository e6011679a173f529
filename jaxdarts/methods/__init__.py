"""Methods as plug-ins: one module per paper, found by name (``cfg.method``).

A method module defines ``METHOD``, a :class:`jaxdarts.search.Method` (the data the
engine consumes: architecture gradient, architecture optimiser, mixing weights of the
weight step, update order, discretisation, hooks, program) and owns its config section
``cfg.<name>`` (defaults from ``METHOD.config``, checked by ``METHOD.validate``). The
engine (:mod:`jaxdarts.search`) imports no method; this registry imports a method module
only when its name is asked for, so adding a method means adding a module here and a
config file, and touches no engine file.

Today: ``darts`` (DARTS first/second order and every estimator of
:mod:`jaxdarts.hypergrad`), ``amended`` (Amended-DARTS), ``robustdarts`` (RobustDARTS:
DARTS-ES, DARTS-ADA, R-DARTS), ``balenas`` (BaLeNAS: ``arch_tx`` is VAdam, ``arch_grad``
vmaps the estimator over samples of q and passes the squared-gradient mean as
``tx_args``, a hook adds the training-free selection), ``msdarts`` and ``sdarts``
(MS-DARTS mean-shift, SDARTS-RS/ADV: ``mix`` returns the perturbed mixing weights of the
weight step from the step's batches and key, ``schedule`` gives the traced radius and
bandwidth, ``sweepable`` lets ``Sweep('msdarts.bandwidth', ...)`` vary them in one
program). Modules whose name starts with ``_`` are shared helpers, not methods.

How the coming method plugs in (no engine change needed): ``stacnas`` takes
``update_order='simultaneous'`` with a one-level ``arch_grad`` (training loss at the same
point as the weight gradient), and a ``program`` of two stages, each a
:func:`jaxdarts.search.run_single` in its own sub-workdir with a task built by
:meth:`jaxdarts.search.SearchTask.from_arrays` / ``from_config`` on the stage's space
(stage 2's space derived from stage 1's genotype), ``max_epochs`` counted across stages.
"""

from __future__ import annotations

import importlib
import pkgutil

from jaxdarts.search import Method

__all__ = ["Method", "get", "names"]


def names() -> tuple[str, ...]:
    """The method modules in this package (each defines ``METHOD``)."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def get(name: str) -> Method:
    """The :class:`Method` called ``name``; ValueError naming the accepted ones otherwise."""
    if not isinstance(name, str) or name not in names():
        raise ValueError(f"unknown method {name!r}; accepted: {', '.join(names())}")
    method = importlib.import_module(f"{__name__}.{name}").METHOD
    if method.name != name:
        raise ValueError(f"module jaxdarts.methods.{name} defines METHOD named {method.name!r}")
    return method
