"""Where the cost of building a program goes: Python tracing (the Flax forward, then automatic
differentiation and the rest of the step), jaxpr-to-StableHLO lowering, XLA compilation
(default and with XLA's optimisation passes mostly off, which bounds the share of LLVM
code generation), program size (StableHLO ops, per cell and per op from the lowering's
locations; HLO instructions after XLA's passes) and a second task of the same signature
(the process-level program cache, `jaxdarts.jit_cache`).

    python benchmarks/program_cost.py --config configs/darts.py:quick
    python benchmarks/program_cost.py --config configs/balenas.py:quick --scorer    # + the BaLeNAS-TF Synflow scorer
    python benchmarks/program_cost.py --config configs/darts.py --paper             # C=16, 8 cells, batch 64, 32x32
    python benchmarks/program_cost.py --config configs/darts.py --paper --edge_loop vmap   # the edges in waves

Prints one JSON object; copy the figures into benchmarks/RESULTS.md with machine and date.
Run it alone: the machine's other load shows up in every figure.
"""

import argparse
import collections
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def count_stablehlo(text: str) -> int:
    return sum(1 for line in text.splitlines() if "=" in line and "stablehlo." in line)


def stablehlo_by_scope(text: str, depth: int) -> collections.Counter:
    """StableHLO ops counted by the module scope in their location (``Supernet/cell_1/...``)."""
    locs = dict(re.findall(r'^#(loc\d+) = loc\("([^"]*)"', text, re.M))
    out = collections.Counter()
    for line in text.splitlines():
        if "stablehlo." not in line or "=" not in line:
            continue
        m = re.search(r"loc\((#loc\d+)\)\s*$", line)
        name = locs.get(m.group(1)[1:], "") if m else ""
        parts = [p for p in name.split("/") if p]
        # the module's scope, also under a transformation: "jvp(Supernet)", "transpose(jvp(Supernet))"
        i = next((k for k, p in enumerate(parts) if re.search(r"(^|\()Supernet\b", p)), None)
        if i is None and parts and re.match(r"(\w+\()*edges_", parts[0]):
            # inside a scanned edge group (edge_loop='scan') the name stack restarts at the
            # group: which cell it belongs to is not in the location
            scope = "(scanned) " + "/".join(parts[:depth])
        else:
            scope = "/".join(parts[i + 1:i + 1 + depth]) if i is not None else "(outside the supernet)"
        scope = re.sub(r"(transpose|jvp|vmap)\((.*?)\)", r"\2", scope)
        out[scope or "(supernet top level)"] += 1
    return out


def hlo_instructions(compiled) -> int:
    return sum(1 for line in compiled.as_text().splitlines() if re.match(r"\s+(ROOT )?%\S+ = ", line))


COMPILE_VARIANTS = {
    "llvm_cheap": {"xla_llvm_disable_expensive_passes": True},
    "fast": {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True},
}
"""XLA option sets compiled beside the default: the last is ``kernels.FAST_COMPILE_OPTIONS``."""


