"""Discrete architectures (genotypes): derivation from alpha, one-hot alphas, formats.

A :class:`Genotype` lists, per cell type, ``(op, input_state)`` pairs node by node (two
per node for DARTS cells; NAS-Bench-201 cells list all 6 edges, 1+2+3 per node). For
per-cell spaces (``amended_s2``) ``normal`` and ``reduce`` hold one such list per cell of
that type, in network order.

Formats: the PyTorch DARTS text (``Genotype(normal=[('sep_conv_3x3', 0), ...],
normal_concat=[2, 3, 4, 5], ...)``, read by the reference ``train.py`` with ``eval``),
JSON, and the NAS-Bench-201 arch string (``|op~0|+|op~0|op~1|+|...|``).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from jaxdarts import ops as ops_lib
from jaxdarts import spaces as spaces_lib
from jaxdarts import supernet as supernet_lib

Gene = tuple[tuple[str, int], ...]


def _gene(x) -> Gene:
    return tuple((str(op), int(i)) for op, i in x)


@dataclasses.dataclass(frozen=True)
class Genotype:
    """Immutable discrete architecture.

    Attributes:
      normal, reduce: ``((op, input), ...)``; for per-cell genotypes a tuple of those,
        one per cell of the type.
      normal_concat, reduce_concat: states concatenated into the cell output.
    """

    normal: tuple
    normal_concat: tuple[int, ...] = (2, 3, 4, 5)
    reduce: tuple = ()
    reduce_concat: tuple[int, ...] = (2, 3, 4, 5)

    def __post_init__(self):
        for f in ("normal", "reduce"):
            v = getattr(self, f)
            if v and isinstance(v[0][0], str):
                object.__setattr__(self, f, _gene(v))
            else:
                object.__setattr__(self, f, tuple(_gene(c) for c in v))
            for op, _ in self.all_genes(f):
                ops_lib.check_ops([op])
        object.__setattr__(self, "normal_concat", tuple(int(i) for i in self.normal_concat))
        object.__setattr__(self, "reduce_concat", tuple(int(i) for i in self.reduce_concat))

    @property
    def per_cell(self) -> bool:
        return bool(self.normal) and not isinstance(self.normal[0][0], str)

    def all_genes(self, cell_type: str):
        v = getattr(self, cell_type)
        if v and not isinstance(v[0][0], str):
            return [g for c in v for g in c]
        return list(v)

    def cell(self, cell_type: str, index: int = 0) -> Gene:
        """The gene of a cell (``index``-th cell of its type for per-cell genotypes)."""
        v = getattr(self, cell_type)
        return v[index] if self.per_cell else v

    def canonical(self) -> "Genotype":
        """The same architecture with each node's two entries sorted by input (the
        reference lists them strongest first; the network computed is the same)."""

        def canon(gene):
            return tuple(e for node in range(len(gene) // 2) for e in sorted(gene[2 * node:2 * node + 2],
                                                                               key=lambda t: (t[1], t[0])))

        fix = (lambda v: tuple(canon(c) for c in v)) if self.per_cell else canon
        return dataclasses.replace(self, normal=fix(self.normal), reduce=fix(self.reduce))

    # ----------------------------------------------------------------- formats
    def to_pytorch_str(self) -> str:
        """DARTS text format (``genotypes.py`` / ``eval``-able by the reference)."""
        if self.per_cell:
            raise ValueError("per-cell genotypes have no PyTorch DARTS text form; use to_json()")

        def g(x):
            return "[" + ", ".join(f"('{op}', {i})" for op, i in x) + "]"

        return (f"Genotype(normal={g(self.normal)}, normal_concat={list(self.normal_concat)}, "
                f"reduce={g(self.reduce)}, reduce_concat={list(self.reduce_concat)})")

    @classmethod
    def from_pytorch_str(cls, s: str) -> "Genotype":
        """Parses the DARTS text format (concat as a list or ``range(a, b)``). Safe: no eval."""
        try:
            tree = ast.parse(s.strip(), mode="eval").body
        except SyntaxError as e:
            raise ValueError(f"malformed genotype string {s[:80]!r}: {e.msg}") from None
        if not (isinstance(tree, ast.Call) and getattr(tree.func, "id", getattr(tree.func, "attr", None)) == "Genotype"):
            raise ValueError(f"malformed genotype string {s[:80]!r}: expected 'Genotype(normal=..., "
                             "normal_concat=..., reduce=..., reduce_concat=...)'")
        fields = ("normal", "normal_concat", "reduce", "reduce_concat")
        values = dict(zip(fields, tree.args))
        values.update({k.arg: k.value for k in tree.keywords})
        if set(values) != set(fields):
            raise ValueError(f"malformed genotype string: fields {sorted(values)}; expected {list(fields)}")
        out = {}
        for k, node in values.items():
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "range":
                out[k] = tuple(range(*[ast.literal_eval(a) for a in node.args]))
            else:
                try:
                    out[k] = ast.literal_eval(node)
                except ValueError:
                    raise ValueError(f"malformed genotype string: field {k!r} is not a literal") from None
        try:
            return cls(**out)
        except (TypeError, IndexError) as e:
            raise ValueError(f"malformed genotype string: {e}") from None

    def to_dict(self) -> dict:
        return {"normal": _json_gene(self.normal), "normal_concat": list(self.normal_concat),
                "reduce": _json_gene(self.reduce), "reduce_concat": list(self.reduce_concat)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str | dict) -> "Genotype":
        d = json.loads(s) if isinstance(s, str) else s
        try:
            return cls(**d)
        except TypeError as e:
            raise ValueError(f"malformed genotype JSON: {e}") from None

    def to_nb201_str(self) -> str:
        """NAS-Bench-201 arch string (``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``) of the
        ``normal`` gene (6 edges: 1+2+3 per node, inputs in increasing order)."""
        g = self.normal
        if self.per_cell or len(g) != 6 or [i for _, i in g] != [0, 0, 1, 0, 1, 2]:
            raise ValueError(f"not a NAS-Bench-201 cell (6 edges with inputs 0 | 0 1 | 0 1 2): {g}")
        out, pos = [], 0
        for n in range(1, 4):
            out.append("|" + "|".join(f"{op}~{i}" for op, i in g[pos:pos + n]) + "|")
            pos += n
        return "+".join(out)

    @classmethod
    def from_nb201_str(cls, s: str) -> "Genotype":
        """Parses a NAS-Bench-201 arch string; ValueError naming what is wrong."""
        nodes = s.strip().split("+") if isinstance(s, str) else []
        if len(nodes) != 3:
            raise ValueError(f"malformed NAS-Bench-201 string {s!r}: expected 3 nodes '|op~0|+|op~0|op~1|+|...|'")
        gene = []
        for n, node in enumerate(nodes, start=1):
            parts = node.split("|")
            if len(parts) != n + 2 or parts[0] or parts[-1]:
                raise ValueError(f"malformed NAS-Bench-201 string {s!r}: node {n} {node!r} needs {n} entries "
                                 "'|op~j|...|'")
            for j, item in enumerate(parts[1:-1]):
                op, _, inp = item.partition("~")
                if op not in ops_lib.NB201_PRIMITIVES or inp != str(j):
                    raise ValueError(f"malformed NAS-Bench-201 string {s!r}: entry {item!r} of node {n}; expected "
                                     f"'op~{j}' with op one of {', '.join(ops_lib.NB201_PRIMITIVES)}")
                gene.append((op, j))
        return cls(normal=tuple(gene), normal_concat=(1, 2, 3), reduce=(), reduce_concat=())  # as derive()

    def render(self) -> str:
        """Human-readable listing of the cells, for logs."""
        lines = []
        types = [("normal", self.normal_concat), ("reduce", self.reduce_concat)]
        for t, concat in types:
            cells = getattr(self, t)
            if not cells:
                continue
            cells = cells if self.per_cell else (cells,)
            if not self.per_cell and [i for _, i in cells[0]] == [0, 0, 1, 0, 1, 2]:  # NAS-Bench-201 cell
                lines.append(f"NAS-Bench-201 cell {self.to_nb201_str()}:")
                g = cells[0]
                for node, first in ((1, 0), (2, 1), (3, 3)):
                    lines.append(f"  node {node} = " + " + ".join(f"{op}({i})" for op, i in g[first:first + node]))
                continue
            for ci, gene in enumerate(cells):
                tag = f"{t} cell" + (f" {ci}" if self.per_cell else "")
                lines.append(f"{tag} (output = concat{list(concat)}):")
                for node in range(len(gene) // 2):
                    a, b = gene[2 * node], gene[2 * node + 1]
                    lines.append(f"  node {node + 2} = {a[0]}({a[1]}) + {b[0]}({b[1]})")
        return "\n".join(lines)


def _json_gene(v):
    if v and not isinstance(v[0][0], str):
        return [[[op, i] for op, i in c] for c in v]
    return [[op, i] for op, i in v]


def _derive_cell(space, cell_type: str, w: np.ndarray, cell: int | None = None) -> Gene:
    padded = space.padded_ops(cell_type, cell)
    gene = []
    for node in range(space.steps):
        cands = []
        for e, (n, inp) in enumerate(space.edges):
            if n != node:
                continue
            real = [k for k, op in enumerate(padded[e])
                    if op is not None and (ops_lib.base_op(op) != "none" or space.none_in_argmax)]
            if not real:
                continue
            k_best = real[int(np.argmax(w[e, real]))]  # first maximum wins, as in DARTS
            # an alias (StacNAS's second skip, 'skip_connect@2') is its op in the genotype
            cands.append((float(w[e, k_best]), e, ops_lib.base_op(padded[e][k_best]), inp))
        if space.derive == "top2":
            cands = sorted(cands, key=lambda c: -c[0])[:2]  # stable: lower edge wins ties
        gene.extend((op, inp) for _, _, op, inp in cands)
    return tuple(gene)


def derive(space, alpha, *, normalized: bool = False) -> Genotype:
    """The discrete architecture encoded by ``alpha`` (DARTS ``genotype()``).

    Per node: keep the top-2 incoming edges ranked by their strongest non-``none`` op
    weight (all edges for fixed-edge spaces), and on each kept edge its strongest
    non-``none`` op (any op, ``none`` included, in spaces with ``none_in_argmax``:
    NAS-Bench-201). Ties go to the lower edge / op index, as in the reference.
    """
    space = spaces_lib.get(space)
    w = alpha if normalized else supernet_lib.mixing_weights(space, alpha)
    w = {t: np.asarray(v, np.float64) for t, v in w.items()}
    concat = tuple(range(space.num_inputs, space.num_inputs + space.steps))
    genes = {}
    for t in space.cell_types:
        if space.per_cell:
            genes[t] = tuple(_derive_cell(space, t, w[t][i], i) for i in range(w[t].shape[0]))
        else:
            genes[t] = _derive_cell(space, t, w[t])
    return Genotype(genes["normal"], concat, genes.get("reduce", ()), concat if "reduce" in genes else ())


def _to_alpha_cell(space, cell_type, gene: Sequence[tuple[str, int]], cell: int | None = None) -> np.ndarray:
    padded = space.padded_ops(cell_type, cell)
    out = np.zeros((space.num_edges, space.num_ops), np.float32)
    if space.derive == "top2":
        per_node = 2
        if len(gene) != per_node * space.steps:
            raise ValueError(f"genotype {cell_type} cell has {len(gene)} entries; space {space.name!r} "
                             f"expects {per_node * space.steps} (2 per node)")
        nodes = [i // 2 for i in range(len(gene))]
    else:
        nodes = [n for n, _ in space.edges]
        if len(gene) != len(nodes):
            raise ValueError(f"genotype {cell_type} cell has {len(gene)} entries; space {space.name!r} "
                             f"expects {len(nodes)} (one per edge)")
    for node, (op, inp) in zip(nodes, gene):
        if (node, inp) not in space.edges:
            raise ValueError(f"genotype edge {op}({inp}) into node {node} is not an edge of space "
                             f"{space.name!r}; inputs of that node: {list(space.inputs_of(node))}")
        e = space.edge_index(node, inp)
        if op not in padded[e]:
            raise ValueError(f"op {op!r} is not on edge {e} ({node}<-{inp}) of space {space.name!r}; "
                             f"accepted: {[o for o in padded[e] if o]}")
        out[e, padded[e].index(op)] = 1.0
    return out


def to_alpha(space, genotype: Genotype) -> dict:
    """One-hot mixing weights (``normalized=True`` input of the supernet) encoding
    ``genotype``: weight 1 on each selected (edge, op), 0 elsewhere (unselected edges
    contribute nothing), so the supernet computes exactly the discrete cell."""
    space = spaces_lib.get(space)
    out = {}
    for t in space.cell_types:
        if space.per_cell:
            cells = getattr(genotype, t)
            n = space.alpha_shapes()[t][0]
            if not genotype.per_cell or len(cells) != n:
                raise ValueError(f"space {space.name!r} needs a per-cell genotype with {n} {t} cells")
            out[t] = jnp.asarray(np.stack([_to_alpha_cell(space, t, c, i) for i, c in enumerate(cells)]))
        else:
            out[t] = jnp.asarray(_to_alpha_cell(space, t, getattr(genotype, t)))
    return out


DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)])
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)])
"""The published DARTS architectures (``genotypes.py`` of the reference)."""
MS_DARTS = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 2),
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("dil_conv_3x3", 3)],
    reduce=[("sep_conv_3x3", 0), ("avg_pool_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 2),
            ("max_pool_3x3", 0), ("dil_conv_3x3", 3), ("sep_conv_3x3", 3), ("skip_connect", 2)])
"""MS-DARTS's CIFAR-10 cell (``c10_s5_ms`` of the reference's ``sota/cnn/genotypes.py``)."""

PUBLISHED = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS_V2, "MS_DARTS": MS_DARTS,
             "c10_s5_ms": MS_DARTS}
"""Published cells by name. StacNAS and BaLeNAS publish theirs only as figures (the
StacNAS code's ``genotypes.py`` holds none), so they are not here."""

GENOTYPE_SOURCES = ("a published name (" + ", ".join(PUBLISHED) + ")", "a search workdir (its genotype.json; "
                    "WORKDIR#i for run i of a sweep)", "a JSON file or JSON text", "a PyTorch DARTS text "
                    "'Genotype(normal=[...], ...)' or a file holding one", "a NAS-Bench-201 string '|op~0|+...'")


def resolve(spec) -> Genotype:
    """A :class:`Genotype` from any of :data:`GENOTYPE_SOURCES` (or a Genotype/dict).
    ValueError naming the spec and the accepted forms otherwise."""
    if isinstance(spec, Genotype):
        return spec
    if isinstance(spec, dict):
        return Genotype.from_json(spec.get("genotype", spec))
    s = str(spec).strip()
    if s in PUBLISHED:
        return PUBLISHED[s]
    path, _, run = s.rpartition("#") if "#" in s and os.path.isdir(s.rpartition("#")[0]) else (s, "", "")
    if os.path.isdir(path):
        f = os.path.join(path, "genotype.json")
        if not os.path.exists(f):
            raise ValueError(f"genotype {spec!r}: the directory has no genotype.json (has the search finished?)")
        d = json.load(open(f))
        if "genotypes" in d:  # a sweep
            if not run:
                raise ValueError(f"genotype {spec!r} is a sweep of {len(d['genotypes'])} runs; accepted: "
                                 f"{path}#0 .. {path}#{len(d['genotypes']) - 1}")
            return Genotype.from_json(d["genotypes"][int(run)])
        return Genotype.from_json(d["genotype"] if "genotype" in d else d)
    if os.path.isfile(s):
        text = open(s).read().strip()
        return resolve(json.loads(text) if text.startswith("{") else text)
    if s.startswith("{"):
        return resolve(json.loads(s))
    if s.startswith("Genotype("):
        return Genotype.from_pytorch_str(s)
    if s.startswith("|"):
        return Genotype.from_nb201_str(s)
    raise ValueError(f"genotype {spec!r} not understood; accepted: " + "; ".join(GENOTYPE_SOURCES))
