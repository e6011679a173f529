"""The method registry and the engine/method split: a common battery run over every
registered method, plus the engine's own guarantees (no method imports, building from
arrays, one source of estimator options)."""

import ast
import dataclasses
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from conftest import REPO, tiny_config
from jaxdarts import config as config_lib
from jaxdarts import compare, data, io as io_lib, methods, optim, search


BAD_FIELDS = {
    "amended": ("estimator", "unrolled", "config.estimator='unrolled' is not accepted by method"),
    "balenas": ("balenas.selection", "jacov",
                "config.balenas.selection='jacov' is not accepted; accepted: argmax, synflow, snip, grasp"),
    "darts": ("estimator", "second", "config.estimator='second' is not accepted"),
    "drnas": ("drnas.reg_type", "l1", "config.drnas.reg_type='l1' is not accepted; accepted: l2, kl"),
    "msdarts": ("msdarts.omega", "gaussian",
                "config.msdarts.omega='gaussian' is not accepted; accepted: softmax, proportional"),
    "pcdarts": ("model.partial_channels", "0", "config.model.partial_channels=0 must be a positive number"),
    "robustdarts": ("robustdarts.sweep.target", "l1",
                    "config.robustdarts.sweep.target='l1' is not accepted; accepted: none, drop_path"),
    "sdarts": ("sdarts.kind", "pgd", "config.sdarts.kind='pgd' is not accepted; accepted: rs, adv"),
    "stacnas": ("stacnas.rank_by", "value", "config.stacnas.rank_by='value' is not accepted; accepted: logits, softmax"),
}
"""Per method, ``(field, bad value, the one-line error)`` for the battery: a field it validates
with a value it must refuse. A method registered later without an entry here gets the first
string field of its section set to a value no ``check_choice`` accepts."""


def _battery() -> dict:
    """method -> (config file, a bad override of a field it validates, the one-line error),
    from the registry and :data:`BAD_FIELDS`."""
    files = compare.method_config_files()  # method -> the config file whose :quick variant runs it
    out = {}
    for name in methods.names():
        m = methods.get(name)
        if name in BAD_FIELDS:
            field, bad, message = BAD_FIELDS[name]
        else:
            section = m.config().to_dict() if m.config else {}
            field = next((f"{name}.{k}" for k, v in section.items() if isinstance(v, str)), None)
            bad, message = "__bad__", f"config.{field}='__bad__' is not accepted"
        out[name] = (files.get(name), None if field is None else f"--config.{field}={bad}", message)
    return out


BATTERY = _battery()
"""Every registered method, found in the registry (a new method joins without an edit here)."""