def timed(fn):
    t = time.time()
    out = fn()
    return out, round(time.time() - t, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/darts.py:quick")
    ap.add_argument("--paper", action="store_true", help="C=16, 8 cells, batch 64, 32x32x3 (the paper's search)")
    ap.add_argument("--scorer", action="store_true", help="also the BaLeNAS-TF scorer of the config")
    ap.add_argument("--no_compile", action="store_true", help="trace and lower only")
    ap.add_argument("--default_only", action="store_true", help="compile with XLA's default options only")
    ap.add_argument("--edge_loop", default=None, help="config.model.edge_loop (scan, vmap; default: the config's)")
    a = ap.parse_args()
    import jax
    import numpy as np

    from jaxdarts import config as config_lib
    from jaxdarts import jit_cache, search

    path, _, variant = a.config.partition(":")
    cfg = config_lib.load_file(os.path.join(HERE, "..", path), variant)
    if a.edge_loop:
        cfg.model.edge_loop = a.edge_loop
    out = {"config": a.config, "backend": jax.default_backend(), "jax": jax.__version__}
    if a.paper:
        from search_step import bench_task

        task, state, tb, vb = bench_task(16, 8, 64, 32, cfg.estimator, "taps", cfg.space,
                                         edge_loop=cfg.model.get("edge_loop", "auto"))
        out["size"] = "paper: C=16, 8 cells, batch 64, 32x32x3"
    else:
        task, t_task = timed(lambda: search.SearchTask.from_config(cfg))
        state, t_init = timed(lambda: jax.block_until_ready(task.init_state()))
        tb, vb = task.train_stream.batch(0, 0), task.val_stream.batch(0, 0)
        out.update(task_s=t_task, init_state_s=t_init)
    sched = task.schedule_values(0)
    out["lowering"] = task.lowering
    out["edge_loop"] = task.model.edge_loop
    # the Flax forward alone (its nested jit is traced once per shape and reused by the step)
    k = search.fold_key(state.rng, 0)
    b = task.preprocess(k, tb, True, 0.0, np.float32(0.1))
    fwd = task.forward(True, False, None)
    jpr, out["forward_trace_s"] = timed(lambda: jax.make_jaxpr(fwd)(
        state.params, state.batch_stats, state.alpha, b["image"], b["rng"], b["drop_prob"]))
    donate = (0,) if cfg.donate else ()
    step = task.memo(("step", False, donate), lambda: jax.jit(task.search_step, donate_argnums=donate))
    traced, out["step_trace_s"] = timed(lambda: step.trace(state, tb, vb, sched))
    lowered, out["lower_s"] = timed(traced.lower)
    text = lowered.as_text(debug_info=True)
    out["stablehlo_ops"] = count_stablehlo(text)
    out["stablehlo_ops_by_cell"] = dict(stablehlo_by_scope(text, 1).most_common(12))
    out["stablehlo_ops_by_op_in_cell_1"] = {k: v for k, v in stablehlo_by_scope(text, 3).most_common(200)
                                            if k.startswith("cell_1/")}
    if not a.no_compile:
        compiled, out["compile_s"] = timed(lowered.compile)
        out["hlo_instructions_after_passes"] = hlo_instructions(compiled)

        def step_time(exe):
            st = jax.tree.map(lambda x: x.copy(), state)
            times = []
            for _ in range(4):
                (st, m), dt = timed(lambda: jax.block_until_ready(exe(st, tb, vb, sched)))
                times.append(dt)
            return float(np.median(times[1:]))

        out["step_s"] = step_time(compiled)
        for name, opts in ({} if a.default_only else COMPILE_VARIANTS).items():  # what XLA's passes cost and buy
            exe, out[f"compile_{name}_s"] = timed(lambda: lowered.compile(opts))
            out[f"step_{name}_s"] = step_time(exe)
            del exe
    if not a.paper and not a.no_compile:
        jax.block_until_ready(step(task.init_state(), tb, vb, sched))  # the call path's own executable
        cfg2 = config_lib.load_file(os.path.join(HERE, "..", path), variant)
        cfg2.model.edge_loop = cfg.model.edge_loop
        cfg2.seed += 1
        before = jit_cache.stats()["misses"]

        def second():  # a new task of the same signature: build, init, first step
            t2 = search.SearchTask.from_config(cfg2)
            fn = t2.memo(("step", False, donate), lambda: jax.jit(t2.search_step, donate_argnums=donate))
            return jax.block_until_ready(fn(t2.init_state(), t2.train_stream.batch(0, 0), t2.val_stream.batch(0, 0),
                                            t2.schedule_values(0)))
        _, out["second_task_first_step_s"] = timed(second)
        out["second_task_new_programs"] = jit_cache.stats()["misses"] - before
    if a.scorer:
        from jaxdarts.methods import balenas

        tcfg = cfg.balenas
        model = balenas.scoring_model(task)
        from jaxdarts import proxies

        scorer = proxies.make_scorer(tcfg.selection, model, batch_size=tcfg.tf.score_batch,
                                     synflow_bn=balenas.synflow_bn(task))
        sigma = jax.tree.map(lambda x: 0.0 * x + 1.0, state.alpha)
        cands = balenas.sample_architectures(task.space, state.alpha, sigma, jax.random.key(0), 4, 1.0)
        side = tcfg.tf.input_size or task.train_stream.images.shape[1]
        _, out["scorer_first_call_4_candidates_s"] = timed(lambda: balenas.select(
            task.space, cands, scorer, (1, side, side, task.train_stream.images.shape[-1]), jax.random.key(1)))
        fast = proxies.make_scorer(tcfg.selection, model, batch_size=tcfg.tf.score_batch,
                                   synflow_bn=balenas.synflow_bn(task), fast_compile=True)
        _, out["scorer_fast_first_call_4_candidates_s"] = timed(lambda: balenas.select(
            task.space, cands, fast, (1, side, side, task.train_stream.images.shape[-1]), jax.random.key(1)))
        _, out["scorer_fast_second_call_s"] = timed(lambda: balenas.select(
            task.space, cands, fast, (1, side, side, task.train_stream.images.shape[-1]), jax.random.key(1)))
        _, out["scorer_second_call_s"] = timed(lambda: balenas.select(
            task.space, cands, scorer, (1, side, side, task.train_stream.images.shape[-1]), jax.random.key(1)))
    print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main()
