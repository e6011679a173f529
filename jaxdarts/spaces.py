"""Search spaces as data.

A :class:`SearchSpace` says which operations sit on which edge of which cell type, how
edges connect nodes (the topology), how alpha is shared (per cell type or per cell) and
which macro skeleton the supernet uses. Ragged per-edge op lists (RobustDARTS S1) are
padded to a rectangle of ``K = max ops per edge`` and masked, so the alpha of each cell
type is one dense ``(E, K)`` array (``(n_cells_of_type, E, K)`` for per-cell spaces) and
everything stays ``vmap``-able.

Conventions
-----------
* States of a DARTS cell: ``0 = c_{k-2}``, ``1 = c_{k-1}``, ``2.. = intermediate nodes``.
  Edge ``e = (node, input)``: intermediate ``node`` (0-based) takes state ``input``.
  DARTS order: node by node, input by input (14 edges for 4 nodes).
* NAS-Bench-201 cell: state 0 is the cell input, nodes 1..3; edge ``(node, input)``
  with ``node`` 0-based over the 3 computed nodes, output = last node.
* ``alpha[cell_type][..., e, k]`` is the logit of op ``ops[cell_type][e][k]``;
  padded slots (``mask == False``) get zero mixing weight and zero gradient.

Spaces (``get(name)``): ``darts``, ``darts_no_none`` (the DARTS space without ``none``:
SmoothDARTS's search space), RobustDARTS ``s1``-``s5``,
Amended-DARTS ``amended_s1`` (fixed edges) and ``amended_s2`` (20 cells, per-cell alpha),
``nb201``, and StacNAS ``stacnas_stage1``.

``s5`` is the paper's S5 (RobustDARTS Section 3): one intermediate node in both cell
types, its two edges choosing among ``sep_conv_3x3``, ``skip_connect`` and
``max_pool_3x3``: 3^4 = 81 architectures, small enough to evaluate all of them and
measure the regret of a search (``benchmarks/s5_regret.py``). The RobustDARTS *code*
names the full DARTS space ``s5`` (``src/spaces.py``); here that space is ``darts``.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
from flax.core import FrozenDict

from jaxdarts import ops as ops_lib

DARTS_EDGES = tuple((node, inp) for node in range(4) for inp in range(node + 2))
S5_EDGES = ((0, 0), (0, 1))
FIXED_EDGES = tuple((node, inp) for node in range(4) for inp in (0, node + 1))
NB201_EDGES = tuple((node, inp) for node in range(3) for inp in range(node + 1))
TINY_EDGES = tuple((node, inp) for node in range(2) for inp in range(node + 2))
"""A DARTS cell cut to 2 intermediate nodes: 5 edges (node 0 from the two cell inputs, node 1
from those and node 0)."""


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A cell-based search space.

    Attributes:
      name: registry name.
      ops: ``{cell_type: ((op, ...) per edge)}``; ragged lists allowed.
      edges: ``((node, input), ...)`` in alpha row order.
      macro: ``'darts'`` (2-input cells, stem, reductions at 1/3 and 2/3) or ``'nb201'``.
      steps: intermediate nodes per cell.
      per_cell: one alpha per cell (``layers`` cells) instead of one per cell type.
      layers: number of cells, required for per-cell spaces (None otherwise).
      derive: ``'top2'`` (keep the 2 strongest incoming edges per node, DARTS) or
        ``'all'`` (fixed-edge spaces keep every edge).
      none_in_argmax: the op of an edge is the argmax over all its ops, ``none``
        included (NAS-Bench-201's ``genotype()`` in AutoDL-Projects, SDARTS, DrNAS,
        BaLeNAS); False: over the non-``none`` ops (DARTS).
      cell_ops: per-cell spaces only: ``{cell_type: (per-edge op lists of each cell of
        that type, ...)}`` when the cells of a type search different ops (StacNAS stage 2
        with per-cell alphas); ``ops`` then holds the first cell's lists, K is the longest
        list of any cell, and :meth:`mask` is ``(n_cells_of_type, E, K)``.
    """

    name: str
    ops: Mapping[str, tuple[tuple[str, ...], ...]]
    edges: tuple[tuple[int, int], ...]
    macro: str = "darts"
    steps: int = 4
    per_cell: bool = False
    layers: int | None = None
    derive: str = "top2"
    none_in_argmax: bool = False
    cell_ops: Mapping[str, tuple[tuple[tuple[str, ...], ...], ...]] | None = None

    def __post_init__(self):
        object.__setattr__(self, "ops", FrozenDict({t: tuple(tuple(n) for n in v) for t, v in self.ops.items()}))
        object.__setattr__(self, "edges", tuple(tuple(e) for e in self.edges))
        for t, per_edge in self.ops.items():
            if len(per_edge) != len(self.edges):
                raise ValueError(f"space {self.name!r}: cell type {t!r} has {len(per_edge)} op lists "
                                 f"for {len(self.edges)} edges")
            for names in per_edge:
                ops_lib.check_ops(names)
                if len(set(names)) != len(names):
                    raise ValueError(f"space {self.name!r}: duplicate op in {names}")
        if self.per_cell and not self.layers:
            raise ValueError(f"per-cell space {self.name!r} needs `layers`")
        if self.cell_ops is not None:
            co = FrozenDict({t: tuple(tuple(tuple(n) for n in cell) for cell in v) for t, v in self.cell_ops.items()})
            object.__setattr__(self, "cell_ops", co)
            if not self.per_cell or set(co) != set(self.ops):
                raise ValueError(f"space {self.name!r}: cell_ops needs per_cell=True and the cell types of ops")
            for t, cells in co.items():
                if len(cells) != self.alpha_shapes()[t][0]:
                    raise ValueError(f"space {self.name!r}: cell_ops[{t!r}] has {len(cells)} cells; the "
                                     f"{self.layers}-cell network has {self.alpha_shapes()[t][0]} {t} cells")
                for per_edge in cells:
                    if len(per_edge) != len(self.edges):
                        raise ValueError(f"space {self.name!r}: a {t} cell has {len(per_edge)} op lists for "
                                         f"{len(self.edges)} edges")
                    for names in per_edge:
                        ops_lib.check_ops(names)
                        if len(set(names)) != len(names):
                            raise ValueError(f"space {self.name!r}: duplicate op in {names}")

    @property
    def cell_types(self) -> tuple[str, ...]:
        return tuple(self.ops)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def num_ops(self) -> int:
        """K, the padded number of ops per edge."""
        k = max(len(n) for per_edge in self.ops.values() for n in per_edge)
        if self.cell_ops is not None:
            k = max(k, max(len(n) for cells in self.cell_ops.values() for c in cells for n in c))
        return k

    @property
    def num_inputs(self) -> int:
        return 2 if self.macro == "darts" else 1

    def padded_ops(self, cell_type: str, cell: int | None = None) -> tuple[tuple[str | None, ...], ...]:
        """Per-edge op names padded with ``None`` to length K (of the ``cell``-th cell of
        the type when the space has ``cell_ops``)."""
        K = self.num_ops
        lists = self.ops[cell_type] if self.cell_ops is None or cell is None else self.cell_ops[cell_type][cell]
        return tuple(tuple(n) + (None,) * (K - len(n)) for n in lists)

    def mask(self, cell_type: str) -> np.ndarray:
        """Boolean ``(E, K)`` mask of real (unpadded) op slots (``(n_cells, E, K)`` with
        ``cell_ops``)."""
        one = lambda rows: np.array([[n is not None for n in row] for row in rows])
        if self.cell_ops is not None:
            return np.stack([one(self.padded_ops(cell_type, i)) for i in range(len(self.cell_ops[cell_type]))])
        return one(self.padded_ops(cell_type))

    def cell_type_of(self, layer: int, layers: int) -> str:
        """Cell type of cell ``layer`` in a ``layers``-cell DARTS network."""
        if self.macro != "darts":
            return "normal"
        return "reduce" if layer in reduction_layers(layers) else "normal"

    def alpha_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of each alpha array."""
        E, K = self.num_edges, self.num_ops
        if not self.per_cell:
            return {t: (E, K) for t in self.cell_types}
        types = [self.cell_type_of(i, self.layers) for i in range(self.layers)]
        return {t: (types.count(t), E, K) for t in self.cell_types}

    def num_alpha(self) -> int:
        return int(sum(np.prod(s) for s in self.alpha_shapes().values()))

    def inputs_of(self, node: int) -> tuple[int, ...]:
        return tuple(i for (n, i) in self.edges if n == node)

    def edge_index(self, node: int, inp: int) -> int:
        return self.edges.index((node, inp))


def reduction_layers(layers: int) -> tuple[int, int]:
    """Cells that reduce in a DARTS network of ``layers`` cells."""
    return (layers // 3, 2 * layers // 3)


def _same(names: tuple[str, ...], edges) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(names) for _ in edges)


_ABBR = {"skip": "skip_connect", "sep3": "sep_conv_3x3", "sep5": "sep_conv_5x5", "dil3": "dil_conv_3x3",
         "dil5": "dil_conv_5x5", "max": "max_pool_3x3", "avg": "avg_pool_3x3"}


def _s1(pairs: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(_ABBR[a] for a in p.split(",")) for p in pairs.split())


_S1_NORMAL = _s1("skip,dil3 skip,dil5 skip,dil5 skip,sep3 skip,dil3 max,skip skip,sep3 "
                 "skip,sep3 skip,dil3 skip,sep3 max,skip skip,dil3 dil3,dil5 dil3,dil5")
_S1_REDUCE = _s1("max,avg max,dil3 max,avg max,avg skip,dil5 max,avg max,sep3 "
                 "skip,dil3 skip,dil5 max,avg max,avg skip,dil5 skip,dil5 skip,dil5")


def _darts_like(name, primitives, edges=DARTS_EDGES, **kw) -> SearchSpace:
    per_edge = _same(tuple(primitives), edges)
    return SearchSpace(name, {"normal": per_edge, "reduce": per_edge}, edges, **kw)


_SPACES: dict[str, SearchSpace] = {
    "darts": _darts_like("darts", ops_lib.PRIMITIVES),
    # SmoothDARTS (SDARTS-RS/ADV) searches the DARTS space with 'none' commented out of its
    # PRIMITIVES (sota/cnn/spaces.py): 7 ops per edge.
    "darts_no_none": _darts_like("darts_no_none", tuple(o for o in ops_lib.PRIMITIVES if o != "none")),
    "s1": SearchSpace("s1", {"normal": _S1_NORMAL, "reduce": _S1_REDUCE}, DARTS_EDGES),
    "s2": _darts_like("s2", ("skip_connect", "sep_conv_3x3")),
    "s3": _darts_like("s3", ("none", "skip_connect", "sep_conv_3x3")),
    "s4": _darts_like("s4", ("noise", "sep_conv_3x3")),
    # S2's ops on a 2-node DARTS cell: every part of the DARTS macro (two inputs, a node with a
    # choice of 2 of 3 inputs, reduction cells) in programs ~40% smaller than s2's, for smoke
    # runs and tests (the test suite's tiny_config).
    "tiny": _darts_like("tiny", ("skip_connect", "sep_conv_3x3"), TINY_EDGES, steps=2),
    "s5": _darts_like("s5", ("sep_conv_3x3", "skip_connect", "max_pool_3x3"), S5_EDGES, steps=1),
    "amended_s1": _darts_like("amended_s1", ops_lib.PRIMITIVES, FIXED_EDGES, derive="all"),
    "amended_s2": _darts_like("amended_s2", ("skip_connect", "sep_conv_3x3"), FIXED_EDGES,
                              derive="all", per_cell=True, layers=20),
    "nb201": SearchSpace("nb201", {"normal": _same(ops_lib.NB201_PRIMITIVES, NB201_EDGES)}, NB201_EDGES,
                         macro="nb201", steps=3, derive="all", none_in_argmax=True),
    "stacnas_stage1": _darts_like(
        "stacnas_stage1", ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3", "none")),
}
_ALIASES: dict[str, str] = {}

NAMES = tuple(_SPACES) + tuple(_ALIASES)


def get(name: str) -> SearchSpace:
    """Returns the registered search space ``name`` (see :data:`NAMES`)."""
    if isinstance(name, SearchSpace):
        return name
    key = _ALIASES.get(name, name)
    if key not in _SPACES:
        raise ValueError(f"unknown search space {name!r}; accepted: {', '.join(NAMES)}")
    return _SPACES[key]


def register(space: SearchSpace) -> SearchSpace:
    """Adds a user-defined space to the registry (name must be new)."""
    if space.name in _SPACES or space.name in _ALIASES:
        raise ValueError(f"search space {space.name!r} already registered")
    _SPACES[space.name] = space
    global NAMES
    NAMES = tuple(_SPACES) + tuple(_ALIASES)
    return space
