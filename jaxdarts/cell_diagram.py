"""Cell diagrams and the figure helpers every page shares (reports, hooks, the leaderboard).

:func:`cell_diagram` draws one cell as DARTS's ``visualize.py`` lays it out (inputs
``c_{k-2}``, ``c_{k-1}``, intermediate nodes, output ``c_{k}``; NAS-Bench-201 cells too),
with graphviz when its ``dot`` program is installed, otherwise with matplotlib; each op has
its colour (:data:`OP_COLORS`). Imports nothing of the package: the report, the per-epoch
hooks and the leaderboard draw with it without importing one another.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess


def need_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        raise ImportError("reports need matplotlib: pip install -e '.[report]' (or pip install matplotlib)") from None


def png(fig) -> str:
    """The matplotlib figure as a base64 PNG (80 dpi), closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _cell_edges(gene, nb201: bool):
    """``[(src, dst, op)]`` with node names as DARTS's visualize.py."""
    edges = []
    if nb201:  # node i = sum over j < i of op(node j); node 0 the input, node 3 the output
        pos = 0
        for node in range(1, 4):
            for j in range(node):
                op, _ = gene[pos]
                pos += 1
                if op != "none":
                    edges.append(("c_{k-1}" if j == 0 else str(j - 1), "c_{k}" if node == 3 else str(node - 1), op))
        return edges
    for k, (op, j) in enumerate(gene):
        src = "c_{k-2}" if j == 0 else "c_{k-1}" if j == 1 else str(j - 2)
        edges.append((src, str(k // 2), op))
    return edges


def _dot_png(edges, nodes, concat_nodes, title):
    lines = ["digraph G {", "rankdir=LR;", 'node [shape=rect, style=filled, fontname="helvetica"];',
             f'label="{title}";']
    for n in ("c_{k-2}", "c_{k-1}"):
        if any(e[0] == n for e in edges):
            lines.append(f'"{n}" [fillcolor=darkseagreen2];')
    lines += [f'"{n}" [fillcolor=lightblue];' for n in nodes]
    lines.append('"c_{k}" [fillcolor=palegoldenrod];')
    lines += [f'"{a}" -> "{b}" [label="{op}"];' for a, b, op in edges]
    lines += [f'"{n}" -> "c_{{k}}";' for n in concat_nodes]
    lines.append("}")
    r = subprocess.run(["dot", "-Tpng"], input="\n".join(lines).encode(), capture_output=True, timeout=60)
    if r.returncode != 0:
        return None
    return base64.b64encode(r.stdout).decode()


def cell_diagram(gene, title: str, nb201: bool = False, concat=None, engine: str = "auto") -> str:
    """PNG (base64) of one cell; ``engine`` ``'graphviz'``, ``'matplotlib'`` or ``'auto'``
    (graphviz when ``dot`` is on the PATH)."""
    edges = _cell_edges(gene, nb201)
    nodes = sorted({b for _, b, _ in edges} - {"c_{k}"} | {a for a, _, _ in edges} - {"c_{k-2}", "c_{k-1}", "c_{k}"},
                   key=int)
    if nb201:
        concat_nodes = []
    else:
        concat_nodes = [str(c - 2) for c in (concat or range(2, 2 + len(gene) // 2)) if c >= 2]
    if engine in ("auto", "graphviz") and shutil.which("dot"):
        png = _dot_png(edges, nodes, concat_nodes, title)
        if png:
            return png
    return _matplotlib_cell(edges, nodes, concat_nodes, title, nb201)


OP_COLORS = {"none": "#9e9e9e", "skip_connect": "#2e7d32", "max_pool_3x3": "#6a1b9a", "avg_pool_3x3": "#ad1457",
             "sep_conv_3x3": "#1565c0", "sep_conv_5x5": "#00838f", "dil_conv_3x3": "#e65100",
             "dil_conv_5x5": "#c62828", "nor_conv_1x1": "#00838f", "nor_conv_3x3": "#1565c0", "noise": "#5d4037"}


def _matplotlib_cell(edges, nodes, concat_nodes, title, nb201, layout=None):
    """A cell without graphviz: nodes left to right (inputs, intermediate nodes alternating
    above and below the axis, output), each edge coloured by its op, its name on a white box
    at the first point along the edge (middle first) where the box meets no node and no
    other label (the arrows may pass under it), and a legend of the ops. ``layout``: a list
    that receives ``(kind, text, screen extent)`` of every node and label (tests)."""
    plt = need_matplotlib()
    inputs = [n for n in ("c_{k-2}", "c_{k-1}") if any(e[0] == n for e in edges) or not nb201]
    pos = {n: (0.0, 1.0 - 2.0 * i) if len(inputs) > 1 else (0.0, 0.0) for i, n in enumerate(inputs)}
    for i, n in enumerate(nodes):
        pos[n] = (2.2 * (i + 1), 0.85 if i % 2 == 0 else -0.85)
    pos["c_{k}"] = (2.2 * (len(nodes) + 1), 0.0)
    fig, ax = plt.subplots(figsize=(2.6 + 2.0 * len(nodes), 3.6))
    colors = {"c_{k-2}": "#b4eeb4", "c_{k-1}": "#b4eeb4", "c_{k}": "#eee8aa"}
    ax.set_xlim(-0.8, pos["c_{k}"][0] + 0.8)  # before measuring: the extents depend on the limits
    ax.set_ylim(-1.5, 1.5)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    boxes = []  # screen extents of what is placed: nodes first, then each label where it fits
    for n, (x, y) in pos.items():
        boxes.append(ax.text(x, y, n, ha="center", va="center", fontsize=9, zorder=6,
                             bbox=dict(boxstyle="round", fc=colors.get(n, "#add8e6"), ec="black")))
    renderer = fig.canvas.get_renderer()
    extents = [b.get_window_extent(renderer).expanded(1.1, 1.2) for b in boxes]
    if layout is not None:
        layout += [("node", b.get_text(), e) for b, e in zip(boxes, extents)]
    used = {}
    for a, b, op in edges + [(n, "c_{k}", "") for n in concat_nodes]:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        color = OP_COLORS.get(op.split("@")[0], "#37474f") if op else "#bdbdbd"
        rad = 0.0 if abs(x1 - x0) <= 2.3 else (0.18 if y0 >= y1 else -0.18)
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="-|>", color=color, lw=1.6 if op else 1.0,
                                                            shrinkA=14, shrinkB=14,
                                                            connectionstyle=f"arc3,rad={rad}"))
        if not op:
            continue
        used[op] = color
        # arc3's curve: a quadratic Bezier whose control point is offset by rad * length
        cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
        for t in (0.5, 0.62, 0.38, 0.74, 0.26, 0.84, 0.16, None):  # the first spot free of nodes and labels
            tt = 0.5 if t is None else t
            lx = (1 - tt) ** 2 * x0 + 2 * tt * (1 - tt) * cx + tt ** 2 * x1
            ly = (1 - tt) ** 2 * y0 + 2 * tt * (1 - tt) * cy + tt ** 2 * y1
            label = ax.text(lx, ly, op, fontsize=7, color=color, ha="center", va="center", zorder=5,
                            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=color, lw=0.6))
            ext = label.get_window_extent(renderer).expanded(1.05, 1.15)
            if t is None or not any(ext.overlaps(e) for e in extents):
                break
            label.remove()
        extents.append(ext)
        if layout is not None:
            layout.append(("label", op, ext))
    if used:
        from matplotlib.lines import Line2D

        ax.legend([Line2D([0], [0], color=c, lw=2) for c in used.values()], list(used), fontsize=7,
                  loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=min(len(used), 4), frameon=False)
    return png(fig)
