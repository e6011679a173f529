"""BaLeNAS (Bayesian learning rule NAS): VAdam over q(alpha) = N(mu, sigma^2), then argmax
of mu or training-free (TF) selection among architectures drawn from q.

Architecture step (Algorithm 1): ``balenas.vadam.num_samples`` draws ``alpha_k = mu + sigma
eps_k`` (padded alpha slots get no noise), the hypergradient of ``cfg.estimator`` at every
draw as ONE ``vmap``-ed computation (``first_order``: BaLeNAS 1st; ``finite_difference`` or
the exact ``unrolled``: 2nd), their mean ``g`` and the mean of their squares ``g2`` fed to
VAdam (:func:`jaxdarts.optim.vadam`, ``form='adam'`` the reference ``Vadam`` of
emtiyaz/vadam that BaLeNAS calls, ``'paper'`` Eq. 17-18). The weight step uses mu.

Fidelity notes (``../shared/METHODS_SPEC.md`` 3.2, 3.6):

* With more than one sample the reference never zeroes ``.grad`` inside its closure, so its
  k-th stored gradient is the running sum ``g_1 + ... + g_k``; here each sample's gradient is
  its own and ``g``/``g2`` are the plain Monte-Carlo means (one sample, the only value the
  reference uses, is unaffected).
* Second order, ``vadam.noise_scope``: ``'all'`` (default; the paper: the whole
  hypergradient at the draw) or ``'mixed_term_only'`` (the reference: the virtual step
  ``w'``, ``v = d_w' L_val(w', mu)`` and ``d_alpha L_val(w', mu)`` at mu, only the mixed term
  ``-lr d2_{alpha,w} L_train(w, alpha_k) v`` at the draw; by central differences for
  ``finite_difference``, exactly for ``unrolled``).
* ``vadam.dataset_size`` (N of sigma = 1/sqrt(N s + prior)): 0 = the size of the
  architecture split (25,000 on CIFAR-10, as the reference; sigma depends on it).

Selection (``balenas.selection``): ``'argmax'`` (BaLeNAS: the architecture derived from mu)
or a proxy of :mod:`jaxdarts.proxies` (BaLeNAS-TF; ``synflow`` default in the configs):
``num_candidates`` draws from q (sigma scaled by ``tf.sigma_scale``), each discretised
(:func:`jaxdarts.genotype.derive`; NB201 takes the argmax over all five ops, ``none``
included), deduplicated in drawing order (``tf.dedupe``), optionally with argmax(mu) added
(``tf.include_mean``), each scored with a fresh random initialisation of a one-hot
supernet at (``tf.C``, ``tf.layers``) with batch-statistics BatchNorm in the cells, all
candidates one compiled program; the best score wins (ties: first drawn). The paper does
not say which network it scores (``METHODS_SPEC.md`` 3.3); ``tf.network`` chooses the
cells: ``'eval'``, the evaluation network's (``NetworkCIFAR``'s in the DARTS macro: affine
BatchNorm, pools without BatchNorm; AutoDL's ``InferCell`` on NB201: convs without bias),
as zero-cost proxies score the networks that are trained; or ``'search'``, the search
supernet's (affine-free BatchNorm, DARTS pools followed by BatchNorm, NB201 convs with
bias: on NB201 exactly the zero-cost-proxy code's ``NAS201Model``). ``'auto'`` (default)
takes the network whose proxy correlations the spec names: ``NAS201Model`` on NB201,
``NetworkCIFAR``'s cells in the DARTS macro. Under Synflow with ``synflow_bn='none'`` (the
DARTS macro's default) the two give identical scores (the same kernels from the same key,
every BatchNorm removed); SNIP, GraSP and NB201's Synflow differ (measured:
``benchmarks/RESULTS.md``, "Which network BaLeNAS-TF scores"). SNIP/GraSP use
one training batch (training transform); Synflow an all-ones input of the search images'
shape (``tf.input_size`` overrides the side). The selection runs after the last epoch and,
with ``tf.every = n > 0``, after every n-th epoch too (metrics ``tf_selected``,
``tf_top_scores``); the final one is the run's ``genotype`` in genotype.json
(``last_genotype`` = argmax mu), with the candidates and scores under ``selection``.

Per-epoch metrics: ``sigma_mean``/``sigma_min``/``sigma_max`` over the real alpha entries
(and the engine's ``skip_connect_normal`` and ``genotype`` of mu).

Helpers for benchmarks and user code: :func:`sample_architectures` (draws from q),
:func:`uniform_architectures` (the Zero-cost NAS baseline's uniform samples),
:func:`select` (score and pick).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdarts import genotype as genotype_lib
from jaxdarts import hypergrad
from jaxdarts import nb201 as nb201_lib
from jaxdarts import ops as ops_lib
from jaxdarts import optim
from jaxdarts import proxies
from jaxdarts import spaces as spaces_lib
from jaxdarts import supernet as supernet_lib
from jaxdarts.contract import ArchGrad, ConfigError, Hook, Method, Select, check_choice, check_positive
from jaxdarts.methods import _simplex

SELECTIONS = ("argmax",) + proxies.PROXIES
NOISE_SCOPES = ("all", "mixed_term_only")
TF_NETWORKS = ("auto", "eval", "search")


def config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        vadam=dict(lr=3e-4, b1=0.5, b2=0.999, prior_precision=1.0, init_precision=1.0,
                   dataset_size=0,  # 0: the architecture split's size
                   form="adam",  # adam (reference code) | paper (Eq. 17-18)
                   num_samples=1, noise_scope="all"),  # all (paper) | mixed_term_only (reference 2nd order)
        selection="argmax",  # argmax | synflow | snip | grasp
        num_candidates=100,
        tf=dict(dedupe=True, include_mean=False, sigma_scale=1.0, C=0, layers=0,  # 0: the search network's
                input_size=0,  # synflow input side; 0: the search images'
                synflow_bn="auto",  # auto (nb201_reference on nb201, none otherwise) | none | nb201_reference | keep
                # auto (search on nb201: the zero-cost-proxy code's NAS201Model; eval otherwise) | eval | search
                network="auto",
                score_batch=1, every=0, seed=0,
                # True: the scorer compiled without XLA's optimisation passes (kernels.FAST_COMPILE_OPTIONS):
                # on 2 CPU cores at the quick size its first call fell from 105 s to 50 s and a candidate
                # took 0.05 s instead of 0.02 s; worth it for tens of candidates, not for thousands
                fast_compile=False),
    ))


def validate(cfg) -> None:
    b = cfg.balenas
    v = b.vadam
    check_choice("balenas.vadam.form", v.form, optim.VADAM_FORMS)
    check_choice("balenas.vadam.noise_scope", v.noise_scope, NOISE_SCOPES)
    check_choice("balenas.selection", b.selection, SELECTIONS)
    check_choice("balenas.tf.synflow_bn", b.tf.synflow_bn, ("auto",) + proxies.SYNFLOW_BN)
    check_choice("balenas.tf.network", b.tf.network, TF_NETWORKS)
    for f in ("vadam.lr", "vadam.prior_precision", "vadam.init_precision"):
        check_positive(f"balenas.{f}", v[f.split(".")[1]])
    check_positive("balenas.vadam.dataset_size", v.dataset_size, allow_zero=True)
    check_positive("balenas.vadam.num_samples", v.num_samples, integer=True)
    check_positive("balenas.num_candidates", b.num_candidates, integer=True)
    check_positive("balenas.tf.score_batch", b.tf.score_batch, integer=True)
    for f in ("C", "layers", "input_size", "every"):
        check_positive(f"balenas.tf.{f}", b.tf[f], allow_zero=True, integer=True)
    check_positive("balenas.tf.sigma_scale", b.tf.sigma_scale, allow_zero=True)
    for f in ("b1", "b2"):
        if not 0 <= v[f] < 1:
            raise ConfigError(f"config.balenas.vadam.{f}={v[f]!r} must be in [0, 1)")
    if v.noise_scope == "mixed_term_only":
        ok = cfg.estimator == "finite_difference" or (
            cfg.estimator == "unrolled" and cfg.estimator_options.get("inner_steps", 1) == 1)
        if not ok:
            raise ConfigError(f"config.balenas.vadam.noise_scope='mixed_term_only' needs a second-order estimator "
                              f"with one virtual step; config.estimator={cfg.estimator!r}; accepted: "
                              "finite_difference, unrolled (inner_steps=1)")
    if cfg.num_seeds > 1 and b.selection != "argmax":
        raise ConfigError(f"config.num_seeds={cfg.num_seeds} runs a vmapped seed sweep without the per-run "
                          f"selection of config.balenas.selection={b.selection!r}; accepted: num_seeds=1, or "
                          "selection='argmax'")


def defaults(cfg) -> None:
    cfg.estimator = "first_order"


# ------------------------------------------------------------------ search step
def dataset_size(task, section=None) -> int:
    """VAdam's dataset size: ``vadam.dataset_size``, or the architecture split's size."""
    n = int((section if section is not None else task.method_config).vadam.dataset_size)
    return n or len(task.eval_data[1])


def arch_tx(ctx):
    v = ctx.config.vadam
    return optim.vadam(v.lr, v.b1, v.b2, v.prior_precision, v.init_precision,
                       dataset_size=dataset_size(ctx.task, ctx.config), form=v.form)


alpha_mask = _simplex.masks
"""``{cell_type: bool (E, K)}`` real alpha entries (broadcasts over per-cell alphas)."""


def sigma_stats(space, a_opt) -> dict:
    """Mean, min and max of sigma over the real alpha entries."""
    sig = optim.vadam_sigma(a_opt)
    vals = np.concatenate([np.asarray(sig[t])[..., np.asarray(space.mask(t))].ravel() for t in space.cell_types])
    return {"sigma_mean": float(vals.mean()), "sigma_min": float(vals.min()), "sigma_max": float(vals.max())}


def _mixed_term_only(task, state, tb, vb, samples, opts):
    """Reference second order: ``w'``, ``v`` and ``g1`` at mu; the mixed term at each draw."""
    train_loss, val_loss = task.losses(state.batch_stats)
    lr = opts["inner_lr"]
    w_prime, _ = hypergrad.sgd_step(train_loss, state.params, state.alpha, tb, lr, opts["momentum"],
                                    opts["momentum_buffer"], opts["weight_decay"])
    v, g1 = jax.grad(val_loss, argnums=(0, 1))(w_prime, state.alpha, vb)
    if task.estimator == "finite_difference":
        eps = opts.get("r", 0.01) / hypergrad.tree_norm(v)
        w_plus, w_minus = hypergrad.tree_axpy(eps, v, state.params), hypergrad.tree_axpy(-eps, v, state.params)

        def g2(a):
            gp = jax.grad(train_loss, argnums=1)(w_plus, a, tb)
            gm = jax.grad(train_loss, argnums=1)(w_minus, a, tb)
            return jax.tree.map(lambda p, m: -lr * (p - m) / (2 * eps), gp, gm)
    else:
        def g2(a):
            return hypergrad.tree_scale(-lr, hypergrad.mixed_product(train_loss, state.params, a, tb, v))

    g2s = jax.vmap(g2)(samples)
    return jax.tree.map(lambda a, b: a[None] + b, g1, g2s), g1


