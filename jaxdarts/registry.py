"""The method registry: methods found by name (``cfg.method``), at the bottom of the package.

A method is a module ``jaxdarts.methods.<name>`` that defines ``METHOD`` (a
:class:`jaxdarts.contract.Method`). :func:`names` lists those modules without importing
them and :func:`get` imports the one asked for, so the engine (config, task, runner,
search) and the tools above it look methods up here and import no method module, and no
module of the engine imports the ``jaxdarts.methods`` package, which sits above it (its
modules import the engine). Modules whose name starts with ``_`` are shared helpers.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

from jaxdarts.contract import Method

PACKAGE = "jaxdarts.methods"


def names() -> tuple[str, ...]:
    """The method modules of :data:`PACKAGE` (each defines ``METHOD``)."""
    path = importlib.util.find_spec(PACKAGE).submodule_search_locations
    return tuple(sorted(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_")))


def get(name: str) -> Method:
    """The :class:`Method` called ``name``; ValueError naming the accepted ones otherwise."""
    if not isinstance(name, str) or name not in names():
        raise ValueError(f"unknown method {name!r}; accepted: {', '.join(names())}")
    method = importlib.import_module(f"{PACKAGE}.{name}").METHOD
    if method.name != name:
        raise ValueError(f"module {PACKAGE}.{name} defines METHOD named {method.name!r}")
    return method