def _tiny(name):
    """A tiny search of each method, on the shapes other tests compile too (the persistent
    compilation cache then shares the programs): darts as ``tiny_config()`` (test_search),
    robustdarts with eigenvalues and early stopping as the ES/ADA tests (test_rdarts),
    amended in the consistent search of Amended-DARTS Section 4.1.2 (fixed edges,
    auxiliary tower, cutout and drop-path during search; 2 ops per edge instead of 8 and 2
    nodes instead of 4)."""
    if name == "amended":
        from jaxdarts import spaces

        if "test_fixed_2op" not in spaces.NAMES:  # Amended-DARTS's fixed edges on 2 nodes, as the space "tiny"
            edges = tuple((node, inp) for node in range(2) for inp in (0, node + 1))
            spaces.register(spaces.SearchSpace("test_fixed_2op", {t: (("skip_connect", "sep_conv_3x3"),) * len(edges)
                                                                  for t in ("normal", "reduce")},
                                               edges, steps=2, derive="all"))
        cfg = tiny_config(name, space="test_fixed_2op", epochs=2, steps_per_epoch=1)
        cfg.data.image_size = 32  # the auxiliary head needs 8x8 maps
        cfg.model.auxiliary = True
        cfg.data.cutout = 8
        cfg.regularization.drop_path = 0.3
        cfg.regularization.ramp = False
        return cfg
    if name == "balenas":  # VAdam, two samples, BaLeNAS-TF with Synflow over 4 draws after the last epoch
        return tiny_config(name, **{"balenas.vadam.num_samples": 2, "balenas.selection": "synflow",
                                    "balenas.num_candidates": 4, "balenas.tf.sigma_scale": 3.0,
                                    "balenas.tf.layers": 1})  # a one-cell scoring network: compiles fast
    if name == "msdarts":  # alpha steps from the second epoch (the reference waits 5)
        return tiny_config(name, arch_start_epoch=1)
    if name == "sdarts":  # the adversarial kind: the attack's gradients inside the step
        return tiny_config(name, **{"sdarts.kind": "adv", "sdarts.attack_steps": 2})
    if name == "stacnas":  # stage 1 as one search (the program: test_stacnas, same shapes)
        return tiny_config(name, space="stacnas_stage1", epochs=2,
                           **{"stacnas.stage1_layers": 2, "stacnas.stage2_layers": 3, "model.layers": 2})
    if name == "robustdarts":
        cfg = tiny_config(name, epochs=6, hessian_every=2)  # the ES tests' program, fewer Hessians
        cfg.robustdarts.early_stopping.mode = "code"
        return cfg
    cfg = tiny_config(name)  # any other method: its defaults at the tiny size, alpha steps from the 2nd epoch
    cfg.arch_start_epoch = min(cfg.arch_start_epoch, 1)
    if cfg.model.partial_channels > 1:
        cfg.model.partial_channels = 2  # C=4: K=2 leaves 2 channels per op
    return cfg


def test_every_method_has_a_quick_config_and_a_bad_field():
    for name in methods.names():
        assert methods.get(name).name == name
        cfg_file, bad, _ = BATTERY[name]
        assert cfg_file is not None, f"no configs/*.py whose :quick variant runs method {name!r}"
        assert bad is not None, f"method {name!r}: no BAD_FIELDS entry and no string field in its section"
    with pytest.raises(ValueError, match="unknown method 'dart'; accepted: " + ", ".join(methods.names()) + "$"):
        methods.get("dart")


