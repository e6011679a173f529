"""BaLeNAS: VAdam against the reference optimiser and Eq. 17-18, the batched sample
gradients, training-free selection, NAS-Bench-201 fidelity pieces."""

import dataclasses
import functools
import re

import chex

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from jaxdarts import config as config_lib
from jaxdarts import genotype as G
from jaxdarts import hypergrad, networks, optim, search, spaces, supernet
from jaxdarts.methods import balenas
from reference import VadamTranscription

A = np.array([2.0, 0.5, 30.0, 1e-3])
C = np.array([1.0, -2.0, 0.3, 4.0])


def _quad_grad(theta):  # loss 0.5 * sum a (theta - c)^2
    return A * (theta - C)


@pytest.mark.parametrize("num_samples", [1, 3])
def test_vadam_adam_form_matches_the_reference_optimiser(num_samples, x64):
    n = 50
    mu0 = np.array([0.3, -0.1, 0.0, 2.0])
    ref = VadamTranscription(mu0, lr=0.05, betas=(0.5, 0.999), prior_prec=2.0, prec_init=3.0, train_set_size=n)
    tx = optim.vadam(0.05, 0.5, 0.999, prior_precision=2.0, init_precision=3.0, dataset_size=n)
    mu = jnp.asarray(mu0)
    state = tx.init(mu)
    np.testing.assert_allclose(optim.vadam_sigma(state), 1 / np.sqrt(3.0))  # sigma_1 = init_precision^-1/2
    rng = np.random.default_rng(0)
    for t in range(6):
        eps = rng.normal(size=(num_samples, 4))
        np.testing.assert_allclose(optim.vadam_sigma(state), ref.sigma(), rtol=1e-12)
        sigma = np.asarray(optim.vadam_sigma(state))
        gs = np.stack([_quad_grad(np.asarray(mu) + e * sigma) for e in eps])
        upd, state = tx.update(jnp.asarray(gs.mean(0)), state, mu, grad_sq=jnp.asarray((gs ** 2).mean(0)))
        mu = mu + upd
        np.testing.assert_allclose(mu, ref.step(_quad_grad, eps), rtol=1e-10, atol=1e-14)
        if t == 0 and num_samples == 1:  # first step: m^ = g + lt mu, s^ = (b2 s0 + (1 - b2) g^2) / (1 - b2)
            g, lt, s0 = gs[0], 2.0 / n, (3.0 - 2.0) / n
            shat = (0.999 * s0 + 0.001 * g ** 2) / 0.001
            np.testing.assert_allclose(mu, mu0 - 0.05 * (g + lt * mu0) / (np.sqrt(shat) + lt), rtol=1e-10)


def test_vadam_paper_form_is_eq_17_18_by_hand(x64):
    lr, b1, b2, n, lam = 0.1, 0.5, 0.9, 10, 1.0
    lt = lam / n
    tx = optim.vadam(lr, b1, b2, prior_precision=lam, init_precision=lam, dataset_size=n, form="paper")
    mu = jnp.asarray([1.0])
    state = tx.init(mu)
    # step 1 from mu0 = 1, s0 = 0, no previous step: g = 2
    s1 = 0.9 * 0 + 0.1 * 4.0
    mu1 = 1.0 - lr * (2.0 + lt * 1.0) / (s1 + lt)
    upd, state = tx.update(jnp.asarray([2.0]), state, mu)
    mu = mu + upd
    np.testing.assert_allclose(mu, [mu1])
    # step 2: g = -1, heavy-ball term b1 (s1 + lt) / (s2 + lt) (mu1 - mu0)
    s2 = 0.9 * s1 + 0.1 * 1.0
    mu2 = mu1 - lr * (-1.0 + lt * mu1) / (s2 + lt) + b1 * (s1 + lt) / (s2 + lt) * (mu1 - 1.0)
    upd, state = tx.update(jnp.asarray([-1.0]), state, mu, grad_sq=jnp.asarray([123.0]))  # ignored by Eq. 18
    np.testing.assert_allclose(mu + upd, [mu2])
    np.testing.assert_allclose(optim.vadam_sigma(state), [1 / np.sqrt(n * s2 + lam)])
    with pytest.raises(ValueError, match="form='eq17' is not accepted; accepted: adam, paper"):
        optim.vadam(dataset_size=10, form="eq17")


