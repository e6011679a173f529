"""Writes the README's per-method pictures from quick-run workdirs: the report's normal
cell diagram and loss/accuracy curves side by side, one PNG per method.

    python scripts/readme_figures.py balenas=/tmp/jaxdarts_quick darts=/tmp/darts_quick ...
"""

import base64
import io
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxdarts import report  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "img")


def main(pairs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    os.makedirs(OUT, exist_ok=True)
    for pair in pairs:
        name, workdir = pair.split("=", 1)
        s = report.sections(report.load_run(workdir))
        pngs = s.get("cells", [])[:1] + s.get("curves", [])[:1] + (s.get("eigenvalue") or s.get("method")
                                                                  or s.get("retrain") or [])[:1]
        fig, axes = plt.subplots(1, len(pngs), figsize=(5 * len(pngs), 3.2),
                                 gridspec_kw={"width_ratios": [1.6] + [1] * (len(pngs) - 1)})
        for ax, p in zip(axes if len(pngs) > 1 else [axes], pngs):
            ax.imshow(mpimg.imread(io.BytesIO(base64.b64decode(p))))
            ax.axis("off")
        fig.suptitle(f"{name}: {os.path.basename(os.path.normpath(workdir))}", fontsize=10)
        path = os.path.join(OUT, f"{name}.png")
        fig.savefig(path, dpi=70, bbox_inches="tight")
        plt.close(fig)
        print(path, os.path.getsize(path))


if __name__ == "__main__":
    main(sys.argv[1:])
