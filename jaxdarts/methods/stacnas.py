"""StacNAS: one-level simultaneous search in two stacked stages with grouped backward pruning.

Each stage (paper Eq. 5-6, code ``search.py::train``): ONE ``value_and_grad`` of the
training loss w.r.t. ``(weights, alpha)`` on the same batch, SGD-momentum on the weights
(gradient clipping 3, weights only) and Adam on alpha applied to gradients taken at the
same point (the engine's ``simultaneous`` order with the ``one_level`` estimator), all
training data for both (``data.train_portion = 1``; the supernet's reported accuracy is
then on training images).

* Stage 1: the group representatives + ``none`` (space ``stacnas_stage1``:
  max_pool_3x3, skip_connect, sep_conv_3x3, dil_conv_3x3, none) on a
  ``stacnas.stage1_layers``-cell (14) supernet.
* Group activation: every edge takes the group of its strongest non-``none`` stage-1
  logit (first maximum on ties): max -> (avg_pool_3x3, max_pool_3x3), skip ->
  (skip_connect, skip_connect) (the code lists the skip twice: ``stage2_skip='reference'``,
  two independent ops ``skip_connect`` and ``skip_connect@2``; ``'dedupe'`` one),
  sep3 -> (sep_conv_3x3, sep_conv_5x5), dil3 -> (dil_conv_3x3, dil_conv_5x5); each + none.
  (:func:`stage2_ops`, :func:`stage2_space`: ragged op lists per edge, padded and masked.)
* Stage 2: a fresh ``stacnas.stage2_layers``-cell (20) supernet on those op lists. The
  final genotype: per edge its best non-``none`` op, per node the 2 edges with the largest
  value, ranked by raw logits (``rank_by='logits'``, the code's
  ``build_genotype_from_alpha``) or softmax weights (``'softmax'``, the paper/DARTS).

The program runs both stages in one workdir (``stage1/``, ``stage2/``, each a resumable
search with its own checkpoints and metrics; ``stage1.json`` stores the stage-1 logits and
the activated groups; ``genotype.json`` the final result); re-running the command resumes
whichever stage was interrupted; ``--max_epochs`` counts epochs across the stages.

``stacnas.alpha_share=False`` gives every cell its own alpha (the paper's Section 2.1: all
cells of the final architecture may differ): stage 1 learns one alpha per cell, every
stage-1 cell activates its own groups, stage 2 is a per-cell space whose cells search
different op lists (``SearchSpace.cell_ops``; stage-2 cell j of a type takes the groups of
stage-1 cell ``floor(j * n1 / n2)`` of that type, our choice: the paper does not say how 14
cells map to 20), and the final genotype has one gene list per cell.

``stacnas.stage2_layers=0`` (``configs/stacnas.py:one_stage``) runs stage 1 alone, on
``config.space`` with ``model.layers`` cells: StacNAS's one-level simultaneous step without
the grouping, on any space (``bin/compare.py`` uses it on S5, whose three ops are group
representatives already and which has no ``none``). An ablation, not the method.

Paper vs code (``../shared/METHODS_SPEC.md`` 2.5): epochs 80 per stage (code; the paper
says 100), gradient clipping 3 (code; DARTS 5), ranking by logits (code), duplicated skip
(code), shared alpha (the README's runs). Stage 3 (keeping ``none`` as attention) is not
in the code and not here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import jax
import ml_collections
import numpy as np

from jaxdarts import genotype as genotype_lib
from jaxdarts import io as io_lib
from jaxdarts import search
from jaxdarts import spaces as spaces_lib
from jaxdarts.config import ConfigError, check_choice, check_positive

GROUPS = {  # stage-1 winner -> stage-2 candidates (code OPS_DICT; 'none' appended)
    "max_pool_3x3": ("avg_pool_3x3", "max_pool_3x3"),
    "skip_connect": ("skip_connect", "skip_connect@2"),
    "sep_conv_3x3": ("sep_conv_3x3", "sep_conv_5x5"),
    "dil_conv_3x3": ("dil_conv_3x3", "dil_conv_5x5"),
}
STAGE2_SKIPS = ("reference", "dedupe")
RANK_BY = ("logits", "softmax")


def config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        stage1_layers=14, stage2_layers=20,  # stage2_layers=0: stage 1 alone on config.space, model.layers cells
        stage2_skip="reference",  # reference (skip listed twice, code) | dedupe
        rank_by="logits",  # logits (code) | softmax (paper)
        alpha_share=True))  # False: one alpha per cell in stage 1 (paper 2.1)


def defaults(cfg) -> None:
    cfg.estimator = "one_level"
    cfg.space = "stacnas_stage1"
    cfg.model.layers = 14
    cfg.epochs = 80
    cfg.optim.grad_clip = 3.0
    cfg.data.train_portion = 1.0


def validate(cfg) -> None:
    c = cfg.stacnas
    check_choice("stacnas.stage2_skip", c.stage2_skip, STAGE2_SKIPS)
    check_choice("stacnas.rank_by", c.rank_by, RANK_BY)
    check_choice("stacnas.alpha_share", c.alpha_share, (True, False))
    check_positive("stacnas.stage1_layers", c.stage1_layers, integer=True)
    check_positive("stacnas.stage2_layers", c.stage2_layers, integer=True, allow_zero=True)
    if cfg.estimator != "one_level":
        raise ConfigError(f"config.estimator={cfg.estimator!r} is not accepted by method 'stacnas'; accepted: "
                          "one_level (the simultaneous one-level step)")
    if cfg.update_order not in ("method", "simultaneous"):
        raise ConfigError(f"config.update_order={cfg.update_order!r} is not accepted by method 'stacnas'; "
                          "accepted: method, simultaneous")
    if cfg.num_seeds != 1:
        raise ConfigError(f"config.num_seeds={cfg.num_seeds} is not accepted by method 'stacnas' (a program of "
                          "two stages); accepted: 1")
    space = spaces_lib.get(cfg.space)
    if c.stage2_layers and "none" not in {o for per_edge in space.ops.values() for ops in per_edge for o in ops}:
        raise ConfigError(f"config.space={cfg.space!r} has no 'none' op; StacNAS stage 1 needs the group "
                          "representatives + none (accepted: stacnas_stage1; or stacnas.stage2_layers=0, the "
                          "one-level stage alone, on any space)")


# ------------------------------------------------------------------ stages
def _winners(space, t, a):
    padded = space.padded_ops(t)
    win = []
    for e, ops in enumerate(padded):
        real = [k for k, o in enumerate(ops) if o is not None and o != "none"]
        win.append(ops[real[int(np.argmax(a[e, real]))]])
    return win


def activated_groups(space, alpha, per_cell: bool = False) -> dict[str, list]:
    """Per cell type, the stage-1 winner of every edge: the op of the largest non-``none``
    logit (first maximum on ties; padded slots excluded). Per-cell alphas (leading axis):
    one list per cell with ``per_cell=True``, else of the cells' mean logits."""
    space = spaces_lib.get(space)
    out = {}
    for t in space.cell_types:
        a = np.asarray(alpha[t], np.float64)
        if a.ndim == 3 and per_cell:
            out[t] = [_winners(space, t, c) for c in a]
        else:
            out[t] = _winners(space, t, a.mean(0) if a.ndim == 3 else a)
    return out