@pytest.mark.parametrize("name", sorted(BATTERY))
def test_method_config_validates_and_bad_fields_exit_2(name, tmp_path):
    config_lib.validate(config_lib.base(name))
    config_lib.validate(_tiny(name))
    cfg_file, bad, message = BATTERY[name]
    r = subprocess.run([sys.executable, os.path.join(REPO, "bin", "search.py"), "--config",
                        f"configs/{cfg_file}.py:quick", "--workdir", str(tmp_path / "w"), bad],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
    assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("name", [n if n == "darts" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(BATTERY)])
def test_method_tiny_search_runs_and_resumes_bit_identically(name, tmp_path):
    cfg = _tiny(name)
    task = search.SearchTask.from_config(cfg)  # one task: the runners share its compiled step
    full = search.Runner(task, str(tmp_path / "full"), search.default_hooks(cfg), log=lambda *_: None)
    out = full.run()
    assert out["epochs_run"] == cfg.epochs and out["finished"]
    search.run_single(cfg, str(tmp_path / "part"), log=lambda *_: None, max_epochs=1, task=task)
    if name == "darts":  # a report of a search still going: cells of its last epoch, and of chosen epochs
        from jaxdarts import report

        run = report.load_run(str(tmp_path / "part"))
        assert run["genotype"]["finished"] is False and len(report.sections(run)["cells"]) == 2
        assert len(report.sections(run, epochs=(1,))["cells"]) == 4
    logs = []
    resumed = search.Runner(task, str(tmp_path / "part"), search.default_hooks(cfg), log=logs.append)
    assert resumed.run() == out and any("resumed" in l and "at epoch 1" in l for l in logs)
    chex.assert_trees_all_equal(jax.device_get(resumed.state), jax.device_get(full.state))
    mf, mp = (io_lib.read_jsonl(str(tmp_path / d / "metrics.jsonl")) for d in ("full", "part"))
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("train_time", "steps_per_sec", "hessian_time", "tf_time")}
                          for r in rows]
    assert strip(mf) == strip(mp) and len(mf) == cfg.epochs
    # the run's report renders with the sections this method has data for
    from jaxdarts import report

    page = report.render_html([report.load_run(str(tmp_path / "full"))])
    expected = ({"cells", "alpha", "curves", "config"} | ({"eigenvalue"} if cfg.hessian_every else set())
                | ({"method"} if methods.get(name).report_metrics else set()))
    assert all(f"id='section-{s}'" in page for s in expected), name
    assert page.count("data:image/png;base64,") >= 4
    from jaxdarts import tensorboard as tb  # scalars every epoch, the final cells as images

    (events,) = [os.path.join(tmp_path / "full" / "tensorboard", f) for f in os.listdir(tmp_path / "full" / "tensorboard")]
    recs = tb.read_records(events)
    assert sum(b"train_loss" in r for r in recs) == cfg.epochs and any(b"cells/final_normal" in r for r in recs)
    if name == "robustdarts":
        # the reference's schedule: epochs with epoch % every == 0, and the last
        assert [r["epoch"] for r in mf if np.isfinite(r.get("eigenvalue", np.nan))] == [0, 2, 4, 5]
        assert all(r["eigenvalue_abs"] == abs(r["eigenvalue"]) for r in mf if "eigenvalue" in r)  # MS-DARTS's figure
    if name == "balenas":
        last = mf[-1]
        # the last epoch's sigma statistics: 1/sqrt(N s + prior) of the final VAdam state's raw s
        # (the reference's sigma, METHODS_SPEC 3.1) over the real alpha entries, in NumPy
        a_opt = jax.device_get(full.state.a_opt)
        n_arch = cfg.balenas.vadam.dataset_size or len(task.eval_data[1])  # the architecture split
        sig = np.concatenate([(1 / np.sqrt(n_arch * np.asarray(a_opt.s[t], np.float64)
                                           + cfg.balenas.vadam.prior_precision))[np.asarray(task.space.mask(t))]
                              for t in task.space.cell_types])
        assert (last["sigma_mean"], last["sigma_min"], last["sigma_max"]) == pytest.approx(
            (sig.mean(), sig.min(), sig.max()), rel=1e-5)
        assert out["genotype"] == last["tf_selected"] == out["selection"]["genotype"]
        assert out["last_genotype"] == last["genotype"]  # argmax mu
        assert len(last["tf_top_scores"]) == min(4, out["selection"]["num_candidates"])
    if name == "msdarts":
        assert [r["arch_update"] for r in mf] == [0.0, 1.0, 1.0]
        assert [r["ms_epsilon"] for r in mf] == pytest.approx([0.025 + 0.225 * e / 3 for e in range(3)])
        assert all(r["ms_shift"] > 0 for r in mf)
    if name == "sdarts":
        assert [r["sdarts_epsilon"] for r in mf] == pytest.approx([0.03 + 0.27 * e / 3 for e in range(3)])
        assert all(r["perturb_linf"] > 0 for r in mf)  # the attack itself: test_msdarts
    if name == "amended":
        m = mf[0]
        assert m["drop_prob"] == pytest.approx(0.3)  # the gradient itself: test_amended_search_gradient...
        assert [i for _, i in m["genotype"]["normal"]] == [0, 1, 0, 2]  # all fixed edges kept


