"""Training-free (zero-cost) proxies: SNIP, GraSP and Synflow as in the zero-cost-proxy code.

Semantics of SamsungLabs/zero-cost-nas (``foresight/pruners``), which BaLeNAS-TF and the
Zero-cost NAS baseline use:

* Scored parameters: the kernels of every convolution and dense layer (Flax leaves named
  ``kernel``: stem, cell ops including depthwise and 1x1 convs, shortcut convs,
  classifier); never biases or BatchNorm parameters. Each proxy sums its per-weight scores
  over all of them into one scalar.
* :func:`snip`: ``sum |W * dL/dW|`` for the cross-entropy ``L`` of one batch, BatchNorm in
  training mode (batch statistics).
* :func:`grasp`: ``-sum W * (H g)`` with ``g = dL/dW`` (held constant) and ``H`` the Hessian
  of ``L`` restricted to the kernels (Z's ``z = sum <g, dL/dW>; z.backward()``), training-mode
  BatchNorm; computed as one Hessian-vector product (``jvp`` of ``grad``).
* :func:`synflow`: every parameter replaced by its absolute value, float64, input of ones of
  ``input_shape``, ``R = sum(logits)``, score ``sum |W * dR/dW|``. BatchNorm layers are
  identities (``bn='none'``, Z's generic ``copynet``) except, with
  ``bn='nb201_reference'``, those inside the NAS-Bench-201 ResNet reduction blocks (module
  names ``resblock_*``), which Z's NB201 model keeps (training mode, statistics of the one
  all-ones image); ``bn='keep'`` leaves every BatchNorm in place. Scores reach 1e30-1e60
  on NB201 networks: float64 is needed, compare them in log space.

Each takes ``(model, variables, data, *args, **kwargs)`` for any Flax module of this
library: ``args``/``kwargs`` go to ``model.apply`` after the input (e.g. a one-hot alpha and
``normalized=True`` for the :class:`~jaxdarts.supernet.Supernet`), and ``train=True`` is
added. :func:`score_candidates` scores many architectures of one supernet (one-hot alphas,
a fresh initialisation per candidate) as one compiled program.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import traverse_util

from jaxdarts import kernels
from jaxdarts import ops as ops_lib
from jaxdarts import jit_cache
from jaxdarts import spaces as spaces_lib

PROXIES = ("synflow", "snip", "grasp")
SYNFLOW_BN = ("none", "nb201_reference", "keep")


def kernel_mask(params):
    """Pytree of booleans: True at the scored leaves (``kernel`` of convs and dense layers)."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: k[-1] == "kernel" for k in flat})


def _masked_sum(mask, tree):
    return sum(jnp.sum(x) for m, x in zip(jax.tree.leaves(mask), jax.tree.leaves(tree)) if m)


def _logits(model, variables, x, args, kwargs):
    out, _ = model.apply(variables, x, *args, train=True, mutable=["batch_stats"], **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _ce(logits, labels):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def snip(model, variables, batch, *args, **kwargs):
    """SNIP saliency ``sum |W * dL/dW|`` on ``batch`` (``{'image', 'label'}``, float images)."""
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss(p):
        return _ce(_logits(model, {"params": p, **rest}, batch["image"], args, kwargs), batch["label"])

    g = jax.grad(loss)(params)
    return _masked_sum(kernel_mask(params), jax.tree.map(lambda w, d: jnp.abs(w * d), params, g))


def grasp(model, variables, batch, *args, **kwargs):
    """GraSP ``-sum W * (H g)`` on ``batch`` (Hessian restricted to the kernels)."""
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}
    mask = kernel_mask(params)

    def grad_fn(p):
        return jax.grad(lambda q: _ce(_logits(model, {"params": q, **rest}, batch["image"], args, kwargs),
                                      batch["label"]))(p)

    g = grad_fn(params)
    tangent = jax.tree.map(lambda m, d: d if m else jnp.zeros_like(d), mask, g)
    hg = jax.jvp(grad_fn, (params,), (jax.lax.stop_gradient(tangent),))[1]
    return _masked_sum(mask, jax.tree.map(lambda w, h: -w * h, params, hg))


def _bn_interceptor(mode: str):
    bn_types = (nn.BatchNorm, ops_lib.BatchNorm, ops_lib.BatchStatNorm)

    def interceptor(next_fun, args, kwargs, context):
        m = context.module
        if context.method_name == "__call__" and isinstance(m, bn_types):
            keep = mode == "keep" or (mode == "nb201_reference" and any(
                str(p).startswith("resblock") for p in m.scope.path))
            if not keep:
                return args[0]
        return next_fun(*args, **kwargs)

    return interceptor


