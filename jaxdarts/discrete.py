"""Discrete networks: a derived architecture as a supernet that runs only its chosen ops.

A one-hot alpha in the search supernet selects one op per edge, but the supernet still
computes every op of every edge and multiplies the others by zero. :func:`discrete_space`
turns the one-hot choice into a space of its own (one op per kept edge, registered under a
name made of its content, so a second process finds the same space), and
``Supernet(discrete_space(...))`` computes the same function as the search supernet at that
one-hot alpha with the other ops' parameters and compute left out: a cell of skips and
pools costs a fraction of one of separable convolutions. Its mixing weights are ones
(:func:`unit_weights`, passed with ``normalized=True``).

:func:`inherit` maps the search supernet's variables onto the discrete network's (the
chosen ops' parameters and BatchNorm statistics, edge by edge): the tests check with it that
both networks give the same logits and gradients, and it warm-starts a discrete network from
a search (weight inheritance).
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core import unfreeze

from jaxdarts import spaces as spaces_lib


def choice(space, alpha) -> dict[str, tuple[str | None, ...]]:
    """Per cell type, the op of each edge where the (one-hot or not) ``alpha`` row is
    positive at its largest real slot, ``None`` for an edge whose row is all zero (an edge
    the architecture does not keep)."""
    space = spaces_lib.get(space)
    out = {}
    for t in space.cell_types:
        a = np.asarray(alpha[t], np.float64)
        if a.ndim != 2:
            raise ValueError(f"discrete networks take one alpha per cell type; {t!r} has shape {a.shape}")
        mask = space.mask(t)
        a = np.where(mask, a, -np.inf)
        names = space.padded_ops(t)
        out[t] = tuple(names[e][int(np.argmax(a[e]))] if np.any(a[e] > 0) else None for e in range(len(a)))
    return out


def discrete_space(space, alpha) -> spaces_lib.SearchSpace:
    """The space whose only architecture is ``alpha``'s choice (:func:`choice`): the kept
    edges with one op each, the same topology, macro and node count. Registered once under
    ``'<space>[normal ops|reduce ops]'``."""
    space = spaces_lib.get(space)
    ch = choice(space, alpha)
    kept = [e for e in range(space.num_edges) if all(ch[t][e] is not None for t in space.cell_types)]
    if any((ch[t][e] is None) != (e not in kept) for t in space.cell_types for e in range(space.num_edges)):
        raise ValueError("discrete_space needs the same kept edges in every cell type; alpha keeps "
                         + "; ".join(f"{t}: {[e for e, o in enumerate(ch[t]) if o]}" for t in space.cell_types))
    edges = tuple(space.edges[e] for e in kept)
    ops = {t: tuple((ch[t][e],) for e in kept) for t in space.cell_types}
    name = f"{space.name}[" + "|".join(",".join(f"{o}@{space.edges[e][0]}.{space.edges[e][1]}" for e, o in
                                                 zip(kept, (ch[t][e] for e in kept))) for t in space.cell_types) + "]"
    if name in spaces_lib.NAMES:
        return spaces_lib.get(name)
    return spaces_lib.register(spaces_lib.SearchSpace(name, ops, edges, macro=space.macro, steps=space.steps,
                                                      derive="all", none_in_argmax=space.none_in_argmax))


def unit_weights(space) -> dict:
    """The discrete network's mixing weights: 1 on every (single-op) edge."""
    space = spaces_lib.get(space)
    return {t: jnp.ones(space.alpha_shapes()[t], jnp.float32) for t in space.cell_types}


_GROUP = re.compile(r"^edges((?:_\d+)+)$")


def _group_edges(name: str):
    m = _GROUP.match(name)
    return None if m is None else [int(i) for i in m.group(1).split("_")[1:]]


def inherit(variables, template, full_space, disc_space) -> dict:
    """The search supernet's ``variables`` (any edge loop) mapped onto the discrete
    network's ``template`` (its ``init`` output or ``eval_shape``): every variable of an
    edge group takes the rows of the same op on the same ``(node, input)`` edges of the
    same cell; everything else (stem, preprocessing, classifier) is copied."""
    full_space, disc_space = spaces_lib.get(full_space), spaces_lib.get(disc_space)
    out = {}
    for coll, tree in template.items():
        src = traverse_util.flatten_dict(unfreeze(variables[coll]))
        dst = {}
        for path, leaf in traverse_util.flatten_dict(unfreeze(tree)).items():
            ids = _group_edges(path[1]) if len(path) > 2 else None
            if ids is None:
                dst[path] = src[path]
                continue
            rows = []
            for j in ids:
                e = full_space.edge_index(*disc_space.edges[j])
                hit = [(k, _group_edges(k[1]).index(e)) for k in src
                       if k[0] == path[0] and k[2:] == path[2:] and _group_edges(k[1]) and e in _group_edges(k[1])]
                if len(hit) != 1:
                    raise ValueError(f"no single source for {'/'.join(path)} (edge {disc_space.edges[j]}): {hit}")
                rows.append(src[hit[0][0]][hit[0][1]])
            dst[path] = jnp.stack(rows).reshape(leaf.shape)
        out[coll] = traverse_util.unflatten_dict(dst)
    return out