def test_amended_search_gradient_is_eq_7_against_forward_mode_derivatives():
    """The engine's architecture gradient for method ``amended`` (first step, batches as the
    step preprocesses them) against Eq. 7 computed independently along a random direction
    u: g.u = d_alpha L_val.u - eta * d/de <grad_w L_train(w, alpha + e u), H v>, v = grad_w
    L_val, with H v and the derivative in e as forward-mode derivatives of ``jax.grad``
    (the estimator uses reverse-mode mixed products); the logged g1/g2 norms are those
    terms'. One reduction cell: the wiring is under test, not the network."""
    from jax.flatten_util import ravel_pytree

    cfg = tiny_config("amended", steps_per_epoch=1, **{"model.layers": 1})
    task = search.SearchTask.from_config(cfg)
    state = task.init_state()
    k = search.fold_key(state.rng, state.step)
    _, tb, vb = task.step_batches(k, task.train_stream.batch(0, 0), task.val_stream.batch(0, 0),
                                  task.schedule_values(0))
    tl, vl = task.losses(state.batch_stats)
    eta = cfg.estimator_options.eta
    dot = lambda x, y: ravel_pytree(x)[0] @ ravel_pytree(y)[0]

    @jax.jit  # one program: the engine's gradient and the independent terms
    def both(state, u):
        g, metrics, *_ = search.estimator_arch_grad(task.context(arch_train_batch=tb, arch_batch=vb), state)
        w, a = state.params, state.alpha
        g1, v = jax.grad(vl, (1, 0))(w, a, vb)
        hv = jax.jvp(lambda w_: jax.grad(tl, 0)(w_, a, tb), (w,), (v,))[1]
        d2 = jax.jvp(lambda a_: dot(jax.grad(tl, 0)(w, a_, tb), hv), (a,), (u,))[1]
        return g, metrics, g1, dot(g1, u), -eta * d2

    u = jax.tree.map(lambda x: jax.random.normal(jax.random.key(9), x.shape), state.alpha)
    g, metrics, g1, g1u, g2u = jax.device_get(both(state, u))
    flat = lambda t: np.asarray(ravel_pytree(t)[0], np.float64)
    assert abs(g2u) > 1e-2 * abs(g1u)  # the second-order term matters here
    np.testing.assert_allclose(flat(g) @ flat(u), g1u + g2u, rtol=2e-3)
    np.testing.assert_allclose(metrics["g1_norm"], np.linalg.norm(flat(g1)), rtol=1e-4)
    np.testing.assert_allclose(metrics["g2_norm"], np.linalg.norm(flat(g) - flat(g1)), rtol=1e-3)


def _package_imports():
    """``{module: (module-level jaxdarts imports, function-local jaxdarts imports)}`` for every
    module of the package (``jaxdarts.configs`` included), read from the source."""
    pkg = os.path.join(REPO, "jaxdarts")
    files = {f"jaxdarts.{f[:-3]}": os.path.join(pkg, f) for f in os.listdir(pkg) if f.endswith(".py")}
    files.update({f"jaxdarts.methods.{f[:-3]}": os.path.join(pkg, "methods", f)
                  for f in os.listdir(os.path.join(pkg, "methods")) if f.endswith(".py")})
    files.update({f"jaxdarts.configs.{f[:-3]}": os.path.join(REPO, "configs", f)
                  for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".py")})
    files = {m[:-len(".__init__")] if m.endswith(".__init__") else m: p for m, p in files.items()}

    def target(name):  # "jaxdarts.search.Method" -> the module "jaxdarts.search"
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    out = {}
    for mod, path in files.items():
        tree = ast.parse(open(path).read())
        top, local = set(), set()
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            names = {t for t in map(target, (n for n in names if n.startswith("jaxdarts"))) if t and t != mod}
            if not names:
                continue
            p, inside = parents.get(node), False
            while p is not None:
                inside |= isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef))
                p = parents.get(p)
            (local if inside else top).update(names)
        out[mod] = (top, local)
    return out


LAYERS = (
    # foundation: no model, no engine
    ("contract", "io", "kernels", "data", "optim", "parallel", "perturb", "problems", "jit_cache", "losses",
     "bootstrap", "cell_diagram", "checkpoint", "tensorboard", "registry"),
    # spaces, networks, estimators and analyses
    ("ops", "spaces", "supernet", "genotype", "networks", "discrete", "hypergrad", "analysis", "nb201", "proxies"),
    # the engine and the trainers
    ("config", "task", "hooks", "sweep", "resume", "runner", "search", "retrain"),
    # the plug-ins (jaxdarts.methods and its modules)
    ("methods",),
    # tools on top: the leaderboard, reports, the command line, the shipped configs, the package's namespace
    ("compare", "report", "cli", "configs", ""),
)
"""The package's layers, lowest first: a module may import its own layer and those below."""