def arch_grad(ctx, state) -> ArchGrad:
    task, v = ctx.task, ctx.config.vadam
    train_batch, val_batch = ctx.arch_train_batch, ctx.arch_batch
    space = task.space
    samples = optim.vadam_sample(ctx.key, state.alpha, state.a_opt, v.num_samples, alpha_mask(space))
    opts = task.estimator_options(state)
    batch_stats = None
    if v.noise_scope == "mixed_term_only":
        gs, g1 = _mixed_term_only(task, state, train_batch, val_batch, samples, opts)
        metrics = {"g1_norm": hypergrad.tree_norm(g1)}
    elif task.estimator == "first_order" and task.arch_step_updates_bn(state):
        # first order with the reference's BatchNorm update: each sample's training-mode
        # forward on the architecture batch gives its gradient and its running statistics
        gs, sample_bs = jax.vmap(jax.grad(
            lambda a: task.val_loss_and_stats(state.params, state.batch_stats, a, val_batch), has_aux=True))(samples)
        norms = jax.vmap(hypergrad.tree_norm)(gs)
        metrics = {"g1_norm": jnp.mean(norms), "g2_norm": jnp.zeros_like(jnp.mean(norms))}
        batch_stats = sequential_bn_updates(state.batch_stats, sample_bs)
    else:
        train_loss, val_loss = task.losses(state.batch_stats)
        est = hypergrad.get(task.estimator)
        gs, aux = jax.vmap(lambda a: est(train_loss, val_loss, state.params, a, train_batch, val_batch,
                                         has_aux=True, **opts))(samples)
        metrics = {"g1_norm": jnp.mean(jax.vmap(hypergrad.tree_norm)(aux["g1"])),
                   "g2_norm": jnp.mean(jax.vmap(hypergrad.tree_norm)(aux["g2"]))}
    g = jax.tree.map(lambda x: jnp.mean(x, 0), gs)
    g2 = jax.tree.map(lambda x: jnp.mean(jnp.square(x), 0), gs)
    # batch_stats: the statistics of the samples' own forwards (no extra forward), or None
    return ArchGrad(g, metrics, {"grad_sq": g2}, batch_stats)


