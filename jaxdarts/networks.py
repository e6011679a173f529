"""Evaluation (retraining) networks built from a :class:`~jaxdarts.genotype.Genotype`.

``NetworkCIFAR`` and ``NetworkImageNet`` follow the DARTS reference ``model.py``: affine
BN, drop-path on every non-identity op output during training (per-sample, scaled by
``1/keep``), auxiliary head after cell ``2*layers//3``. Call as
``model.apply(variables, x, train=..., drop_prob=..., rngs={'dropout': key},
mutable=['batch_stats'])``; returns ``(logits, aux_logits)`` when ``auxiliary`` and
training, otherwise ``logits`` (initialise with ``train=True`` so the auxiliary head's
parameters exist; it expects 32px CIFAR inputs). Per-cell genotypes (Amended-DARTS S2) give each cell its
own gene.

``NetworkNB201`` is NAS-Bench-201's ``TinyNetwork`` with ``InferCell``-s (AutoDL-Projects),
and with ``cell_affine=False, track_running_stats=False`` the zero-cost-proxy code's
``NAS201Model`` (cells with conv biases and batch-statistics BatchNorm).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from jaxdarts import ops as ops_lib
from jaxdarts import spaces as spaces_lib
from jaxdarts.supernet import AuxiliaryHeadCIFAR, drop_path, nb201_skeleton


class EvalCell(nn.Module):
    """A discrete DARTS cell: two ``(op, input)`` per node, summed."""

    gene: tuple
    concat: tuple[int, ...]
    C: int
    reduction: bool
    reduction_prev: bool
    train: bool
    lowering: str = "auto"

    @nn.compact
    def __call__(self, s0, s1, drop_prob=0.0):
        if self.reduction_prev:
            s0 = ops_lib.FactorizedReduce(self.C, affine=True, name="preprocess0")(s0, self.train)
        else:
            s0 = ops_lib.ReLUConvBN(self.C, 1, 1, affine=True, name="preprocess0")(s0, self.train)
        s1 = ops_lib.ReLUConvBN(self.C, 1, 1, affine=True, name="preprocess1")(s1, self.train)
        states = [s0, s1]
        for node in range(len(self.gene) // 2):
            total = 0.0
            for j in (2 * node, 2 * node + 1):
                name, inp = self.gene[j]
                stride = 2 if self.reduction and inp < 2 else 1
                op = ops_lib.make_op(name, self.C, self.C, stride, True, module_name=f"op{j}_{name}",
                                     lowering=self.lowering)
                h = op(states[inp], self.train)
                if self.train and not ops_lib.is_identity(name, stride):
                    h = drop_path(self, h, drop_prob)
                total = total + h
            states.append(total)
        return jnp.concatenate([states[i] for i in self.concat], axis=-1)


def _cell_gene(genotype, ctype: str, counters: dict):
    gene = genotype.cell(ctype, counters[ctype])
    counters[ctype] += 1
    return gene


class NetworkCIFAR(nn.Module):
    """DARTS CIFAR evaluation network (``model.py: NetworkCIFAR``).

    Attributes: genotype, C (36), layers (20), auxiliary (True), num_classes (10),
    lowering (``'auto'``; see :data:`jaxdarts.kernels.LOWERINGS`).
    """

    genotype: Any
    C: int = 36
    layers: int = 20
    auxiliary: bool = True
    num_classes: int = 10
    stem_multiplier: int = 3
    lowering: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, drop_prob=0.0):
        g = self.genotype
        C_curr = self.stem_multiplier * self.C
        s = nn.Conv(C_curr, (3, 3), padding=[(1, 1), (1, 1)], use_bias=False,
                    kernel_init=ops_lib._torch_init, name="stem_conv")(x)
        s0 = s1 = ops_lib.batch_norm(train, True, name="stem_bn")(s)
        C_curr, reduction_prev, counters, aux = self.C, False, {"normal": 0, "reduce": 0}, None
        reductions = spaces_lib.reduction_layers(self.layers)
        for i in range(self.layers):
            reduction = i in reductions
            ctype = "reduce" if reduction else "normal"
            if reduction:
                C_curr *= 2
            concat = g.reduce_concat if reduction else g.normal_concat
            cell = EvalCell(_cell_gene(g, ctype, counters), concat, C_curr, reduction, reduction_prev,
                            train, self.lowering, name=f"cell_{i}")
            s0, s1 = s1, cell(s0, s1, drop_prob)
            reduction_prev = reduction
            if self.auxiliary and train and i == 2 * self.layers // 3:
                aux = AuxiliaryHeadCIFAR(self.num_classes, train=train, name="aux_head")(s1)
        logits = ops_lib.torch_dense(jnp.mean(s1, axis=(1, 2)), self.num_classes, "classifier")
        return (logits, aux) if (self.auxiliary and train) else logits


class NetworkImageNet(nn.Module):
    """DARTS ImageNet evaluation network (``model.py: NetworkImageNet``), 224px input."""

    genotype: Any
    C: int = 48
    layers: int = 14
    auxiliary: bool = True
    num_classes: int = 1000
    lowering: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, drop_prob=0.0):
        g, C = self.genotype, self.C

        def conv(c, name, stride=2):
            return nn.Conv(c, (3, 3), (stride, stride), padding=[(1, 1), (1, 1)], use_bias=False,
                           kernel_init=ops_lib._torch_init, name=name)

        s = conv(C // 2, "stem0_conv0")(x)
        s = nn.relu(ops_lib.batch_norm(train, True, name="stem0_bn0")(s))
        s = conv(C, "stem0_conv1")(s)
        s0 = ops_lib.batch_norm(train, True, name="stem0_bn1")(s)
        s1 = ops_lib.batch_norm(train, True, name="stem1_bn")(conv(C, "stem1_conv")(nn.relu(s0)))
        C_curr, reduction_prev, counters, aux = C, True, {"normal": 0, "reduce": 0}, None
        reductions = spaces_lib.reduction_layers(self.layers)
        for i in range(self.layers):
            reduction = i in reductions
            ctype = "reduce" if reduction else "normal"
            if reduction:
                C_curr *= 2
            concat = g.reduce_concat if reduction else g.normal_concat
            cell = EvalCell(_cell_gene(g, ctype, counters), concat, C_curr, reduction, reduction_prev,
                            train, self.lowering, name=f"cell_{i}")
            s0, s1 = s1, cell(s0, s1, drop_prob)
            reduction_prev = reduction
            if self.auxiliary and train and i == 2 * self.layers // 3:
                aux = AuxiliaryHeadCIFAR(self.num_classes, pool_stride=2, bn_after_768=False, train=train,
                                         name="aux_head")(s1)
        logits = ops_lib.torch_dense(jnp.mean(s1, axis=(1, 2)), self.num_classes, "classifier")
        return (logits, aux) if (self.auxiliary and train) else logits


class NB201Cell(nn.Module):
    """A discrete NAS-Bench-201 cell: node ``i`` = sum over ``j < i`` of ``op_{i<-j}(node j)``;
    output = node 3. ``none`` edges contribute zeros (as ``InferCell``). Op modules are
    named ``edge{e}`` (alpha row ``e`` of the ``nb201`` space)."""

    gene: tuple
    C: int
    train: bool
    affine: bool = True
    track_running_stats: bool = True

    @nn.compact
    def __call__(self, x):
        states = [x]
        e = 0
        for node in range(1, 4):
            total = 0.0
            for j in range(node):
                name, inp = self.gene[e]
                op = ops_lib.make_op(name, self.C, self.C, 1, self.affine, "nb201", module_name=f"edge{e}",
                                     track_running_stats=self.track_running_stats)
                total = total + op(states[inp], self.train)
                e += 1
            states.append(total)
        return states[-1]


class NetworkNB201(nn.Module):
    """NAS-Bench-201 network (``TinyNetwork``): stem conv 3x3 + BN, three stages of ``N``
    cells at ``C, 2C, 4C`` separated by ResNet basic blocks (stride 2), BN + ReLU, global
    average pool, linear classifier. ``genotype``: a :class:`~jaxdarts.genotype.Genotype`
    with 6 ``normal`` entries (``Genotype.from_nb201_str``).

    ``cell_affine`` (True: the benchmark's inference cells, affine BN, convs without bias;
    False: search/proxy cells, BN without parameters and convs with bias) and
    ``track_running_stats`` (False: cells always use batch statistics, the zero-cost-proxy
    network). Module names match the ``nb201`` :class:`~jaxdarts.supernet.Supernet`
    outside the cells. ``apply(variables, x, train=...)`` returns logits. 1,531,546
    parameters for CIFAR-10 with every edge ``nor_conv_3x3``.
    """

    genotype: Any
    C: int = 16
    N: int = 5
    num_classes: int = 10
    cell_affine: bool = True
    track_running_stats: bool = True

    @nn.compact
    def __call__(self, x, *, train: bool):
        gene = self.genotype.normal

        def cell(stage, j, C_curr, s):
            return NB201Cell(gene, C_curr, train, self.cell_affine, self.track_running_stats,
                             name=f"cell_{stage}_{j}")(s)

        out = nb201_skeleton(x, self.C, self.N, train, cell)
        return ops_lib.torch_dense(out, self.num_classes, "classifier")