def _layer(module: str) -> int:
    name = module[len("jaxdarts."):] if module.startswith("jaxdarts.") else ""
    top = name.split(".")[0]
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module} is in no layer of LAYERS: place it")


def test_package_imports_have_no_circle_and_no_upward_import():
    """The engine split: module-level imports only (no function-local import to hide a
    circle), no circle anywhere, the contract imports nothing of the package, no module
    imports one of a layer above its own (:data:`LAYERS`: the engine finds methods through
    the registry at the bottom, the hooks draw cells without the report), and no engine
    module imports a method module."""
    graph = _package_imports()
    climbs = sorted(f"{m} -> {n}" for m, (top, _) in graph.items() for n in top if _layer(n) > _layer(m))
    assert not climbs, f"imports of a layer above: {climbs}"
    assert {"jaxdarts.contract", "jaxdarts.task", "jaxdarts.runner", "jaxdarts.search"} <= set(graph)
    local = {m: sorted(l) for m, (_, l) in graph.items() if l}
    assert not local, f"function-local imports of package modules: {local}"
    assert not graph["jaxdarts.contract"][0], graph["jaxdarts.contract"][0]
    assert graph["jaxdarts.registry"][0] == {"jaxdarts.contract"}  # the registry imports no method

    def cycle():  # depth-first search for a back edge
        state, stack = {}, []

        def visit(m):
            state[m] = 1
            stack.append(m)
            for n in sorted(graph.get(m, ((), ()))[0]):
                if state.get(n) == 1:
                    return stack[stack.index(n):] + [n]
                if n not in state and (c := visit(n)):
                    return c
            state[m] = 2
            stack.pop()
            return None

        for m in sorted(graph):
            if m not in state and (c := visit(m)):
                return c
        return None

    assert cycle() is None, f"import circle: {' -> '.join(cycle())}"
    method_modules = {f"jaxdarts.methods.{n}" for n in methods.names()} | {"jaxdarts.methods._simplex"}
    engine = [m for m in graph if not m.startswith(("jaxdarts.methods", "jaxdarts.configs"))]
    for m in engine:
        bad = method_modules & graph[m][0]
        assert not bad, f"{m} imports {bad}"


@pytest.mark.slow
def test_engine_builds_from_arrays_and_is_frozen(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (256, 8, 8, 1), dtype=np.uint8)  # the shapes of tiny_config: a shared program
    y = rng.integers(0, 10, 256).astype(np.int32)
    cfg = tiny_config()
    task = search.SearchTask.from_arrays(cfg, (x[:128], y[:128]), (x[128:], y[128:]), data.info("fashion_mnist"))
    assert task.model.num_classes == 10 and task.lowering == "conv" and task.method.name == "darts"
    np.testing.assert_array_equal(task.train_stream.images, x[:128])
    with pytest.raises(Exception, match="cannot assign"):
        task.ds_info = data.info("cifar10")
    out = search.Runner(task, str(tmp_path), log=lambda *_: None).run(max_epochs=1)
    assert not out["finished"] and 0 <= io_lib.read_jsonl(str(tmp_path / "metrics.jsonl"))[0]["val_acc"] <= 1


def test_estimator_options_come_from_the_real_weight_optimiser():
    """The search step and the diagnostics get the same options: the virtual step uses the
    weight optimiser's current learning rate, momentum buffer and (ADA-changed) weight decay."""
    cfg = tiny_config(estimator="unrolled")
    cfg.estimator_options.inner_steps = 1
    task = search.SearchTask.from_config(cfg)
    state = task.init_state()
    state = state.replace(w_opt=optim.set_hyperparam(state.w_opt, "weight_decay", 0.05))
    for name in ("unrolled", "finite_difference"):
        o = task.estimator_options(state, name)
        assert float(o["inner_lr"]) == pytest.approx(cfg.optim.lr) and o["momentum"] == cfg.optim.momentum
        assert float(o["weight_decay"]) == pytest.approx(0.05)
        chex.assert_trees_all_equal(o["momentum_buffer"], state.w_opt.inner_state[2][0].trace)
    assert task.estimator_options(state)["inner_steps"] == 1  # the config's options: configured estimator only
    assert "inner_steps" not in task.estimator_options(state, "finite_difference")
    assert task.estimator_options(state, "amended") == {"recompute": False}