def sequential_bn_updates(old, stacked, momentum: float = ops_lib.BN_MOMENTUM):
    """The running statistics after the S forwards whose one-step updates from ``old`` are
    ``stacked`` (leading axis S, each ``momentum * old + (1 - momentum) * batch``) had run
    one after the other, as the reference's sample forwards do:
    ``momentum^S old + (1 - momentum) sum_k momentum^(S-k) batch_k``. S = 1: ``stacked[0]``."""
    def chain(o, st):
        if st.shape[0] == 1:
            return st[0]
        batch = (st - momentum * o[None]) / (1 - momentum)
        w = momentum ** jnp.arange(st.shape[0] - 1, -1, -1, dtype=st.dtype)
        return momentum ** st.shape[0] * o + (1 - momentum) * jnp.tensordot(w, batch, axes=1)

    return jax.tree.map(chain, old, stacked)


# ------------------------------------------------------------------- selection
def sample_architectures(space, mu, sigma, key, num: int, sigma_scale: float = 1.0):
    """``num`` genotypes discretised from draws ``mu + sigma_scale * sigma * eps``."""
    space = spaces_lib.get(space)
    draws = optim.gaussian_sample(key, mu, sigma, num, alpha_mask(space), sigma_scale)
    return [genotype_lib.derive(space, jax.tree.map(lambda d: d[i], draws)) for i in range(num)]


