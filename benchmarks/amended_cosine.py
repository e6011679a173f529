"""Measures Amended-DARTS's Eq. 8 claim (angle between g2' and the exact g2 below 90
degrees) on random ridge problems, where g2 is known in closed form.

    python benchmarks/amended_cosine.py [--n 1000]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdarts import hypergrad  # noqa: E402
from jaxdarts.problems import RidgeProblem  # noqa: E402


def cosines(count, **kw):
    out = []
    for s in range(count):
        p = RidgeProblem.random(s, **kw)
        g2 = p.exact_hypergradient()
        _, aux = hypergrad.amended(p.train_loss, p.val_loss, p.w_star(), p.alpha, None, None, eta=0.1, has_aux=True)
        out.append(float(jnp.vdot(g2, aux["g2"]) / jnp.linalg.norm(g2) / jnp.linalg.norm(aux["g2"])))
    return np.array(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    a = ap.parse_args()
    with jax.enable_x64(True):
        for name, kw in [("well-conditioned (n=20, d=6, alpha~N(0,1))", {}),
                         ("ill-conditioned (n=8, d=6, correlated features, alpha~N(0,9))",
                          dict(n=8, m=8, correlated=True, alpha_scale=3.0, noise=1.0))]:
            c = cosines(a.n, **kw)
            q = np.percentile(c, [1, 5, 25, 50, 75, 95])
            print(f"{name}: {np.mean(c > 0):.1%} positive of {a.n}; cosine percentiles 1/5/25/50/75/95: "
                  + " ".join(f"{x:.3f}" for x in q))


if __name__ == "__main__":
    main()