@pytest.mark.slow
def test_update_orders_and_mixing_weights_slot():
    """The engine's slots for the coming methods, from the same state and batches:
    ``simultaneous`` takes the architecture step of ``alpha_first`` and the weight step of
    ``weights_first`` (both at the old point); ``weights_first`` computes alpha's gradient
    at the new weights. The simultaneous method also has a ``mix`` that gives the weight
    step softmax(alpha) through the ``normalized`` path (same numbers; it was called)."""
    import dataclasses

    from jaxdarts import mixing_weights

    calls = []

    def same_weights(ctx, state):
        calls.append(1)
        return search.Mix(mixing_weights(ctx.space, state.alpha))

    base = search.SearchTask.from_config(tiny_config())
    s0 = base.init_state()
    batches = (base.train_stream.batch(0, 0), base.val_stream.batch(0, 0), base.schedule_values(0))
    states = {}
    for name, method in [("alpha_first", base.method),
                         ("weights_first", search.Method("darts", update_order="weights_first")),
                         ("simultaneous", search.Method("darts", update_order="simultaneous", mix=same_weights))]:
        task = dataclasses.replace(base, method=method)
        states[name] = jax.device_get(jax.jit(task.search_step)(s0, *batches)[0])
    a, w, s = (states[k] for k in ("alpha_first", "weights_first", "simultaneous"))
    close = lambda x, y: chex.assert_trees_all_close(x, y, rtol=1e-5, atol=1e-6)
    close(s.alpha, a.alpha)
    close(s.params, w.params)
    assert calls  # traced into the step
    differs = lambda x, y: not all(np.allclose(u, v, rtol=1e-5, atol=1e-6)
                                   for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)))
    assert differs(w.alpha, a.alpha) and differs(s.params, a.params)
    with pytest.raises(ValueError, match="update_order='reverse' is not accepted; accepted: alpha_first"):
        search.Method("x", update_order="reverse")


def test_weights_slot_sees_the_methods_traced_schedule_values():
    """A method's ``weights(alpha, ctx)`` with a traced schedule value (a temperature T,
    ``softmax(alpha / T)``): one compiled step serves every T, and in the weight-only
    warm-up its step at (alpha, T) equals the plain DARTS step at alpha / T (the mixing
    weights are then the same), for T = 1 and T = 3."""
    from jaxdarts import supernet

    calls = []

    def weights(alpha, ctx):
        calls.append(1)
        t = ctx.sched["temperature"] if ctx.sched is not None else 1.0
        return supernet.mixing_weights(ctx.space, {k: v / t for k, v in alpha.items()})

    tempered = search.Method("darts", weights=weights, schedule=lambda c, e, n: {"temperature": 1.0 + 2.0 * e})
    base = search.SearchTask.from_config(tiny_config(arch_start_epoch=5))  # epochs 0-2: weights only
    task = dataclasses.replace(base, method=tempered)
    s0 = base.init_state()
    tb, vb = base.train_stream.batch(0, 0), base.val_stream.batch(0, 0)
    step, plain = jax.jit(task.search_step), jax.jit(base.search_step)
    for epoch, t in ((0, 1.0), (1, 3.0)):
        sched = task.schedule_values(epoch)
        assert sched["temperature"] == t and sched["arch_update"] == 0
        got = jax.device_get(step(s0, tb, vb, sched)[0])
        ref = jax.device_get(plain(s0.replace(alpha=jax.tree.map(lambda a: a / t, s0.alpha)), tb, vb,
                                   base.schedule_values(epoch))[0])
        chex.assert_trees_all_close(got.params, ref.params, rtol=1e-5, atol=1e-7)
        chex.assert_trees_all_close(got.batch_stats, ref.batch_stats, rtol=1e-5, atol=1e-7)
    assert step._cache_size() == 1 and calls  # one program for both temperatures