def synflow(model, variables, input_shape, *args, bn: str = "none", forward: bool = False, **kwargs):
    """Synflow ``sum |W * dR/dW|`` with ``R = sum(f_|theta|(ones(input_shape)))`` in float64.

    Must run with float64 enabled (``with jax.enable_x64(True):`` around the call or the
    ``jit`` that traces it); raises otherwise. ``bn``: :data:`SYNFLOW_BN`.

    ``forward=True`` computes ``sum <W, dR/dW>`` as ONE forward-mode derivative of ``R``
    along the kernels themselves (``jax.jvp``; no backward pass, a smaller program to
    compile). That is the Synflow score whenever every ``dR/dW >= 0``, which holds when no
    BatchNorm is kept (``bn='none'``) and no op can output a negative value (every
    activation is then a sum of products of |parameters| and ones, so every derivative of
    ``R`` is >= 0); an op such as RobustDARTS's ``noise`` breaks it (see
    :func:`forward_synflow_exact`). Agrees with the reverse mode to float64 rounding (tested)."""
    if bn not in SYNFLOW_BN:
        raise ValueError(f"synflow bn={bn!r} is not accepted; accepted: {', '.join(SYNFLOW_BN)}")
    if jnp.zeros(()).astype(jnp.float64).dtype != jnp.float64:
        raise ValueError("synflow needs float64: call it inside `with jax.enable_x64(True):`")
    variables = jax.tree.map(lambda v: jnp.abs(jnp.asarray(v, jnp.float64)), variables)
    args = tuple(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype,
                                                                                        jnp.floating) else a, args))
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}
    x = jnp.ones(tuple(input_shape), jnp.float64)

    def r(p):
        with nn.intercept_methods(_bn_interceptor(bn)):
            return jnp.sum(_logits(model, {"params": p, **rest}, x, args, kwargs))

    if forward:
        mask = kernel_mask(params)
        along = jax.tree.map(lambda m, w: w if m else jnp.zeros_like(w), mask, params)
        return jax.jvp(r, (params,), (along,))[1]
    g = jax.grad(r)(params)
    return _masked_sum(kernel_mask(params), jax.tree.map(lambda w, d: jnp.abs(w * d), params, g))


def forward_synflow_exact(model, bn: str) -> bool:
    """Whether ``synflow(..., forward=True)`` is the Synflow score for ``model``: every
    BatchNorm removed and a :class:`~jaxdarts.supernet.Supernet` whose space has no op that
    outputs negative values (``noise``), called with non-negative mixing weights (the
    scorer's one-hot alphas); False for any other module (not known)."""
    space = getattr(model, "space", None)
    if bn != "none" or space is None:
        return False
    sp = spaces_lib.get(space)
    return not any(ops_lib.base_op(op) == "noise" for t in sp.cell_types for edge in sp.ops[t] for op in edge
                   if op is not None)


PROXY_FNS: dict[str, Callable] = {"synflow": synflow, "snip": snip, "grasp": grasp}


def get(name: str) -> Callable:
    """The proxy called ``name``; ValueError naming the accepted ones otherwise."""
    if name not in PROXY_FNS:
        raise ValueError(f"unknown proxy {name!r}; accepted: {', '.join(PROXIES)}")
    return PROXY_FNS[name]


def init_variables(model, key, alpha, input_shape) -> dict:
    """Fresh variables of ``model`` (a supernet called with a one-hot ``alpha``) from ``key``
    (PyTorch default initialisation, as the proxy code's ``init_w_type='none'``)."""
    return model.init({"params": key, "dropout": key, "noise": key}, jnp.zeros(tuple(input_shape), jnp.float32),
                      alpha, train=True, normalized=True)


FAST_COMPILE_OPTIONS = kernels.FAST_COMPILE_OPTIONS
"""XLA options of a fast compile (:data:`jaxdarts.kernels.FAST_COMPILE_OPTIONS`)."""


