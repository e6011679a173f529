"""The weight-sharing supernet: a pure Flax module taking ``alpha`` as a call argument.

``alpha`` is never a Flax parameter. It is a dict ``{cell_type: array}`` (see
:mod:`jaxdarts.spaces` for shapes) passed to ``model.apply(variables, x, alpha,
train=...)``; this is what lets every hypergradient estimator treat the network as a
plain function ``loss(params, alpha, batch)``.

Structure seen by XLA (``edge_loop``, :data:`EDGE_LOOPS`): with ``'scan'`` (default), the
edges of a cell that share their op list and stride are one ``nn.scan``-ed mixed op, traced
and compiled once per cell however many edges it has (a DARTS normal cell: 14 edges, one
mixed-op body; a reduction cell: its 8 strided input edges as one ``nn.vmap``-ed op, then
the 6 inner edges as a scan); with ``'vmap'``, edges are batched in dependency waves (the
edges leaving the cell inputs, then node by node), a program 2-4x larger that steps up to
~10% faster at the paper size on XLA:CPU (``benchmarks/RESULTS.md``). The ``none`` op is
never computed (it contributes exactly zero).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.core import lift

from jaxdarts import kernels
from jaxdarts import ops as ops_lib
from jaxdarts import spaces as spaces_lib

Array = jax.Array
Alpha = Mapping[str, Array]


def init_alpha(space, key: Array, scale: float = 1e-3) -> dict[str, Array]:
    """DARTS initialisation ``scale * N(0, 1)`` for every alpha array of ``space``.

    Returns ``{cell_type: (E, K)}`` (``(n_cells, E, K)`` for per-cell spaces); padded
    slots are set to 0 (they are masked anyway).
    """
    space = spaces_lib.get(space)
    keys = jax.random.split(key, len(space.cell_types))
    out = {}
    for k, (t, shape) in zip(keys, space.alpha_shapes().items()):
        a = scale * jax.random.normal(k, shape)
        out[t] = jnp.where(jnp.asarray(space.mask(t)), a, 0.0)
    return out


EDGES = "edges"
"""The optional key of normalised mixing weights holding per-edge scales ``{cell_type: (E,)}``."""


def split_weights(space, weights) -> tuple[dict, dict | None]:
    """Normalised mixing weights -> ``(op weights {cell_type: (E, K)}, per-edge scales
    {cell_type: (E,)} or None)``; checks their keys and shapes."""
    if isinstance(weights, Mapping) and EDGES in weights:
        ops = {k: v for k, v in weights.items() if k != EDGES}
        check_alpha(space, ops)
        edges = weights[EDGES]
        for t, shape in space.alpha_shapes().items():
            if t not in edges or tuple(np.shape(edges[t])) != tuple(shape[:-1]):
                raise ValueError(f"weights['edges'] must hold {sorted(space.alpha_shapes())} of shapes "
                                 f"{[tuple(s[:-1]) for s in space.alpha_shapes().values()]}; got "
                                 f"{ {k: tuple(np.shape(v)) for k, v in edges.items()} }")
        return ops, edges
    check_alpha(space, weights)
    return weights, None


def node_softmax(space, beta: Array) -> Array:
    """Softmax of per-edge logits ``beta`` (``(..., E)``) over each node's incoming edges
    (PC-DARTS edge normalisation: DARTS nodes take edges [0:2], [2:5], [5:9], [9:14])."""
    out = jnp.zeros_like(beta)
    for node in range(space.steps):
        idx = np.array([e for e, (n, _) in enumerate(space.edges) if n == node])
        out = out.at[..., idx].set(jax.nn.softmax(beta[..., idx], axis=-1))
    return out


def check_alpha(space, alpha: Alpha) -> None:
    """Raises ValueError naming the bad key/shape and the expected ones."""
    expected = space.alpha_shapes()
    if not isinstance(alpha, Mapping) or set(alpha) != set(expected):
        got = sorted(alpha) if isinstance(alpha, Mapping) else type(alpha).__name__
        raise ValueError(f"alpha keys {got} do not match space {space.name!r}; expected {sorted(expected)}")
    for t, shape in expected.items():
        if tuple(np.shape(alpha[t])) != tuple(shape):
            raise ValueError(f"alpha[{t!r}] has shape {tuple(np.shape(alpha[t]))}; "
                             f"space {space.name!r} expects {tuple(shape)}")


def mixing_weights(space, alpha: Alpha) -> dict[str, Array]:
    """Masked softmax over the last axis: padded slots get weight 0 and zero gradient."""
    space = spaces_lib.get(space)
    check_alpha(space, alpha)
    out = {}
    for t, a in alpha.items():
        mask = jnp.asarray(space.mask(t))
        logits = jnp.where(mask, a, -jnp.inf)
        out[t] = jnp.where(mask, jax.nn.softmax(logits, axis=-1), 0.0)
    return out


EDGE_LOOPS = ("scan", "vmap")
"""How a search cell runs its edges (``Supernet.edge_loop``, ``config.model.edge_loop``):
``'scan'`` (one mixed-op body per cell and (op list, stride), looped over the edges in
dependency order; the smaller program) or ``'vmap'`` (edges batched in dependency waves).
Same function; the parameter trees group the edges differently (:func:`edge_groups`)."""


@dataclasses.dataclass(frozen=True)
class EdgeGroup:
    """Edges sharing op list and stride, computed as one mixed op: ``vmap``-ed over the
    edges (all inputs known beforehand) or, with ``scan``, looped over them in order (each
    edge's input is complete when it runs). Parameters are stacked over ``edges`` in order."""

    edges: tuple[int, ...]  # alpha row indices
    nodes: tuple[int, ...]  # destination node of each edge
    inputs: tuple[int, ...]  # source state of each edge
    ops: tuple[str | None, ...]
    stride: int
    scan: bool = False

    @property
    def name(self) -> str:
        return "edges_" + "_".join(str(e) for e in self.edges)


def check_edge_loop(edge_loop: str) -> str:
    if edge_loop not in EDGE_LOOPS:
        raise ValueError(f"edge_loop={edge_loop!r} is not accepted; accepted: {', '.join(EDGE_LOOPS)}")
    return edge_loop


@functools.lru_cache(maxsize=None)
def edge_groups(space, cell_type: str, reduction: bool, cell: int | None = None,
                edge_loop: str = "scan") -> tuple[EdgeGroup, ...]:
    """The edge groups of a cell, in execution order (``edge_loop``: :data:`EDGE_LOOPS`).

    ``'vmap'``: all edges leaving the cell inputs are known before any node is computed,
    so they go first (8 of the 14 DARTS edges in one batched op; in reduction cells these
    are the strided ones); then, node by node, the edges from intermediate nodes. Within
    each stage edges are bucketed by ``(op list, stride)``.

    ``'scan'``: when every edge of the cell shares ``(op list, stride 1)`` and some edge
    leaves an intermediate node (DARTS normal cells, NAS-Bench-201), one scanned group of
    all of them, ordered by destination node;
    else, when the edges from intermediate nodes share it (DARTS reduction cells), the
    input edges as above, then one scanned group of those; else (ragged op lists, S1) the
    ``'vmap'`` groups.
    """
    check_edge_loop(edge_loop)
    padded = space.padded_ops(cell_type, cell)
    n_in = space.num_inputs

    def stride_of(e):
        return 2 if (reduction and space.edges[e][1] < n_in) else 1

    def scanned(edge_ids):
        es = tuple(sorted(edge_ids, key=lambda e: (space.edges[e][0], e)))
        return EdgeGroup(es, tuple(space.edges[e][0] for e in es), tuple(space.edges[e][1] for e in es),
                         padded[es[0]], stride_of(es[0]), scan=True)

    if edge_loop == "scan":
        every = list(range(len(space.edges)))
        inner = [e for e in every if space.edges[e][1] >= n_in]
        if inner and len({(padded[e], stride_of(e)) for e in every}) == 1 and stride_of(every[0]) == 1:
            return (scanned(every),)
        if len(inner) > 1 and len({(padded[e], stride_of(e)) for e in inner}) == 1:
            first = edge_groups(space, cell_type, reduction, cell, "vmap")
            return tuple(g for g in first if min(g.inputs) < n_in) + (scanned(inner),)

    def bucket(edge_ids):
        buckets: dict[tuple, list[int]] = {}
        for e in edge_ids:
            inp = space.edges[e][1]
            stride = 2 if (reduction and inp < space.num_inputs) else 1
            buckets.setdefault((padded[e], stride), []).append(e)
        return [EdgeGroup(tuple(es), tuple(space.edges[e][0] for e in es), tuple(space.edges[e][1] for e in es),
                          ops, stride) for (ops, stride), es in buckets.items()]

    n_in = space.num_inputs
    groups = bucket([e for e, (_, i) in enumerate(space.edges) if i < n_in])
    for node in range(space.steps):
        groups += bucket([e for e, (n, i) in enumerate(space.edges) if n == node and i >= n_in])
    return tuple(groups)


class MixedOp(nn.Module):
    """``sum_k w_k op_k(x)`` over one edge's (padded) op list.

    ``None`` slots and the ``none`` op are skipped (they contribute zero). With the
    ``'conv'`` lowering (``lowering``, see :data:`jaxdarts.kernels.LOWERINGS`; the compact program for
    GPUs/TPUs), ops that end with a parameter-free BatchNorm (every conv and pool of the
    DARTS search network, and the strided skip) are computed without it and normalised
    together: their outputs are stacked ``(G, N, H, W, C)`` and go through one BatchNorm
    with per-``(g, c)`` statistics (likewise the separable convs' first blocks), the same
    function as G separate BatchNorms in a
    fraction of the program XLA must compile (BatchNorm forward+backward was ~60% of a
    mixed op's HLO). The ``'taps'`` lowering (XLA:CPU) keeps one BatchNorm per op: there
    the stacked form compiled 25% faster but ran 22% slower (``benchmarks/RESULTS.md``).
    With ``drop_prob > 0`` in training, per-sample drop-path (RobustDARTS search
    regularisation) is applied according to ``drop_path_scope`` (:data:`DROP_PATH_SCOPES`):
    ``'edge'`` (default; the RobustDARTS reference, ``Cell.forward`` drops each mixed-op
    output, so skip and noise are dropped with the rest; the paper's "zero out mixed
    operations") or ``'op'`` (each non-identity, non-noise op's output separately, as the
    retraining network drops the ops of a discrete cell; favours skip/noise in S2/S4).
    """

    ops: tuple[str | None, ...]
    C: int
    stride: int
    train: bool
    family: str = "darts"
    affine: bool = False
    lowering: str = "auto"
    drop_path_scope: str = "edge"
    track_running_stats: bool = True
    capture: bool = False  # also return every op's output before mixing (K, N, H, W, C)
    partial: int = 1  # partial channels K (PC-DARTS): the ops see the first C/K channels

    @nn.compact
    def __call__(self, x: Array, w: Array, drop_prob: Array | float = 0.0) -> Array:
        out, ops = self._edge(x, w, drop_prob)
        return (out, ops) if self.capture else out

    def _edge(self, x, w, drop_prob):
        """``(the mixed op's output, every op's output (capture) or None)``."""
        if self.drop_path_scope not in DROP_PATH_SCOPES:
            raise ValueError(f"drop_path_scope={self.drop_path_scope!r} is not accepted; accepted: "
                             f"{', '.join(DROP_PATH_SCOPES)}")
        out, ops = self._partial(x, w, drop_prob) if self.partial > 1 else self._mixed(x, w, drop_prob, self.C)
        if self.train and self.drop_path_scope == "edge":
            out = drop_path(self, out, drop_prob)  # the mixed-op output, per sample (reference)
        return out, ops

    def _partial(self, x, w, drop_prob):
        """PC-DARTS (``model_search.py`` MixedOp): the ops on the first ``C/K`` channels,
        the rest bypassed (max-pooled 2x2 on stride-2 edges), concatenated and shuffled
        with ``K`` groups (:func:`channel_shuffle`). Returns ``(output, ops or None)`` as
        :meth:`_mixed`."""
        K, C_in = self.partial, x.shape[-1]
        if C_in % K or self.C % K:
            raise ValueError(f"partial channels K={K} must divide the edge's channels ({C_in} in, {self.C} out)")
        xa, xb = x[..., :C_in // K], x[..., C_in // K:]
        y, ops = self._mixed(xa, w, drop_prob, self.C // K)
        if self.stride == 2:
            if x.shape[1] % 2 or x.shape[2] % 2:
                raise ValueError(f"partial channels on a stride-2 edge need even feature maps; got {x.shape[1:3]}")
            xb = nn.max_pool(xb, (2, 2), (2, 2), padding="VALID")
        return channel_shuffle(jnp.concatenate([y, xb], axis=-1), K), ops

    def _mixed(self, x, w, drop_prob, C_out):
        """``(sum_k w_k op_k(x) with C_out channels, every op's output (capture) or None)``."""
        drop_each = self.train and self.drop_path_scope == "op"
        # the input's cotangent, the sum of every op's input gradient, gets its own buffer on
        # XLA:CPU instead of being recomputed inside each consumer (2.6x faster cell backward)
        x = kernels.materialize(x)
        out = jnp.zeros(x.shape[:1] + self._out_hw(x) + (C_out,), x.dtype)
        stacked_k, stacked_y = [], []
        per_op = {}  # k -> the op's output (capture)
        lowering = kernels.resolve_lowering(self.lowering)
        compact = lowering == "conv"
        # separable convs: first blocks of all of them, one BatchNorm, then second blocks
        seps = {k: ops_lib.SepConv(C_out, ops_lib.SEP_KERNEL[ops_lib.base_op(name)], self.stride, False, False,
                                   False, lowering, name=name)
                for k, name in enumerate(self.ops)
                if compact and ops_lib.base_op(name) in ops_lib.SEP_KERNEL
                and ops_lib.ends_with_bn(name, self.stride, self.affine)}
        if seps:
            h = jnp.stack([m(x, self.train, part="first") for m in seps.values()])
            h = ops_lib.batch_norm(self.train, False, name="joint_bn_first", axis=(0, -1))(h)
            seps = {k: m(h[i], self.train, part="second") for i, (k, m) in enumerate(seps.items())}
        for k, name in enumerate(self.ops):
            if name is None or ops_lib.base_op(name) == "none":
                continue
            joint = compact and ops_lib.ends_with_bn(name, self.stride, self.affine, self.family)
            if k in seps:
                y = seps[k]
            else:
                y = ops_lib.make_op(name, x.shape[-1], C_out, self.stride, self.affine, self.family,
                                    module_name=name, final_bn=not joint, lowering=lowering,
                                    track_running_stats=self.track_running_stats)(x, self.train)
            if joint:
                stacked_k.append(k)
                stacked_y.append(y)
                continue
            if drop_each and not ops_lib.is_identity(name, self.stride) and ops_lib.base_op(name) != "noise":
                y = drop_path(self, y, drop_prob)
            per_op[k] = y
            out = out + w[k] * y
        if stacked_y:
            y = ops_lib.batch_norm(self.train, False, name="joint_bn", axis=(0, -1),
                                   track_running_stats=self.track_running_stats)(jnp.stack(stacked_y))
            if drop_each:
                y = drop_path(self, y, drop_prob, batch_axes=2)
            per_op.update({k: y[i] for i, k in enumerate(stacked_k)})
            wk = jnp.stack([w[k] for k in stacked_k])  # static slices: no gather
            out = out + jnp.tensordot(wk, y, axes=1)
        if self.capture:  # none / padded slots: zeros
            return out, jnp.stack([per_op.get(k, jnp.zeros_like(out)) for k in range(len(self.ops))])
        return out, None

    def _out_hw(self, x):
        s = self.stride
        return (-(-x.shape[1] // s), -(-x.shape[2] // s))


def channel_shuffle(x: Array, groups: int) -> Array:
    """PC-DARTS ``channel_shuffle`` in NHWC: channels viewed as ``(groups, C/groups)``,
    transposed and flattened, so new channel ``j * groups + g`` is old channel
    ``g * C/groups + j``."""
    n, h, w_, c = x.shape
    return x.reshape(n, h, w_, groups, c // groups).swapaxes(-1, -2).reshape(n, h, w_, c)


DROP_PATH_SCOPES = ("edge", "op")
"""Where search drop-path acts: each mixed-op output (``'edge'``) or each op output (``'op'``)."""


def drop_path(module: nn.Module, x: Array, drop_prob: Array | float, batch_axes: int = 1) -> Array:
    """Per-sample drop-path scaled by ``1/keep``; a no-op when ``drop_prob == 0`` or no
    ``'dropout'`` RNG is given. ``drop_prob`` may be traced (schedules don't recompile).
    The mask is drawn per index of the leading ``batch_axes`` axes (2 for a stack of ops'
    outputs ``(G, N, H, W, C)``: each op drops each sample independently)."""
    if isinstance(drop_prob, (int, float)) and drop_prob == 0.0:
        return x
    if not module.has_rng("dropout"):
        return x
    keep = 1.0 - jnp.asarray(drop_prob, x.dtype)
    shape = x.shape[:batch_axes] + (1,) * (x.ndim - batch_axes)
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, shape)
    return jnp.where(mask, x / jnp.maximum(keep, 1e-12), 0.0)


_BatchedMixedOp = nn.vmap(
    MixedOp,
    in_axes=(0, 0, None),
    out_axes=0,
    variable_axes={"params": 0, "batch_stats": 0},
    split_rngs={"params": True, "noise": True, "dropout": True},
)


class _EdgeStep(MixedOp):
    """One edge of a scanned group: reads its input state from the carry ``states``
    (``(S, N, H, W, C)``), adds its scaled mixed-op output into its destination's slot.
    The update is a scatter-add and the read is materialised (:class:`MixedOp`), so XLA:CPU
    updates the carry in place, forward and backward (a ``dynamic_update_slice`` of
    ``read + y`` copied the whole carry twice per edge in the gradient)."""

    @nn.compact
    def __call__(self, states, xs, drop_prob):
        src, dst, w, scale = xs
        x = jax.lax.dynamic_index_in_dim(states, src, 0, keepdims=False)
        y, ops = self._edge(x, w, drop_prob)
        return states.at[dst].add(y * scale.astype(y.dtype)), ops


_ScannedMixedOp = nn.scan(
    _EdgeStep,
    variable_axes={"params": 0, "batch_stats": 0},
    split_rngs={"params": True, "noise": True, "dropout": True},
    in_axes=(0, nn.broadcast),
    out_axes=0,
)


class SearchCell(nn.Module):
    """A DARTS search cell (2 inputs) or NAS-Bench-201 cell (1 input) with mixed edges.

    ``weights`` is the ``(E, K)`` mixing-weight matrix of this cell.
    """

    space: Any
    cell_type: str
    C: int
    reduction: bool
    reduction_prev: bool
    multiplier: int
    train: bool
    lowering: str = "auto"
    drop_path_scope: str = "edge"
    track_running_stats: bool = True
    capture_ops: bool = False
    cell_index: int | None = None  # the cell's index among its type (spaces with cell_ops)
    partial_channels: int = 1
    affine: bool = False  # evaluation-network cells (see Supernet.affine)
    edge_loop: str = "scan"  # EDGE_LOOPS

    @nn.compact
    def __call__(self, s0, s1, weights, drop_prob=0.0, edge_scale=None):
        space = self.space
        if space.macro == "darts":
            if self.reduction_prev:
                s0 = ops_lib.FactorizedReduce(self.C, affine=self.affine, name="preprocess0")(s0, self.train)
            else:
                s0 = ops_lib.ReLUConvBN(self.C, 1, 1, affine=self.affine, name="preprocess0")(s0, self.train)
            s1 = ops_lib.ReLUConvBN(self.C, 1, 1, affine=self.affine, name="preprocess1")(s1, self.train)
            states = [s0, s1]
        else:
            states = [s0]
        family = "nb201" if space.macro == "nb201" else "darts"
        n_in = space.num_inputs
        remaining = {node: sum(n == node for n, _ in space.edges) for node in range(space.steps)}
        node_out: dict[int, Array] = {}

        def mixed_op(cls, g):  # the group's mixed op, vmapped (_BatchedMixedOp) or scanned (_ScannedMixedOp)
            return cls(g.ops, self.C, g.stride, self.train, family, self.affine, lowering=self.lowering,
                       drop_path_scope=self.drop_path_scope, track_running_stats=self.track_running_stats,
                       capture=self.capture_ops, partial=self.partial_channels, name=g.name)

        for g in edge_groups(space, self.cell_type, self.reduction, self.cell_index, self.edge_loop):
            if g.scan:  # the last group: every remaining edge
                states = states[:n_in] + self._scan(g, mixed_op(_ScannedMixedOp, g), states, node_out, weights,
                                                    drop_prob, edge_scale)
                break
            x = jnp.stack([states[i] for i in g.inputs])
            w = jnp.stack([weights[e] for e in g.edges])  # static slices: no gather/scatter
            y = mixed_op(_BatchedMixedOp, g)(x, w, drop_prob)
            if self.capture_ops:  # (edges of the group, K, N, H, W, C) before mixing
                y, y_ops = y
                self.sow("intermediates", "ops_" + g.name, y_ops)
            if edge_scale is not None:  # per-edge scale of the whole mixed-op output (PC-DARTS)
                y = y * jnp.stack([edge_scale[e] for e in g.edges]).astype(y.dtype)[:, None, None, None, None]
            for node in sorted(set(g.nodes)):
                idx = [j for j, n in enumerate(g.nodes) if n == node]
                part = sum(y[j] for j in idx[1:]) + y[idx[0]] if len(idx) > 1 else y[idx[0]]
                node_out[node] = part if node not in node_out else node_out[node] + part
                remaining[node] -= len(idx)
            # append finished nodes in order (node k is state n_in + k)
            while len(states) - n_in < space.steps and remaining[len(states) - n_in] == 0:
                states.append(node_out[len(states) - n_in])
        if space.macro == "darts":
            return jnp.concatenate(states[-min(self.multiplier, space.steps):], axis=-1)
        return states[-1]

    def _scan(self, g: EdgeGroup, op, states, node_out, weights, drop_prob, edge_scale):
        """Runs scanned group ``g`` (the cell's remaining edges; ``op``: its scanned mixed op)
        over a carry of the states it reads and writes: the cell inputs too when it reads
        them, else only the nodes (with the contributions of the groups before it). Returns
        the nodes' outputs."""
        space, n_in = self.space, self.space.num_inputs
        offset = 0 if min(g.inputs) < n_in else n_in  # carry slot of state i: i - offset
        if node_out:
            like = next(iter(node_out.values()))
        else:
            s = g.stride if offset == 0 else (2 if self.reduction else 1)
            x = states[0]
            like = jnp.zeros(x.shape[:1] + (-(-x.shape[1] // s), -(-x.shape[2] // s), self.C), x.dtype)
        carry = jnp.stack([states[i] if i < n_in else node_out.get(i - n_in, jnp.zeros_like(like))
                           for i in range(offset, n_in + space.steps)])
        # the carry in the mixed ops' output dtype (float64 weights on float32 states: float64, as the 'vmap' groups)
        carry = carry.astype(jnp.result_type(carry.dtype, weights.dtype))
        src = jnp.asarray([i - offset for i in g.inputs], jnp.int32)
        dst = jnp.asarray([n + n_in - offset for n in g.nodes], jnp.int32)
        w = jnp.stack([weights[e] for e in g.edges])  # static slices: no gather
        scale = (jnp.ones((len(g.edges),), w.dtype) if edge_scale is None  # PC-DARTS edge normalisation
                 else jnp.stack([edge_scale[e] for e in g.edges]).astype(w.dtype))
        carry, y_ops = op(carry, (src, dst, w, scale), drop_prob)
        if self.capture_ops:  # (edges of the group, K, N, H, W, C) before mixing
            self.sow("intermediates", "ops_" + g.name, y_ops)
        return [carry[n_in - offset + k] for k in range(space.steps)]


def _lift_remat(fn, variables=True, rngs=True):
    """Flax lifting of :func:`jaxdarts.kernels.remat` (as ``flax.core.lift.checkpoint``
    lifts ``jax.checkpoint``): the module's variables and RNGs become explicit inputs of a
    pure function, and mutated collections (BatchNorm statistics) explicit outputs."""

    def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args):
        def pure(variable_groups, rng_groups, *args):
            scope = scope_fn(variable_groups, rng_groups)
            y = fn(scope, *args)
            return y, repack_fn(scope)

        return kernels.remat(pure)(variable_groups, rng_groups, *args)

    return lift.pack(inner, (variables,), (variables,), (rngs,), name="remat")


def remat(module_cls):
    """``module_cls`` rematerialised in the backward pass with :func:`jaxdarts.kernels.remat`
    (which, unlike ``nn.remat``, also saves memory on XLA:CPU). Positional call arguments
    only; Hessian-vector products (``jvp`` of ``grad``) and ``grad`` of ``grad`` work, a
    forward-mode ``jvp`` of the network itself does not."""
    return nn.transforms.lift_transform(_lift_remat, module_cls)


RematSearchCell = remat(SearchCell)


class AuxiliaryHeadCIFAR(nn.Module):
    """CIFAR auxiliary head (input 8x8 at 32px): ReLU, avgpool 5/3, 1x1 conv 128, BN, ReLU,
    2x2 conv 768, BN, ReLU, dense. ``bn_after_768=False`` gives the ImageNet variant."""

    num_classes: int
    pool_stride: int = 3
    bn_after_768: bool = True
    train: bool = True

    @nn.compact
    def __call__(self, x):
        x = nn.relu(x)
        x = nn.avg_pool(x, (5, 5), (self.pool_stride, self.pool_stride), padding="VALID")
        x = nn.Conv(128, (1, 1), use_bias=False, kernel_init=ops_lib._torch_init)(x)
        x = nn.relu(ops_lib.batch_norm(self.train, True)(x))
        x = nn.Conv(768, (2, 2), padding="VALID", use_bias=False, kernel_init=ops_lib._torch_init)(x)
        if self.bn_after_768:
            x = ops_lib.batch_norm(self.train, True)(x)
        x = nn.relu(x)
        x = x.reshape(x.shape[0], -1)
        return ops_lib.torch_dense(x, self.num_classes)


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201 reduction block: ReLUConvBN 3x3/2, ReLUConvBN 3x3, shortcut
    avgpool 2 + 1x1 conv."""

    C_out: int
    train: bool

    @nn.compact
    def __call__(self, x):
        y = ops_lib.ReLUConvBN(self.C_out, 3, 2, affine=True)(x, self.train)
        y = ops_lib.ReLUConvBN(self.C_out, 3, 1, affine=True)(y, self.train)
        sc = nn.avg_pool(x, (2, 2), (2, 2))
        sc = nn.Conv(self.C_out, (1, 1), use_bias=False, kernel_init=ops_lib._torch_init)(sc)
        return sc + y


class Supernet(nn.Module):
    """Continuous relaxation of a cell-based search space.

    Call as ``model.apply(variables, x, alpha, train=..., mutable=[...])``.

    Args (attributes):
      space: a :class:`~jaxdarts.spaces.SearchSpace` or its name.
      num_classes: classifier outputs.
      C: initial channels (16 in DARTS search).
      layers: number of cells (DARTS macro; reductions at ``layers//3`` and
        ``2*layers//3``); for the ``nb201`` macro, cells per stage (NAS-Bench-201's N).
      steps, multiplier, stem_multiplier: as in DARTS (``steps`` is taken from the space).
      auxiliary: add the CIFAR auxiliary head after cell ``2*layers//3`` (Amended-DARTS
        search); training calls then return ``(logits, aux_logits)``.
      remat: rematerialise each cell in the backward pass with
        :func:`jaxdarts.kernels.remat` (memory for compute; effective on XLA:CPU too).
        Gradients, Hessian-vector products and ``grad`` of ``grad`` work; a forward-mode
        ``jax.jvp`` of the network alone (no inner ``grad``) does not.
      lowering: depthwise convs and pools as :mod:`jaxdarts.kernels` primitives
        (``'taps'``, XLA:CPU) or XLA's own ops (``'conv'``, GPU/TPU); ``'auto'`` (default)
        picks by backend (:func:`jaxdarts.kernels.resolve_lowering`). The two give the same
        function but different ``batch_stats`` trees.
      drop_path_scope: ``'edge'`` or ``'op'`` (:data:`DROP_PATH_SCOPES`, :class:`MixedOp`).
      multiplier: the cell output concatenates the last ``min(multiplier, space.steps)``
        nodes (all of them in S5's one-node cell).
      track_running_stats: False: the cells' BatchNorms normalise with batch statistics
        in evaluation too and keep none (PyTorch ``track_running_stats=False``; the
        NAS-Bench-201 ``BN`` flag and the zero-cost-proxy network). Stem, reduction blocks
        and classifier BatchNorms always track.
      affine: the cells as the evaluation network builds them, for scoring discrete
        architectures with one-hot weights (BaLeNAS-TF ``tf.network='eval'``): affine
        BatchNorms, pools without a BatchNorm and affine preprocessing (DARTS
        ``NetworkCIFAR``'s ``EvalCell``), or, for the ``nb201`` macro, convs without bias
        and affine BatchNorms (AutoDL's ``InferCell``). False (default): the search
        network's affine-free cells (DARTS pools followed by an affine-free BatchNorm,
        NAS-Bench-201 convs with bias as ``bias = not affine``).
      edge_loop: ``'scan'`` (default) or ``'vmap'`` (:data:`EDGE_LOOPS`): one mixed-op body
        per cell looped over its edges (the smaller program, faster to compile) or edges
        batched in dependency waves; the same function, parameter trees grouped differently
        (:func:`edge_groups`).
      capture_ops: every edge's per-op outputs before mixing are sown into the
        ``'intermediates'`` collection (per cell, per edge group ``ops_edges_...``: an array
        ``(edges of the group, K, N, H, W, C)``, zeros for ``none``/padded slots); read them
        with :func:`jaxdarts.analysis.op_outputs` (StacNAS operator correlation).

    ``__call__(x, alpha, *, train, normalized=False, drop_prob=0.0)``:
      x: ``(N, H, W, C_in)`` float images (NHWC).
      alpha: ``{cell_type: logits}`` shaped as ``space.alpha_shapes()``; with
        ``normalized=True`` they are used directly as mixing weights (one-hot genotypes
        from :func:`jaxdarts.genotype.to_alpha`, perturbed weights of SDARTS-like methods).
      drop_prob: search drop-path probability (needs a ``'dropout'`` RNG), on each mixed-op
        output (``drop_path_scope='edge'``, the RobustDARTS reference) or each op output
        (``'op'``); see :class:`MixedOp`.
    Returns ``(N, num_classes)`` logits (a pair with the auxiliary head, see above).
    """

    space: Any
    num_classes: int
    C: int = 16
    layers: int = 8
    steps: int = 4
    multiplier: int = 4
    stem_multiplier: int = 3
    auxiliary: bool = False
    remat: bool = False
    lowering: str = "auto"
    drop_path_scope: str = "edge"
    track_running_stats: bool = True
    capture_ops: bool = False
    partial_channels: int = 1
    affine: bool = False
    edge_loop: str = "scan"

    @nn.compact
    def __call__(self, x, alpha, *, train: bool, normalized: bool = False, drop_prob=0.0):
        space = spaces_lib.get(self.space)
        if space.per_cell and space.layers != self.layers:
            raise ValueError(f"space {space.name!r} has one alpha per cell for {space.layers} cells; "
                             f"got layers={self.layers}")
        edges = None
        if normalized:
            weights, edges = split_weights(space, alpha)
        else:
            weights = mixing_weights(space, alpha)
        cell_cls = RematSearchCell if self.remat else SearchCell
        if space.macro == "nb201":
            return self._nb201(x, weights, train, drop_prob, space, cell_cls, edges)

        C_curr = self.stem_multiplier * self.C
        s = nn.Conv(C_curr, (3, 3), padding=[(1, 1), (1, 1)], use_bias=False,
                    kernel_init=ops_lib._torch_init, name="stem_conv")(x)
        s = ops_lib.batch_norm(train, True, name="stem_bn")(s)
        s0 = s1 = s
        C_curr = self.C
        reduction_prev = False
        counters = {t: 0 for t in space.cell_types}
        aux = None
        for i in range(self.layers):
            ctype = space.cell_type_of(i, self.layers)
            reduction = ctype == "reduce"
            if reduction:
                C_curr *= 2
            w = weights[ctype]
            es = None if edges is None else edges[ctype]
            index = counters[ctype] if space.cell_ops is not None else None
            if space.per_cell:
                w = w[counters[ctype]]
                es = None if es is None else es[counters[ctype]]
            counters[ctype] += 1
            cell = cell_cls(space, ctype, C_curr, reduction, reduction_prev, self.multiplier, train,
                            kernels.resolve_lowering(self.lowering), self.drop_path_scope, self.track_running_stats,
                            self.capture_ops, index, self.partial_channels, self.affine, check_edge_loop(self.edge_loop),
                            name=f"cell_{i}")
            s0, s1 = (s1, cell(s0, s1, w, drop_prob)) if es is None else (s1, cell(s0, s1, w, drop_prob, es))
            reduction_prev = reduction
            if self.auxiliary and train and i == 2 * self.layers // 3:
                aux = AuxiliaryHeadCIFAR(self.num_classes, train=train, name="aux_head")(s1)
        out = jnp.mean(s1, axis=(1, 2))
        logits = ops_lib.torch_dense(out, self.num_classes, "classifier")
        if self.auxiliary and train:
            return logits, aux
        return logits

    def _nb201(self, x, weights, train, drop_prob, space, cell_cls, edges=None):
        def cell(stage, j, C_curr, s):
            m = cell_cls(space, "normal", C_curr, False, False, 1, train, kernels.resolve_lowering(self.lowering),
                         self.drop_path_scope, self.track_running_stats, self.capture_ops, None,
                         self.partial_channels, self.affine, check_edge_loop(self.edge_loop),
                         name=f"cell_{stage}_{j}")
            if edges is None:
                return m(s, None, weights["normal"], drop_prob)
            return m(s, None, weights["normal"], drop_prob, edges["normal"])

        out = nb201_skeleton(x, self.C, self.layers, train, cell)
        return ops_lib.torch_dense(out, self.num_classes, "classifier")


def nb201_skeleton(x, C: int, N: int, train: bool, cell):
    """NAS-Bench-201's macro network up to the classifier, called inside a compact
    module: stem conv 3x3 + BN, three stages of ``N`` cells at ``C, 2C, 4C`` separated by
    :class:`ResNetBasicBlock` (stride 2), BN + ReLU, global average pool. ``cell(stage, j,
    C_stage, s) -> s`` builds and applies cell ``j`` of a stage (search or discrete)."""
    s = nn.Conv(C, (3, 3), padding=[(1, 1), (1, 1)], use_bias=False, kernel_init=ops_lib._torch_init,
                name="stem_conv")(x)
    s = ops_lib.batch_norm(train, True, name="stem_bn")(s)
    C_curr = C
    for stage in range(3):
        if stage > 0:
            C_curr *= 2
            s = ResNetBasicBlock(C_curr, train, name=f"resblock_{stage}")(s)
        for j in range(N):
            s = cell(stage, j, C_curr, s)
    s = nn.relu(ops_lib.batch_norm(train, True, name="lastact_bn")(s))
    return jnp.mean(s, axis=(1, 2))


def count_params(params) -> int:
    """Number of trainable scalars (BN running statistics are not in ``params``)."""
    return int(sum(np.prod(np.shape(p)) for p in jax.tree.leaves(params)))


def count_params_excluding(params, prefix: str) -> int:
    """Trainable scalars, leaving out the top-level submodule ``prefix`` (e.g. aux head)."""
    return count_params({k: v for k, v in params.items() if not k.startswith(prefix)})