def test_vadam_samples_leave_padded_alpha_slots_alone():
    space = spaces.get("s1")  # 2 ops per edge padded to... every s1 edge has 2 ops: use a ragged space
    space = spaces.SearchSpace("test_ragged", {"normal": (("skip_connect", "sep_conv_3x3"), ("skip_connect",))},
                               ((0, 0), (0, 1)), steps=1)
    mu = {"normal": jnp.ones((2, 2))}
    tx = optim.vadam(dataset_size=10)
    s = optim.vadam_sample(jax.random.key(0), mu, tx.init(mu), 4, balenas.alpha_mask(space))
    assert s["normal"].shape == (4, 2, 2)
    assert np.all(s["normal"][:, 1, 1] == 1.0) and np.all(s["normal"][:, 0, :] != 1.0)


@functools.lru_cache(maxsize=None)
def _task(**kw):
    cfg = tiny_config("balenas", **{"balenas.vadam.num_samples": 2, "model.layers": 1, **dict(kw)})
    return search.SearchTask.from_config(cfg)


@pytest.mark.parametrize("estimator,scope", [("first_order", "all"),
                                             pytest.param("finite_difference", "mixed_term_only", marks=pytest.mark.slow)])
def test_sample_gradients_are_one_batched_computation(estimator, scope):
    """``arch_grad`` with 2 samples (one vmap) against the per-sample gradients computed
    one at a time at the same draws: their mean and the mean of their squares. For the
    reference's noise scope, each sample's gradient is written out independently: w', v and
    d_alpha L_val at mu, the central difference of d_alpha L_train at the draw."""
    task = _task(estimator=estimator, **{"balenas.vadam.noise_scope": scope})
    state = task.init_state()
    state = state.replace(a_opt=state.a_opt._replace(s=jax.tree.map(lambda s: s + 0.01, state.a_opt.s)))
    tb, _, vb = task.step_batches(jax.random.key(1), task.train_stream.batch(0, 0), task.val_stream.batch(0, 0),
                                  task.schedule_values(0))
    key = jax.random.key(5)
    tl, vl = task.losses(state.batch_stats)
    opts = task.estimator_options(state)

    def one_sample(a):  # independent of the method's code path
        if scope == "all":  # first order: d_alpha L_val(w, a) at the draw
            return jax.grad(vl, 1)(state.params, a, vb)
        lr = opts["inner_lr"]
        w1 = jax.tree.map(lambda w, d: w - lr * (d + opts["weight_decay"] * w), state.params,
                          jax.grad(tl)(state.params, state.alpha, tb))  # first step: buffer = gradient
        v, g1 = jax.grad(vl, (0, 1))(w1, state.alpha, vb)
        eps = 0.01 / jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(v)))
        gp = jax.grad(tl, 1)(jax.tree.map(lambda w, d: w + eps * d, state.params, v), a, tb)
        gm = jax.grad(tl, 1)(jax.tree.map(lambda w, d: w - eps * d, state.params, v), a, tb)
        return jax.tree.map(lambda x, p, m: x - lr * (p - m) / (2 * eps), g1, gp, gm)

    @jax.jit  # one program: the method's batched gradient and the separate ones
    def both(state):
        g, _, extra, *bs = balenas.arch_grad(task.context(key=key, arch_train_batch=tb, arch_batch=vb), state)
        # the draws, transcribed: mu + sigma * eps, sigma = 1/sqrt(N s + prior) from the raw s,
        # eps ~ N(0, 1) from one key per alpha leaf (leaf order), padded slots left at mu
        n, prior = balenas.dataset_size(task), task.cfg.balenas.vadam.prior_precision
        leaves, tree = jax.tree.flatten(state.alpha)
        keys = jax.random.split(key, len(leaves))
        draws = [mu + jnp.where(jnp.asarray(task.space.mask(t)), 1 / jnp.sqrt(n * s_ + prior), 0.0)
                 * jax.random.normal(k, (2,) + mu.shape, mu.dtype)
                 for k, mu, s_, t in zip(keys, leaves, jax.tree.leaves(state.a_opt.s), sorted(state.alpha))]
        samples = jax.tree.unflatten(tree, draws)
        # the reference's running statistics: the two sample forwards one after the other
        seq = state.batch_stats
        for k in range(2):
            seq = task.apply(state.params, seq, jax.tree.map(lambda x: x[k], samples), vb, train=True)[2]
        return g, extra, [one_sample(jax.tree.map(lambda x: x[k], samples)) for k in range(2)], bs, seq

    g, extra, per, bs, seq = jax.device_get(both(state))
    if scope == "all":  # first order: the statistics of its own forwards, chained as the reference's
        chex.assert_trees_all_close(bs[0], seq, rtol=1e-4, atol=1e-6)
        assert not np.allclose(bs[0]["stem_bn"]["mean"], state.batch_stats["stem_bn"]["mean"])
    for t in g:
        stack = np.stack([np.asarray(p[t]) for p in per])
        np.testing.assert_allclose(g[t], stack.mean(0), rtol=2e-3, atol=1e-6)
        np.testing.assert_allclose(extra["grad_sq"][t], (stack ** 2).mean(0), rtol=4e-3, atol=1e-9)
    assert not np.allclose(per[0]["reduce"], per[1]["reduce"])  # the draws differ (one cell: a reduction cell)


