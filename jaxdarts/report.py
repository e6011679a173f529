"""Run reports: one self-contained HTML page per run, or several runs side by side.

``bin/report.py WORKDIR [WORKDIR ...] [--out FILE]`` (or :func:`write_report`) reads what a
run leaves in its workdir (``config.json``, ``metrics.jsonl``, ``events.jsonl``,
``genotype.json``; StacNAS ``stage1/`` ``stage2/``; a retraining run's ``model.json``) and
renders, with matplotlib (``pip install -e ".[report]"``), figures embedded as PNG:

* ``cells`` — the final normal and reduce cells (and NB201 cells), laid out as DARTS's
  ``visualize.py`` (inputs ``c_{k-2}``, ``c_{k-1}``, intermediate nodes, output ``c_{k}``),
  drawn with graphviz when its ``dot`` program is installed, otherwise with matplotlib;
* ``alpha`` — per edge, the softmax of alpha over epochs (ops x epochs heatmaps);
* ``curves`` — training/validation loss and accuracy (test top-1/top-5 for retraining);
* ``skip`` — skip_connect count of the derived normal cell per epoch;
* ``eigenvalue`` — dominant Hessian eigenvalue with the DARTS-ES stop and DARTS-ADA
  rollback / regularisation markers (``events.jsonl``);
* ``method`` — the metrics the run's method declares (``Method.report_metrics``: BaLeNAS's
  sigma statistics, the MS-DARTS/SDARTS radius and measured perturbation, DrNAS's KL term,
  ...); ``stages`` — the stages of a multi-stage program (sub-workdirs ``stage1/``,
  ``stage2/``, ...: StacNAS); ``retrain`` — learning rate, images/s, parameters and FLOPs of
  a retraining run;
* ``config`` — the run's config and cost (epochs, seconds).

Sections without data in a run are left out. The page can be rendered while a run is
still going (it reads the lines written so far).
"""

from __future__ import annotations

import html
import json
import os
from typing import Any

import numpy as np

from jaxdarts import genotype as genotype_lib
from jaxdarts.cell_diagram import OP_COLORS, cell_diagram, need_matplotlib, png  # noqa: F401 (re-exported)
from jaxdarts import io as io_lib
from jaxdarts import registry as methods_lib  # finds methods by name; imports none
from jaxdarts import spaces as spaces_lib

SECTIONS = ("cells", "alpha", "curves", "skip", "eigenvalue", "method", "stages", "retrain", "config")


