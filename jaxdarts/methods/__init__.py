"""Methods as plug-ins: one module per paper, found by name (``cfg.method``).

A method module defines ``METHOD``, a :class:`jaxdarts.contract.Method` (the data the
engine consumes: architecture gradient, architecture optimiser, how alpha becomes mixing
weights, extra architecture parameters, the weight step's mixing weights, traced schedule
values, update order, discretisation, hooks, program, report figures) and owns its config
section ``cfg.<name>`` (defaults from ``METHOD.config``, checked by ``METHOD.validate``).
The engine (:mod:`jaxdarts.task`, :mod:`jaxdarts.runner`, :mod:`jaxdarts.search`) imports
no method; this registry imports a method module only when its name is asked for, so
adding a method means adding a module here and a config file (``configs/<file>.py`` with
a ``:quick`` variant, which the test battery finds), and touches no engine file.

:func:`names` lists them; each module's docstring says what it supplies and where it
follows the paper or the reference code. Modules whose name starts with ``_`` are shared
helpers, not methods."""

from __future__ import annotations

import importlib
import pkgutil

from jaxdarts.contract import Method

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