def test_tf_sampling_dedupe_and_nb201_argmax_with_none():
    sp = spaces.get("nb201")
    mu = {"normal": jnp.zeros((6, 5)).at[:, 0].set(2.0).at[0, 3].set(3.0)}  # none wins except edge 0
    g = G.derive(sp, mu)
    assert g.to_nb201_str() == "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    zero = {"normal": jnp.zeros((6, 5))}
    draws = balenas.sample_architectures(sp, mu, zero, jax.random.key(0), 7)
    assert len(draws) == 7 and all(d == g for d in draws) and balenas.dedupe(draws) == [g]  # sigma = 0
    uni = balenas.uniform_architectures(sp, jax.random.key(1), 400)
    counts = np.bincount([sp.ops["normal"][0].index(op) for d in uni for op, _ in d.normal], minlength=5)
    assert counts.min() > 400 * 6 / 5 * 0.8  # every op, none included, about equally often
    assert len(balenas.dedupe(uni)) > 390
    darts = balenas.uniform_architectures("darts", jax.random.key(2), 50)
    assert all(op != "none" for d in darts for op, _ in d.normal) and len(balenas.dedupe(darts)) == 50


def test_tf_selection_keeps_each_candidate_with_its_score(monkeypatch):
    """BaLeNAS-TF's wiring, with a scorer whose score is known from the genotype alone: a
    fixed weight per (cell type, edge, op) summed over the selected ops, computed here from
    the genotype's (op, input) pairs, not from the code's one-hot encoding. The selection
    must be the best candidate, and the reported candidates and scores must pair up."""
    import collections

    from jaxdarts import jit_cache, proxies

    monkeypatch.setattr(jit_cache, "_CACHE", collections.OrderedDict())  # the fake scorer stays in this test
    cfg = tiny_config("balenas", **{"balenas.selection": "synflow", "balenas.num_candidates": 12,
                                    "balenas.tf.sigma_scale": 5.0})
    task = search.SearchTask.from_config(cfg)
    space = task.space
    rng = np.random.default_rng(3)
    table = {t: rng.normal(size=(space.num_edges, space.num_ops)) for t in space.cell_types}

    def known_score(g):
        total = 0.0
        for t in space.cell_types:
            node_edges = getattr(g, t)
            for j, (op, inp) in enumerate(node_edges):
                node = j // 2  # two inputs per node (top-2 derivation), in node order
                e = space.edge_index(node, inp)
                total += table[t][e, space.ops[t][e].index(op)]
        return total

    models = []

    def fake_make_scorer(proxy, model, **_):
        models.append(model)

        def scorer(alphas, keys, data):  # the one-hot alphas against the table
            return np.asarray(sum(np.einsum("nek,ek->n",
                                            np.asarray(alphas[t], np.float64), table[t]) for t in space.cell_types))
        return scorer

    monkeypatch.setattr(proxies, "make_scorer", fake_make_scorer)
    alpha = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32), supernet.init_alpha(
        space, jax.random.key(0)))
    a_opt = task.arch_tx().init(alpha)
    state = type("S", (), {"alpha": alpha, "a_opt": a_opt})()
    sel, _ = balenas.tf_selection(task, state)
    cands = [G.Genotype.from_json(c) for c in sel["candidates"]]
    expect = [known_score(g) for g in cands]
    np.testing.assert_allclose(sel["scores"], expect, rtol=1e-9)
    assert expect == sorted(expect, reverse=True) and len(set(np.round(expect, 9))) > 1
    assert G.Genotype.from_json(sel["genotype"]) == cands[0]
    # tf.network: the evaluation network's cells by default in the DARTS macro, the search
    # supernet's on request (their equivalence to NetworkCIFAR: tests/test_proxies.py)
    assert [m.affine for m in models] == [True] and models[0].track_running_stats is False
    for net, space, affine in (("search", "s2", False), ("eval", "nb201", True), ("auto", "nb201", False)):
        t = dataclasses.replace(task, cfg=tiny_config("balenas", space=space, **{"balenas.tf.network": net}),
                                space=spaces.get(space))
        assert balenas.scoring_model(t).affine is affine, (net, space)
    with pytest.raises(config_lib.ConfigError, match=re.escape(
            "config.balenas.tf.network='supernet' is not accepted; accepted: auto, eval, search")):
        config_lib.validate(tiny_config("balenas", **{"balenas.tf.network": "supernet"}))