def make_scorer(proxy: str, model, *, batch_size: int = 1, synflow_bn: str = "none", fast_compile: bool = False):
    """``scorer(alphas, keys, data) -> (K,) scores``: :func:`score_candidates` as one compiled
    function, compiled once per input shapes (build the scorer once and reuse it).

    Synflow is one forward-mode derivative where that is exact
    (:func:`forward_synflow_exact`; ``synflow(..., forward=True)``), a gradient otherwise.
    ``fast_compile`` compiles with :data:`FAST_COMPILE_OPTIONS`. XLA:CPU, 2 cores, the
    one-hot DARTS supernet at ``configs/balenas.py:quick``'s size, first call for 20
    candidates (2026-12-02): forward mode 31 s fast / 51 s default, the gradient 44 s / 86 s;
    20 candidates then take 0.6 s / 0.2 s (gradient 1.0 s / 0.4 s). SNIP/GraSP and float64 at
    CIFAR size run far slower with the fast options, so they are off by default."""
    fn = get(proxy)
    if synflow_bn not in SYNFLOW_BN:
        raise ValueError(f"synflow_bn={synflow_bn!r} is not accepted; accepted: {', '.join(SYNFLOW_BN)}")
    fast = fast_compile
    forward = forward_synflow_exact(model, synflow_bn)  # one jvp instead of a gradient where exact

    def run(alphas, keys, data):
        shape = tuple(data.shape) if proxy == "synflow" else tuple(data["image"].shape)
        init_shape = (1,) + shape[1:]

        def one(inputs):
            alpha, key = inputs
            v = init_variables(model, key, alpha, init_shape)
            if proxy == "synflow":
                return fn(model, v, shape, alpha, bn=synflow_bn, forward=forward, normalized=True)
            return fn(model, v, data, alpha, normalized=True)

        return jax.lax.map(one, (alphas, keys), batch_size=min(batch_size, len(keys)))

    call = jit_cache.compile_once(run, FAST_COMPILE_OPTIONS if fast else None)

    def scorer(alphas, keys, data):
        if proxy == "synflow":  # data: the input shape (only its shape reaches the program)
            with jax.enable_x64(True):
                return np.asarray(call(alphas, keys, jnp.zeros(tuple(data), jnp.float32)), np.float64)
        return np.asarray(call(alphas, keys, data), np.float64)

    return scorer


def score_candidates(proxy: str, model, alphas, keys, data, *, batch_size: int = 1,
                     synflow_bn: str = "none", fast_compile: bool = False) -> np.ndarray:
    """Scores of K architectures of supernet ``model`` as one compiled program.

    ``alphas``: one-hot mixing weights stacked on a leading axis of size K
    (:func:`jaxdarts.genotype.to_alpha` of each candidate); ``keys``: K PRNG keys, one fresh
    initialisation per candidate (:func:`init_variables`); ``data``: the input shape for
    Synflow (e.g. ``(1, 32, 32, 3)``), a float batch ``{'image', 'label'}`` for SNIP/GraSP.
    Candidates go through ``jax.lax.map`` in groups of ``batch_size`` (``vmap`` inside a
    group; 1 by default: on XLA:CPU a ``vmap``-ed supernet compiles 2.5x longer and runs
    no faster), so memory is bounded. Unselected ops get zero gradient and score zero: the
    one-hot supernet scores exactly the discrete network (tested against
    :class:`~jaxdarts.networks.NetworkNB201` one by one). Returns a float64 NumPy array.
    """
    return make_scorer(proxy, model, batch_size=batch_size, synflow_bn=synflow_bn,
                       fast_compile=fast_compile)(alphas, keys, data)


def score_with_progress(scorer, alphas, keys, data, *, chunk: int = 50, log=None) -> np.ndarray:
    """``scorer(alphas, keys, data)`` over many candidates in chunks of ``chunk`` (the last
    one padded with copies of the first candidates, so one compiled program serves all),
    logging progress with an ETA after each chunk; equal to one call (tested)."""
    import time

    k = len(keys)
    if log is None or k <= chunk:
        return scorer(alphas, keys, data)
    out, t0 = [], time.time()
    for start in range(0, k, chunk):
        idx = np.arange(start, start + chunk) % k if start + chunk > k else np.arange(start, start + chunk)
        part = scorer(jax.tree.map(lambda a: a[idx], alphas), keys[idx], data)
        out.append(np.asarray(part)[:min(chunk, k - start)])
        done, el = min(start + chunk, k), time.time() - t0
        log(f"scored {done}/{k} candidates ({done / el:.1f}/s, ETA {el / done * (k - done):.0f} s)")
    return np.concatenate(out)


def log_scores(scores) -> np.ndarray:
    """``log`` of positive scores (Synflow magnitudes overflow float32 and differ by many
    orders); non-positive scores map to ``-inf``."""
    s = np.asarray(scores, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, np.log(np.where(s > 0, s, 1.0)), -np.inf)


