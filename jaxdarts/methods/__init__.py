"""Methods as plug-ins: one module per paper, found by name (``cfg.method``).

A method module defines ``METHOD``, a :class:`jaxdarts.contract.Method` (the data the
engine consumes: architecture gradient, architecture optimiser, how alpha becomes mixing
weights, extra architecture parameters, the weight step's mixing weights, traced schedule
values, update order, discretisation, hooks, program, report figures) and owns its config
section ``cfg.<name>`` (defaults from ``METHOD.config``, checked by ``METHOD.validate``).
The engine (:mod:`jaxdarts.task`, :mod:`jaxdarts.runner`, :mod:`jaxdarts.search`) imports
no method and not this package: it looks methods up in :mod:`jaxdarts.registry` (re-exported
here as ``get`` and ``names``), which imports a method module only when its name is asked for, so
adding a method means adding a module here and a config file (``configs/<file>.py`` with
a ``:quick`` variant, which the test battery finds), and touches no engine file.

:func:`names` lists them; each module's docstring says what it supplies and where it
follows the paper or the reference code. Modules whose name starts with ``_`` are shared
helpers, not methods."""

from __future__ import annotations

from jaxdarts.contract import Method
from jaxdarts.registry import get, names

__all__ = ["Method", "get", "names"]