def test_nb201_networks_have_the_published_parameter_counts():
    def count(model, *args):
        v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), *args, train=False))
        return supernet.count_params(v["params"])

    conv3 = G.Genotype.from_nb201_str("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
                                      "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    cheap = G.Genotype.from_nb201_str("|none~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|skip_connect~1|avg_pool_3x3~2|")
    assert count(networks.NetworkNB201(conv3)) == 1_531_546  # NAS-Bench-201 TinyNetwork
    assert count(networks.NetworkNB201(cheap)) == 73_306
    # the zero-cost-proxy network: cell convs with bias, BatchNorm without parameters
    assert count(networks.NetworkNB201(conv3, cell_affine=False, track_running_stats=False)) == 1_528_186
    # AutoDL-Projects' DARTS search supernet (cell conv biases)
    assert count(supernet.Supernet("nb201", 10, C=16, layers=5), supernet.init_alpha("nb201", jax.random.key(0))) \
        == 1_692_826


def test_nb201_strings_round_trip_and_parse_with_nats_bench():
    nats = pytest.importorskip("nats_bench.genotype_utils")
    sp = spaces.get("nb201")
    for k in range(20):
        cols = np.random.default_rng(k).integers(0, 5, 6)
        g = G.derive(sp, {"normal": jnp.asarray(np.eye(5)[cols])})
        s = g.to_nb201_str()
        assert G.Genotype.from_nb201_str(s) == g
        st = nats.topology_str2structure(s)
        assert st.tostr() == s
        assert [op for node in st.tolist("")[0] for op, _ in node] == [op for op, _ in g.normal]
    for bad, match in [("|nor_conv_3x3~0|+|none~0|", "expected 3 nodes"),
                       ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "entry 'conv~0' of node 1"),
                       ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", "entry 'none~1' of node 2")]:
        with pytest.raises(ValueError, match=match):
            G.Genotype.from_nb201_str(bad)


def test_nb201_table_index_mapping():
    from jaxdarts import nb201

    best = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert nb201.naslib_op_indices(best) == (2, 2, 0, 2, 2, 2)  # NASLib edge order (1,0),(2,0),(3,0),(2,1),...
    if not nb201.available():
        with pytest.raises(nb201.TableNotInstalledError, match="pip install analog-nasbench"):
            nb201.accuracy(best)
        pytest.skip("analog-nasbench not installed")
    assert nb201.accuracy(best) == pytest.approx(93.988)
    assert len(nb201.table()) == 15625


def test_second_order_under_nesterov_takes_autodls_heavy_ball_virtual_step(x64):
    """AutoDL-Projects DARTS-V2 (``_compute_unrolled_model``) under its Nesterov SGD: the
    virtual step is ``theta - lr (mu buf + dL/dtheta + wd theta)`` with the real optimiser's
    momentum buffer (torch's ``buf = mu buf + d``). After two real Nesterov steps, the
    engine's options (buffer from the optax state) give the unrolled gradient of that
    transcription (computed here with ``jax.grad`` through the hand-written step)."""
    rng = np.random.default_rng(0)
    w0, a = jnp.asarray(rng.normal(size=4)), jnp.asarray(rng.normal(size=4))
    B, V = jnp.asarray(rng.normal(size=(4, 4))), jnp.asarray(rng.normal(size=4))
    train = lambda w, al, b: 0.5 * jnp.sum((B @ w - al) ** 2) + 0.1 * jnp.sum(w ** 4)
    val = lambda w, al, b: jnp.sum(jnp.sin(w) * V) + 0.3 * jnp.sum(al * w)
    lr, mu, wd = 0.05, 0.9, 5e-4
    tx = optim.sgd_injectable(lr, mu, wd, None, nesterov=True)
    st, w, buf = tx.init(w0), w0, np.zeros(4)
    for _ in range(2):  # real steps; the torch buffer alongside
        g = jax.grad(train)(w, a, None)
        buf = mu * buf + np.asarray(g + wd * w)
        u, st = tx.update(g, st, w)
        w = w + u
    np.testing.assert_allclose(optim.momentum_buffer(st), buf, rtol=1e-12)
    virtual = lambda al: w - lr * (mu * buf + jax.grad(train)(w, al, None) + wd * w)
    expect = jax.grad(lambda al: val(virtual(al), al, None))(a)
    got = hypergrad.unrolled(train, val, w, a, None, None, inner_lr=lr, momentum=mu, weight_decay=wd,
                             momentum_buffer=optim.momentum_buffer(st))
    np.testing.assert_allclose(got, expect, rtol=1e-10)


def test_balenas_configs_and_nb201_protocol_validate():
    import os

    from conftest import REPO

    mod = config_lib.load_module(os.path.join(REPO, "configs", "balenas.py"))
    for arg in ("", "quick", "nb201", "nb201,quick", "argmax", "paper_vadam", "reference_noise", "quick,argmax"):
        config_lib.validate(mod.get_config(arg))
    c = mod.get_config("nb201")
    assert c.optim.nesterov and c.optim.lr_schedule == "step_cosine" and c.optim.weight_decay == 5e-4
    for est in ("unrolled", "finite_difference"):  # second order under Nesterov SGD, as AutoDL's DARTS-V2
        c.estimator = est
        config_lib.validate(c)
    c = mod.get_config("quick")
    c.balenas.vadam.noise_scope = "mixed_term_only"
    with pytest.raises(config_lib.ConfigError, match="noise_scope='mixed_term_only' needs a second-order"):
        config_lib.validate(c)
    with pytest.raises(ValueError, match="unknown variant 'nb101'"):
        mod.get_config("nb101")
    # Nesterov SGD as PyTorch: d + mu * buf with buf = mu * buf + d
    tx = optim.sgd(0.1, 0.9, 0.0, None, nesterov=True)
    w = jnp.asarray([1.0])
    st = tx.init(w)
    u1, st = tx.update(jnp.asarray([1.0]), st, w)
    u2, st = tx.update(jnp.asarray([2.0]), st, w)
    np.testing.assert_allclose([u1[0], u2[0]], [-0.1 * (1 + 0.9 * 1), -0.1 * (2 + 0.9 * (0.9 + 2))], rtol=1e-6)