def uniform_architectures(space, key, num: int):
    """``num`` architectures uniformly at random (Zero-cost NAS baseline): the derivation of
    i.i.d. standard-normal logits picks each edge's op uniformly (NB201: all five, ``none``
    included) and, in top-2 spaces, each node's two edges uniformly."""
    space = spaces_lib.get(space)
    zeros = {t: jnp.zeros(s) for t, s in space.alpha_shapes().items()}
    ones = {t: jnp.ones(s) for t, s in space.alpha_shapes().items()}
    return sample_architectures(space, zeros, ones, key, num)


def dedupe(genotypes):
    """First occurrences in order."""
    seen, out = set(), []
    for g in genotypes:
        k = g.to_json()
        if k not in seen:
            seen.add(k)
            out.append(g)
    return out


def scoring_model(task) -> supernet_lib.Supernet:
    """The supernet that scores candidates (see the module docstring)."""
    t = task.method_config.tf
    return supernet_lib.Supernet(task.space, task.ds_info.num_classes, C=t.C or task.cfg.model.C,
                                 layers=t.layers or task.cfg.model.layers, lowering=task.lowering,
                                 track_running_stats=False, affine=tf_network(task) == "eval")


def tf_network(task) -> str:
    """``tf.network`` with ``'auto'`` resolved: ``'search'`` on NB201 (the zero-cost-proxy
    code's ``NAS201Model`` has the search cells' conv biases and affine-free BatchNorm),
    ``'eval'`` otherwise (NetworkCIFAR's cells, ``METHODS_SPEC.md`` 3.3)."""
    return _by_macro(task, task.method_config.tf.network, nb201="search", otherwise="eval")


def synflow_bn(task) -> str:
    return _by_macro(task, task.method_config.tf.synflow_bn, nb201="nb201_reference", otherwise="none")


def _by_macro(task, value, *, nb201, otherwise):
    """``value``, or for ``'auto'`` the choice for the task space's macro."""
    return (nb201 if task.space.macro == "nb201" else otherwise) if value == "auto" else value


