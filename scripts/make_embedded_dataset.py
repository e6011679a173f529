"""Regenerates jaxdarts/datasets/fashion_mnist_subset.npz from the original IDX files.

    apt-get install dataset-fashion-mnist      # puts them in /usr/share/datasets/fashion-mnist
    python scripts/make_embedded_dataset.py [--src DIR] [--train 10000] [--test 2000]

Takes the first ``train/10`` images of each class from the training set (in file order)
and the first ``test/10`` of each class from the test set: balanced, deterministic.
"""

import argparse
import gzip
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "jaxdarts", "datasets", "fashion_mnist_subset.npz")


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def balanced(labels, per_class):
    idx = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    return np.sort(idx)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=2000)
    args = ap.parse_args()
    out = {}
    for split, prefix, n in (("train", "train", args.train), ("test", "t10k", args.test)):
        x = read_idx(os.path.join(args.src, f"{prefix}-images-idx3-ubyte.gz"))
        y = read_idx(os.path.join(args.src, f"{prefix}-labels-idx1-ubyte.gz"))
        idx = balanced(y, n // 10)
        out[f"{split}_images"] = x[idx][..., None]
        out[f"{split}_labels"] = y[idx].astype(np.uint8)
    np.savez_compressed(OUT, **out)
    print(OUT, {k: v.shape for k, v in out.items()}, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