def _group_ops(winners, skip):
    rows = []
    for w in winners:
        if w not in GROUPS:
            raise ValueError(f"stage-1 winner {w!r} has no StacNAS group; accepted: {', '.join(GROUPS)}")
        ops = ("skip_connect",) if skip == "dedupe" and w == "skip_connect" else GROUPS[w]
        rows.append(tuple(ops) + ("none",))
    return tuple(rows)


def stage2_ops(groups: dict[str, list], skip: str = "reference") -> dict[str, tuple]:
    """Stage-2 op lists per cell type and edge (per cell type, cell and edge for per-cell
    groups) from the stage-1 winners (+ ``none``)."""
    check_choice("stacnas.stage2_skip", skip, STAGE2_SKIPS)
    out = {}
    for t, winners in groups.items():
        if winners and isinstance(winners[0], (list, tuple)):
            out[t] = tuple(_group_ops(c, skip) for c in winners)
        else:
            out[t] = _group_ops(winners, skip)
    return out


def stage2_space(ops: dict[str, tuple], base="stacnas_stage1", layers: int | None = None) -> spaces_lib.SearchSpace:
    """The registered stage-2 space with these per-edge op lists (named by their content,
    so a resumed run finds the same space). Per-cell op lists (from per-cell stage-1
    alphas) give a per-cell space of ``layers`` cells whose cell j of a type takes the
    lists of stage-1 cell ``floor(j * n1 / n2)`` of that type (n1, n2: the two stages'
    counts of that cell type; the paper does not say how 14 stage-1 cells map to 20)."""
    base = spaces_lib.get(base)
    nested = any(v and isinstance(v[0][0], (list, tuple)) for v in ops.values())
    key = repr((sorted((t, repr(v)) for t, v in ops.items()), layers if nested else None))
    name = f"stacnas_stage2_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    if name in spaces_lib.NAMES:
        return spaces_lib.get(name)
    if not nested:
        return spaces_lib.register(spaces_lib.SearchSpace(name, ops, base.edges))
    if not layers:
        raise ValueError("per-cell stage-2 op lists need the stage-2 cell count `layers`")
    probe = spaces_lib.SearchSpace("probe", {t: v[0] for t, v in ops.items()}, base.edges, per_cell=True,
                                   layers=layers)
    cell_ops = {}
    for t, cells in ops.items():
        n2 = probe.alpha_shapes()[t][0]
        cell_ops[t] = tuple(cells[j * len(cells) // n2] for j in range(n2))
    return spaces_lib.register(spaces_lib.SearchSpace(name, {t: v[0] for t, v in cell_ops.items()}, base.edges,
                                                      per_cell=True, layers=layers, cell_ops=cell_ops))


def per_cell_space(name: str, layers: int) -> spaces_lib.SearchSpace:
    """``name``'s op lists with one alpha per cell (``layers`` cells), registered once."""
    base = spaces_lib.get(name)
    pc = f"{base.name}_per_cell{layers}"
    if pc in spaces_lib.NAMES:
        return spaces_lib.get(pc)
    return spaces_lib.register(dataclasses.replace(base, name=pc, per_cell=True, layers=layers))


def _derive_fn(rank_by):
    if rank_by == "logits":  # the code: values of the raw logits rank edges and ops
        return lambda space, alpha: genotype_lib.derive(space, alpha, normalized=True)
    return None


def stage_task(cfg, stage: int, space: str):
    c = ml_collections.ConfigDict(cfg.to_dict())
    c.space = space
    if cfg.stacnas.stage2_layers:  # stage 1 alone keeps model.layers
        c.model.layers = cfg.stacnas.stage1_layers if stage == 1 else cfg.stacnas.stage2_layers
    method = dataclasses.replace(METHOD, derive=_derive_fn(cfg.stacnas.rank_by))
    return c, search.SearchTask.from_config(c, method=method)


def _jsonable(ops):
    return {t: _lists(v) for t, v in ops.items()}


def _lists(x):
    return [_lists(y) for y in x] if isinstance(x, (list, tuple)) else x


def _tuples(ops):
    conv = lambda x: tuple(conv(y) for y in x) if isinstance(x, (list, tuple)) else x
    return {t: conv(v) for t, v in ops.items()}


def _epochs_done(workdir):
    return len(io_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl")))


def driver(cfg, workdir, *, log=print, max_epochs=None, hooks=None):
    """Stage 1, group activation, stage 2 (see the module docstring); resumable."""
    s = cfg.stacnas
    left = max_epochs  # the stage's task validates its config before its runner writes the workdir
    info_path = os.path.join(workdir, "stage1.json")
    info = io_lib.read_json(info_path)
    wd1, wd2 = os.path.join(workdir, "stage1"), os.path.join(workdir, "stage2")
    if not s.stage2_layers and os.path.exists(os.path.join(workdir, "genotype.json")):
        return dict(io_lib.read_json(os.path.join(workdir, "genotype.json")))
    if info is None:
        n1 = s.stage1_layers if s.stage2_layers else cfg.model.layers
        space1 = cfg.space if s.alpha_share else per_cell_space(cfg.space, n1).name
        c1, task1 = stage_task(cfg, 1, space1)
        runner = search.Runner(task1, wd1, search.default_hooks(c1, task1.method) + list(hooks or []), log=log)
        before = _epochs_done(wd1)
        log(f"StacNAS stage 1: {c1.model.layers} cells, space {space1}")
        out1 = runner.run(max_epochs=left)
        if left is not None:
            left -= out1["epochs_run"] - before
        if not runner.finished:
            return {"stage": 1, "epochs_run": out1["epochs_run"], "finished": False}
        if not s.stage2_layers:  # the one-level stage alone: its genotype is the result
            io_lib.write_json(os.path.join(workdir, "genotype.json"), dict(out1, stage=1))
            return dict(out1, stage=1)
        groups = activated_groups(task1.space, jax.device_get(runner.state.alpha), per_cell=not s.alpha_share)
        info = {"alpha": {t: np.asarray(a).tolist() for t, a in jax.device_get(runner.state.alpha).items()},
                "groups": groups, "stage1_genotype": out1["genotype"],
                "stage2_ops": _jsonable(stage2_ops(groups, s.stage2_skip))}
        io_lib.write_json(info_path, info)
    if left is not None and left <= 0:
        return {"stage": 1, "epochs_run": cfg.epochs, "finished": False}
    space2 = stage2_space(_tuples(info["stage2_ops"]), cfg.space, s.stage2_layers)
    c2, task2 = stage_task(cfg, 2, space2.name)
    runner = search.Runner(task2, wd2, search.default_hooks(c2, task2.method) + list(hooks or []), log=log)
    log(f"StacNAS stage 2: {c2.model.layers} cells, space {space2.name}")
    out2 = runner.run(max_epochs=left)
    out = {"stage": 2, "genotype": out2["genotype"], "epochs_run": cfg.epochs + out2["epochs_run"],
           "finished": runner.finished, "stage1_genotype": info["stage1_genotype"], "groups": info["groups"],
           "stage2_space": space2.name, "stage2_ops": info["stage2_ops"]}
    if "genotype_str" in out2:
        out["genotype_str"] = out2["genotype_str"]
    if runner.finished:
        io_lib.write_json(os.path.join(workdir, "genotype.json"), out)
    return out


METHOD = search.Method(name="stacnas", config=config, defaults=defaults, validate=validate,
                       update_order="simultaneous", driver=driver)
