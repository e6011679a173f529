"""NAS-Bench-201 tabulated accuracies (optional): look up the architecture a search found.

Today's offline table is AnalogNAS-Bench (``pip install analog-nasbench==0.1.3``, the
``nb201`` extra; 5.6 MB): all 15,625 NAS-Bench-201 cells with the CIFAR-10 test accuracy of
its authors' own full-precision training (``baseline_accuracy``, 10.0-94.07 %; the cell
that is best in NAS-Bench-201 scores 93.99 there). These are NOT NAS-Bench-201's own
numbers (those need the benchmark's ``.pth`` files); trends compare, values do not.

The table is read without importing the package (which needs pandas and
``pkg_resources``): its pickle is loaded with stand-ins for the two record classes.
Keys are NASLib ``op_indices``: edge order ``(1<-0), (2<-0), (3<-0), (2<-1), (3<-1),
(3<-2)`` and op codes ``skip_connect 0, none 1, nor_conv_3x3 2, nor_conv_1x1 3,
avg_pool_3x3 4`` (:func:`naslib_op_indices`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle

from jaxdarts import genotype as genotype_lib

NASLIB_OP_CODE = {"skip_connect": 0, "none": 1, "nor_conv_3x3": 2, "nor_conv_1x1": 3, "avg_pool_3x3": 4}
ROW_TO_NASLIB = (0, 1, 3, 2, 4, 5)
"""NASLib position of jaxdarts' alpha row r (rows (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2))."""


class TableNotInstalledError(RuntimeError):
    pass


def naslib_op_indices(genotype) -> tuple[int, ...]:
    """The NASLib/AnalogNAS key of a NAS-Bench-201 genotype (or arch string)."""
    if isinstance(genotype, str):
        genotype = genotype_lib.Genotype.from_nb201_str(genotype)
    g = genotype.normal
    if len(g) != 6:
        raise ValueError(f"not a NAS-Bench-201 cell (6 edges): {g}")
    out = [0] * 6
    for r, (op, _) in enumerate(g):
        out[ROW_TO_NASLIB[r]] = NASLIB_OP_CODE[op]
    return tuple(out)


class _Record:
    def __setstate__(self, state):
        self.__dict__.update(state)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.split(".")[0] in ("analognasbench", "__main__"):
            return type(name, (_Record,), {})
        return super().find_class(module, name)


def table_path() -> str:
    spec = importlib.util.find_spec("analognasbench")
    if spec is None or not spec.submodule_search_locations:
        raise TableNotInstalledError("no NAS-Bench-201 table installed: `pip install analog-nasbench==0.1.3` "
                                     "(or `pip install jaxdarts[nb201]`) to report tabulated accuracies")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data.anb")
    if not os.path.exists(path):
        raise TableNotInstalledError(f"analog-nasbench is installed but its table {path} is missing")
    return path


@functools.lru_cache(maxsize=1)
def table() -> dict[tuple[int, ...], float]:
    """``{op_indices: CIFAR-10 accuracy (%)}`` for all 15,625 cells."""
    with open(table_path(), "rb") as f:
        data = _Unpickler(f).load()
    return {tuple(int(i) for i in k): float(v.baseline_accuracy) for k, v in data.items()}


def accuracy(genotype) -> float:
    """Tabulated CIFAR-10 accuracy (%) of a NAS-Bench-201 genotype or arch string."""
    return table()[naslib_op_indices(genotype)]


def available() -> bool:
    try:
        table_path()
        return True
    except TableNotInstalledError:
        return False