def select(space, candidates, scorer, data, key, log=None):
    """Scores ``candidates`` (genotypes) with ``scorer`` (:func:`jaxdarts.proxies.make_scorer`,
    fresh init per candidate from ``key``) and returns ``(best_index, scores)`` (ties: first).
    With ``log``, more than 50 candidates are scored in chunks with progress lines."""
    space = spaces_lib.get(space)
    alphas = [genotype_lib.to_alpha(space, g) for g in candidates]
    stacked = {t: jnp.stack([a[t] for a in alphas]) for t in space.cell_types}
    keys = jax.random.split(key, len(candidates))
    scores = proxies.score_with_progress(scorer, stacked, keys, data, log=log)
    finite = np.where(np.isfinite(scores), scores, -np.inf)
    return int(np.argmax(finite)), scores


def tf_selection(task, state, log=None) -> dict:
    """BaLeNAS-TF on the state's q(mu, sigma): ``({'genotype', 'candidates', 'scores', ...},
    seconds)`` (the ten best candidates and their scores, best first)."""
    b = task.method_config
    t = b.tf
    t0 = time.time()
    key = jax.random.fold_in(jax.random.key(task.cfg.seed), 1_000_003 + t.seed)
    sigma = optim.vadam_sigma(state.a_opt)
    cands = sample_architectures(task.space, state.alpha, sigma, jax.random.fold_in(key, 0), b.num_candidates,
                                 t.sigma_scale)
    if t.include_mean:
        cands = [task.derive(state.alpha)] + cands
    if t.dedupe:
        cands = dedupe(cands)
    scorer = task.memo(("tf_scorer", b.selection), lambda: proxies.make_scorer(
        b.selection, scoring_model(task), batch_size=t.score_batch, synflow_bn=synflow_bn(task),
        fast_compile=bool(t.fast_compile)))
    if b.selection == "synflow":
        side = t.input_size or task.train_stream.images.shape[1]
        data = (1, side, side, task.train_stream.images.shape[-1])
    else:
        data = task.preprocess(jax.random.fold_in(key, 1), task.train_stream.batch(0, 0), True, 0.0)
        data = {"image": data["image"], "label": data["label"]}
    best, scores = select(task.space, cands, scorer, data, jax.random.fold_in(key, 2), log=log)
    if log:
        log(f"BaLeNAS-TF: {len(cands)} candidates scored with {b.selection} in {time.time() - t0:.1f} s")
    order = np.argsort(-np.where(np.isfinite(scores), scores, -np.inf), kind="stable")
    return {"proxy": b.selection, "genotype": cands[best].to_dict(), "num_candidates": len(cands),
            "candidates": [cands[i].to_dict() for i in order[:10]],
            "scores": [float(scores[i]) for i in order[:10]]}, time.time() - t0


class BalenasHook(Hook):
    """Sigma statistics every epoch; TF selection when due (``tf.every``) and after the
    last epoch, whose result becomes the run's architecture (:class:`~jaxdarts.contract.Select`)."""

    name = "balenas"

    def after_epoch(self, runner, epoch, metrics):
        task = runner.task
        metrics.update(sigma_stats(task.space, runner.state.a_opt))
        b = task.method_config
        table = task.space.macro == "nb201" and nb201_lib.available()
        if table:  # the optional NAS-Bench-201 table (jaxdarts.nb201)
            metrics["nb201_table_acc"] = nb201_lib.accuracy(task.derive(runner.state.alpha))
        if b.selection == "argmax":
            return None
        last = epoch == runner.cfg.epochs - 1
        if not (last or (b.tf.every and (epoch + 1) % b.tf.every == 0)):
            return None
        sel, seconds = tf_selection(task, runner.state, runner.log)
        g = genotype_lib.Genotype.from_json(sel["genotype"])
        metrics["tf_selected"] = sel["genotype"]
        if task.space.macro == "nb201":
            metrics["tf_selected_nb201"] = g.to_nb201_str()
            if table:
                metrics["tf_selected_table_acc"] = nb201_lib.accuracy(g)
        metrics["tf_top_scores"] = sel["scores"][:5]
        metrics["tf_time"] = seconds
        return [Select(sel["genotype"], sel)] if last else None


def hooks(cfg):
    return [BalenasHook()]


METHOD = Method(name="balenas", config=config, defaults=defaults, validate=validate, arch_grad=arch_grad,
                arch_tx=arch_tx, hooks=hooks,
                report_metrics=(("BaLeNAS sigma of q(alpha)", ("sigma_mean", "sigma_min", "sigma_max")),))