def load_run(workdir: str) -> dict[str, Any]:
    """Everything a report shows of one workdir (missing files are empty)."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"{workdir!r} is not a directory; accepted: a bin/search.py or bin/train.py --workdir")
    read = lambda name: io_lib.read_json(os.path.join(workdir, name))  # noqa: E731
    run = {"name": os.path.basename(os.path.normpath(workdir)), "workdir": workdir, "config": read("config.json") or {},
           "metrics": io_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl")),
           "events": io_lib.read_jsonl(os.path.join(workdir, "events.jsonl")),
           "genotype": read("genotype.json") or {}, "model": read("model.json"), "stages": {}}
    for stage in ("stage1", "stage2"):
        if os.path.isdir(os.path.join(workdir, stage)):
            run["stages"][stage] = load_run(os.path.join(workdir, stage))
    if run["stages"] and not run["metrics"]:  # a StacNAS program: its curves are the stages'
        run["metrics"] = [dict(m, stage=s) for s, r in run["stages"].items() for m in r["metrics"]]
    if not (run["config"] or run["metrics"] or run["stages"]):
        raise FileNotFoundError(f"{workdir!r} holds no run (no config.json or metrics.jsonl)")
    return run


def _series(metrics, key):
    xs, ys = [], []
    for i, m in enumerate(metrics):
        v = m.get(key)
        if isinstance(v, (int, float)) and v is not None and np.isfinite(v):
            xs.append(m.get("epoch", i) + 1 if "stage" not in m else i + 1)
            ys.append(v)
    return xs, ys


def _line_plot(metrics, keys, title, ylabel="", markers=()):
    plt = need_matplotlib()
    present = [k for k in keys if _series(metrics, k)[0]]
    if not present:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for k in present:
        ax.plot(*_series(metrics, k), marker="o", ms=3, label=k)
    for x, label, color in markers:
        ax.axvline(x, color=color, ls="--", lw=1)
        ax.text(x, ax.get_ylim()[1], label, color=color, fontsize=7, rotation=90, va="top", ha="right")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return png(fig)


def _genotype_of(run):
    g = run["genotype"]
    if not g and run["stages"].get("stage2"):
        g = run["stages"]["stage2"]["genotype"]
    if "genotype" in g:
        return g["genotype"]
    if "genotypes" in g:  # a sweep: the first run's
        return g["genotypes"][0]
    if not g:  # a search still running: the cells derived after its last epoch
        last = [m["genotype"] for m in run["metrics"] if isinstance(m.get("genotype"), dict)]
        return last[-1] if last else None
    return g


# ---------------------------------------------------------------- sections
def _section_cells(run, g=None, label=""):
    g = g or _genotype_of(run)
    if not g:
        return []
    nb201 = _is_nb201(g)
    out = []
    for t in ("normal", "reduce"):
        gene = g.get(t)
        if not gene:
            continue
        cells = gene if gene and isinstance(gene[0], list) and gene[0] and isinstance(gene[0][0], list) else [gene]
        for i, c in enumerate(cells[:4]):
            title = f"{t} cell" + (f" {i}" if len(cells) > 1 else "") + (" (NAS-Bench-201)" if nb201 else "") + label
            out.append(cell_diagram([tuple(e) for e in c], title, nb201, g.get(f"{t}_concat")))
    return out


def _padded(x) -> np.ndarray:
    """Nested lists with ragged last level (a stage-2 space's op lists) -> array, NaN-padded."""
    if x and isinstance(x[0], list) and x[0] and isinstance(x[0][0], list):
        return np.stack([_padded(c) for c in x])
    K = max(len(e) for e in x)
    return np.asarray([list(e) + [np.nan] * (K - len(e)) for e in x], dtype=float)


def _section_alpha(run):
    rows = [m for m in run["metrics"] if isinstance(m.get("alpha_softmax"), dict)]
    if rows and "stage" in rows[-1]:  # a multi-stage program: the last stage's alphas
        rows = [m for m in rows if m.get("stage") == rows[-1]["stage"]]
    if not rows:
        return []
    plt = need_matplotlib()
    out = []
    for t in rows[-1]["alpha_softmax"]:
        try:  # op names of the space (a StacNAS stage-2 space exists only in its process: indices then)
            ops = [o for o in spaces_lib.get(run["config"].get("space", "")).padded_ops(t)[0]]
        except Exception:  # noqa: BLE001
            ops = None
        a = np.stack([_padded(m["alpha_softmax"][t]) for m in rows])  # (epochs, [cells,] edges, ops)
        if a.ndim == 4:
            a = a[:, 0]  # per-cell alphas: the first cell
        E, K = a.shape[1], a.shape[2]
        cols = min(E, 7)
        nrows = -(-E // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(1.9 * cols + 1.0, 1.7 * nrows + 0.6), squeeze=False)
        vmin, vmax = float(np.nanmin(a)), float(np.nanmax(a))  # one scale for all edges, stretched to the data
        for e in range(nrows * cols):
            ax = axes[e // cols][e % cols]
            if e >= E:
                ax.axis("off")
                continue
            im = ax.imshow(a[:, e, :].T, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
            ax.set_title(f"edge {e}", fontsize=7)
            ax.set_yticks(range(K))
            ax.set_yticklabels((ops or [str(k) for k in range(K)]) if e % cols == 0 else [], fontsize=6)
            ax.tick_params(axis="x", labelsize=5)
        fig.suptitle(f"{t}: softmax(alpha) per edge (rows: ops, columns: epochs)", fontsize=9)
        fig.tight_layout()
        fig.colorbar(im, ax=axes, shrink=0.6)
        out.append(png(fig))
    return out


def _event_markers(run):
    marks = []
    for ev in run["events"]:
        x = ev.get("epoch", 0) + 1
        if ev["kind"] == "stop":
            marks.append((x, "ES stop", "red"))
        elif ev["kind"] == "rollback":
            marks.append((x, f"ADA rollback to {ev['to_epoch'] + 1}", "orange"))
        elif ev["kind"] == "set":
            marks.append((x, f"{ev['name']}={ev['value']:.2g}", "purple"))
    return marks


def _section_stages(run):
    if not run["stages"]:
        return []
    out = []
    for s, r in run["stages"].items():
        fig = _line_plot(r["metrics"], ["train_loss", "val_loss", "train_acc", "val_acc"], s)
        if fig:
            out.append(fig)
        out += _section_cells(r)[:1] if s == "stage1" else []
    return out


def sections(run, epochs=()) -> dict[str, list[str]]:
    """Section name -> list of PNGs (base64); empty sections are left out. ``epochs``
    (1-based) adds the cells derived after those epochs to ``cells``."""
    m = run["metrics"]
    chosen = [p for e in epochs for r in m if r.get("epoch") == e - 1 and isinstance(r.get("genotype"), dict)
              for p in _section_cells(run, r["genotype"], f", epoch {e}")]
    retrain = "test_top1" in (m[-1] if m else {}) or run["model"] is not None
    out = {
        "cells": _section_cells(run) + chosen,
        "alpha": _section_alpha(run),
        "curves": [_line_plot(m, ["train_loss", "val_loss", "test_loss"], "loss"),
                   _line_plot(m, ["train_acc", "val_acc", "test_top1", "test_top5"], "accuracy")],
        "skip": [_line_plot(m, ["skip_connect_normal"], "skip_connect in the derived normal cell")],
        "eigenvalue": [_line_plot(m, ["eigenvalue"], "dominant eigenvalue of the Hessian w.r.t. alpha",
                                  markers=_event_markers(run))],
        "method": [_line_plot(m, list(keys), title) for title, keys in _method_figures(run)],
        "stages": _section_stages(run),
        "retrain": [_line_plot(m, ["lr"], "learning rate"), _line_plot(m, ["images_per_s"], "images/s")]
        if retrain else [],
    }
    return {k: [p for p in v if p] for k, v in out.items() if any(v)}


def _method_figures(run) -> tuple:
    """``((title, metric names), ...)`` the run's method declares (none for an unknown one)."""
    name = run["config"].get("method")
    try:
        return methods_lib.get(name).report_metrics if name else ()
    except ValueError:
        return ()


def _config_html(run) -> str:
    m = run["metrics"]
    secs = sum(r.get("train_time", r.get("seconds", 0)) or 0 for r in m)
    cost = f"{len(m)} epochs logged, {secs:.0f} s of training"
    g = run["genotype"]
    extra = {k: g[k] for k in ("stop_reason", "nb201_str", "genotype_str") if g.get(k)}
    sel = g.get("selection") if isinstance(g.get("selection"), dict) else None
    model = run["model"] or {}
    if model:
        cost += (f"; {model.get('params', 0) / 1e6:.3f} M parameters, {model.get('macs', 0) / 1e6:.1f} M "
                 f"multiply-adds, {model.get('num_devices', 1)} device(s)")
    body = json.dumps(run["config"], indent=1, sort_keys=True)
    return (f"<p>{html.escape(cost)}</p>" + "".join(f"<p><b>{k}</b>: <code>{html.escape(str(v))}</code></p>"
                                                    for k, v in extra.items())
            + (_selection_html(sel, g.get("last_genotype")) if sel else "")
            + f"<details><summary>config.json</summary><pre>{html.escape(body)}</pre></details>")


def _is_nb201(g: dict) -> bool:
    """Whether a genotype dict is a NAS-Bench-201 cell (6 normal edges, nodes 1-3, no reduce)."""
    return not g.get("reduce") and len(g.get("normal", ())) == 6 and list(g.get("normal_concat", [])) == [1, 2, 3]


def genotype_text(g: dict) -> str:
    """A genotype dict in one line: the NAS-Bench-201 string for NB201 cells, otherwise
    ``normal: op(input) ... | reduce: ...`` (per-cell genotypes: their first cell)."""
    geno = genotype_lib.Genotype.from_json(g)
    if _is_nb201(g):
        return geno.to_nb201_str()
    parts = []
    for t in ("normal", "reduce"):
        gene = getattr(geno, t)
        if gene and isinstance(gene[0][0], (tuple, list)):
            gene = gene[0]
        if gene:
            parts.append(f"{t}: " + " ".join(f"{op}({i})" for op, i in gene))
    return " | ".join(parts)


def _selection_html(sel: dict, argmax_genotype) -> str:
    """A training-free selection (``genotype.json``'s ``selection``: the proxy, the scored
    candidates best first and their scores) as a table: rank, score, cell, and which
    candidate is the argmax of the architecture parameters."""
    cands, scores = sel.get("candidates") or [], sel.get("scores") or []
    rows = []
    for rank, (c, sc) in enumerate(zip(cands, scores), 1):
        mark = "yes" if argmax_genotype and c == argmax_genotype else ""
        chosen = " style='font-weight:bold'" if c == sel.get("genotype") else ""
        rows.append(f"<tr{chosen}><td>{rank}</td><td>{sc:.6g}</td><td>{mark}</td>"
                    f"<td><code>{html.escape(genotype_text(c))}</code></td></tr>")
    head = (f"<p><b>selection</b>: {html.escape(str(sel.get('proxy', '?')))} over "
            f"{sel.get('num_candidates', len(cands))} candidates; the best {len(rows)} (bold: selected)</p>")
    return (head + "<table class='selection'><tr><th>rank</th><th>score</th><th>argmax alpha</th><th>cell</th></tr>"
            + "".join(rows) + "</table>")


TITLES = {"cells": "Final cells", "alpha": "Architecture weights over epochs", "curves": "Training curves",
          "skip": "skip_connect count", "eigenvalue": "Hessian eigenvalue (DARTS-ES / ADA)",
          "method": "The method's metrics", "stages": "Stages",
          "retrain": "Retraining", "config": "Config and cost"}


def render_html(runs: list[dict], epochs=()) -> str:
    """One page: a column per run, a row per section present in any run."""
    per_run = [sections(r, epochs) for r in runs]
    title = "jaxdarts report: " + ", ".join(r["name"] for r in runs)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1em} table{border-collapse:collapse} "
             "td{vertical-align:top;padding:6px;border-top:1px solid #ddd} img{max-width:100%}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    method = lambda r: r["config"].get("method", "retrain" if r["model"] else "?")  # noqa: E731
    parts.append("<table><tr>" + "".join(f"<th>{html.escape(r['name'])} ({html.escape(str(method(r)))})</th>"
                                          for r in runs) + "</tr>")
    for name in SECTIONS:
        if name == "config":
            cells = [_config_html(r) for r in runs]
        elif any(name in s for s in per_run):
            cells = ["".join(f"<img src='data:image/png;base64,{p}'/>" for p in s.get(name, [])) or "<i>n/a</i>"
                     for s in per_run]
        else:
            continue
        parts.append(f"<tr id='section-{name}'><td colspan='{len(runs)}'><h2>{TITLES[name]}</h2></td></tr>")
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_report(workdirs: list[str], out: str | None = None, epochs=()) -> str:
    """Renders the runs of ``workdirs`` into ``out`` (default: ``<workdir>/report.html`` for
    one run, ``report.html`` in the current directory for several); returns the path."""
    runs = [load_run(w) for w in workdirs]
    out = out or (os.path.join(workdirs[0], "report.html") if len(workdirs) == 1 else "report.html")
    text = render_html(runs, epochs)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, out)
    return out
