"""Parameters and multiply-adds of published cells from `jaxdarts.retrain.Trainer.model_info`
(XLA's cost analysis of the inference program, flops / 2), against the published figures:
DARTS_V2 on CIFAR-10 (C=36, 20 cells: 3.3 M parameters) and on ImageNet (C=48, 14 cells,
224x224: 4.7 M parameters, 574 M multiply-adds; Liu et al. 2019, Tables 1-2). A second,
independent count walks the inference jaxpr (the 'conv' lowering: depthwise convolutions as
grouped convolutions) and adds the multiply-adds of every convolution and matrix product
only, the convention of most NAS papers' tables (XLA's count also has BatchNorm, ReLU,
pooling and additions).

    python benchmarks/model_costs.py
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdarts import genotype, parallel, retrain  # noqa: E402
from jaxdarts.networks import NetworkCIFAR, NetworkImageNet  # noqa: E402


def conv_dense_macs(jaxpr) -> int:
    """Multiply-adds of the convolutions and matrix products of a jaxpr (sub-jaxprs included)."""
    m = 0
    for e in jaxpr.eqns:
        if e.primitive.name == "conv_general_dilated":
            k, rhs = e.invars[1].aval.shape, e.params["dimension_numbers"].rhs_spec  # (out, in, spatial...)
            m += int(np.prod(e.outvars[0].aval.shape)) * k[rhs[1]] * int(np.prod([k[i] for i in rhs[2:]]))
        elif e.primitive.name == "dot_general":
            (lc, _), _ = e.params["dimension_numbers"]
            m += int(np.prod(e.outvars[0].aval.shape)) * int(np.prod([e.invars[0].aval.shape[i] for i in lc]))
        for p in e.params.values():
            for sub in p if isinstance(p, (list, tuple)) else [p]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    m += conv_dense_macs(inner)
    return m


def jaxpr_macs(net, size):
    x = jnp.zeros((1, size, size, 3))
    v = jax.eval_shape(lambda: net.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False))
    return conv_dense_macs(jax.make_jaxpr(lambda v, x: net.apply(v, x, train=False))(v, x).jaxpr)


def info(network, size, C, layers, classes_dataset):
    cfg = retrain.base_config()
    cfg.network, cfg.dataset = network, classes_dataset
    cfg.model.C, cfg.model.layers = C, layers
    cfg.batch_size = cfg.eval_batch_size = 8
    x = np.zeros((8, size, size, 3), np.uint8)
    y = np.zeros((8,), np.int32)
    t = retrain.Trainer(cfg, "DARTS_V2", mesh=parallel.make_mesh(1), data=((x, y), (x, y)))
    t0 = time.time()
    out = t.model_info(t.init_state())
    return out, time.time() - t0


def main():
    g = genotype.resolve("DARTS_V2")
    nets = {"cifar": NetworkCIFAR(g, C=36, layers=20, auxiliary=False, num_classes=10, lowering="conv"),
            "imagenet": NetworkImageNet(g, C=48, layers=14, auxiliary=False, lowering="conv")}
    print("| network | parameters | multiply-adds (XLA flops / 2) | conv + dense multiply-adds (jaxpr) | published "
          "| seconds |\n|---|---|---|---|---|---|")
    for name, args, paper in (("CIFAR-10 C36 L20 32px", ("cifar", 32, 36, 20, "cifar10"), "3.3 M params"),
                              ("ImageNet C48 L14 224px", ("imagenet", 224, 48, 14, "imagenet2012"),
                               "4.7 M params, 574 M multiply-adds")):
        out, secs = info(*args)
        macs = jaxpr_macs(nets[args[0]], args[1])
        print(f"| DARTS_V2 {name} | {out['params'] / 1e6:.3f} M | {out['macs'] / 1e6:.0f} M | {macs / 1e6:.1f} M | "
              f"{paper} | {secs:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
