"""Parameters and multiply-adds of published cells from `jaxdarts.retrain.Trainer.model_info`
(XLA's cost analysis of the inference program, flops / 2), against the published figures:
DARTS_V2 on CIFAR-10 (C=36, 20 cells: 3.3 M parameters) and on ImageNet (C=48, 14 cells,
224x224: 4.7 M parameters, 574 M multiply-adds; Liu et al. 2019, Tables 1-2).

    python benchmarks/model_costs.py
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from jaxdarts import parallel, retrain  # noqa: E402


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
    for name, args, paper in (("CIFAR-10 C36 L20 32px", ("cifar", 32, 36, 20, "cifar10"), "3.3 M params"),
                              ("ImageNet C48 L14 224px", ("imagenet", 224, 48, 14, "imagenet2012"),
                               "4.7 M params, 574 M multiply-adds")):
        out, secs = info(*args)
        print(f"| DARTS_V2 {name} | {out['params'] / 1e6:.3f} M | {out['macs'] / 1e6:.0f} M | {paper} | {secs:.0f} s |",
              flush=True)


if __name__ == "__main__":
    main()
