"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections and edge normalisation.

As the reference code (yuhuixu1993/PC-DARTS ``model_search.py``, ``train_search.py``;
facts in ``../shared/METHODS_SPEC_PCDARTS_DRNAS.md`` section 1):

* **Partial channels** (``model.partial_channels`` = K, 4 on CIFAR, 2 on ImageNet): each
  edge's ops see the first ``C/K`` channels of its input (a fixed slice), the other
  channels bypass them (max-pooled 2x2 on stride-2 edges), the two are concatenated and
  channel-shuffled with K groups (:func:`jaxdarts.supernet.channel_shuffle`). This is a
  generic option of the supernet (:class:`jaxdarts.supernet.MixedOp`); the method sets it.
* **Edge normalisation** (``pcdarts.edge_normalization``, on): per-edge logits ``betas``
  (``alpha['betas'] = {cell_type: (E,)}``, initialised ``1e-3 N(0, 1)`` like alpha, in the
  same Adam); each node's incoming edges are weighted by a softmax of their betas over that
  node's edges (:func:`jaxdarts.supernet.node_softmax`), scaling the whole mixed-op output
  (bypassed channels included, as ``weights2[offset+j] * self._ops[offset+j](h, w)``).
* **Derivation**: ``W[e, o] = softmax(alpha_e)_o * softmax_node(beta)_e``; per node the 2
  edges with the largest ``max_{o != none} W``, on each the ``argmax_{o != none}``
  (:func:`jaxdarts.genotype.derive` of ``W``).
* Search (``configs/pcdarts.py``): first order, architecture steps from epoch 15 of 50,
  batch 256, SGD lr 0.1 cosine to 0, weight decay 3e-4, clip 5, Adam lr 6e-4 (0.5, 0.999),
  weight decay 1e-3, both data halves through the training transform, no cutout.

Schedule: the reference steps its LR scheduler at the start of each epoch; under the
PyTorch 0.3 that code ran on, the scheduler's constructor had already stepped once, so epoch
e runs at cosine(e), as here (``optim.lr_schedule='epoch_cosine'``, as DARTS; only PyTorch >=
1.4 would shift it to e + 1). Not reproduced: the V100 copy's lr_min 1e-3 and the ImageNet
search's architecture-gradient clipping are not options.
"""

from __future__ import annotations

import jax
import ml_collections

from jaxdarts import genotype as genotype_lib
from jaxdarts import spaces as spaces_lib
from jaxdarts import supernet as supernet_lib
from jaxdarts.contract import ConfigError, Method, check_choice

BETAS = "betas"


def config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(edge_normalization=True))


def defaults(cfg) -> None:
    """PCD:train_search.py defaults (CIFAR-10)."""
    cfg.estimator = "first_order"
    cfg.model.partial_channels = 4
    cfg.epochs = 50
    cfg.batch_size = 256
    cfg.arch_start_epoch = 15
    cfg.optim.lr = 0.1
    cfg.optim.lr_min = 0.0
    cfg.optim.arch_lr = 6e-4
    cfg.optim.arch_weight_decay = 1e-3


def validate(cfg) -> None:
    check_choice("pcdarts.edge_normalization", cfg.pcdarts.edge_normalization, (True, False))
    space = spaces_lib.get(cfg.space)
    if space.derive != "top2" and cfg.pcdarts.edge_normalization:
        raise ConfigError(f"config.pcdarts.edge_normalization=True needs a space whose nodes choose edges; space "
                          f"{space.name!r} keeps every edge; accepted: edge_normalization=False there")


def init_alpha(space, key, scale, section):
    """Alpha as DARTS (``scale N(0, 1)``) plus, with edge normalisation, per-edge betas
    ``scale N(0, 1)``."""
    k_a, k_b = jax.random.split(key)
    alpha = supernet_lib.init_alpha(space, k_a, scale)
    if not section.edge_normalization:
        return alpha
    keys = jax.random.split(k_b, len(space.cell_types))
    alpha[BETAS] = {t: scale * jax.random.normal(k, shape[:-1])
                    for k, (t, shape) in zip(keys, space.alpha_shapes().items())}
    return alpha


def mixing(space, alpha) -> dict:
    """``softmax(alpha)`` per edge and, with edge normalisation (betas in alpha), each
    node's softmax of its edges' betas as per-edge scales (``weights['edges']``)."""
    space = spaces_lib.get(space)
    w = supernet_lib.mixing_weights(space, {k: v for k, v in alpha.items() if k != BETAS})
    if BETAS in alpha:
        w[supernet_lib.EDGES] = {t: supernet_lib.node_softmax(space, alpha[BETAS][t]) for t in space.cell_types}
    return w


def weights(alpha, ctx):
    """The engine's slot: :func:`mixing` (deterministic; no key needed)."""
    return mixing(ctx.space, alpha)


def edge_weighted(space, alpha) -> dict:
    """``W[e, o] = softmax(alpha_e)_o * softmax_node(beta_e)`` (``{cell_type: (E, K)}``; the
    softmax alone without betas)."""
    w = mixing(space, alpha)
    edges = w.pop(supernet_lib.EDGES, None)
    return w if edges is None else {t: w[t] * edges[t][..., None] for t in w}


def derive(space, alpha) -> genotype_lib.Genotype:
    """PC-DARTS ``genotype()``: DARTS's top-2 rule on the edge-weighted ``W``."""
    return genotype_lib.derive(space, edge_weighted(space, alpha), normalized=True)


METHOD = Method(name="pcdarts", config=config, defaults=defaults, validate=validate, weights=weights,
                init_alpha=init_alpha, derive=derive)
