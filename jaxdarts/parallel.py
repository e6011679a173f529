"""Data parallelism over a device mesh: one code path from one device to many hosts.

Everything that runs data-parallel (retraining, evaluation, the search step) is a
``jax.jit`` whose batch arguments are sharded over the ``'data'`` axis of a 1-D
:func:`make_mesh` mesh and whose parameters and optimiser state are replicated
(:func:`replicated`) or, when asked, sharded FSDP-style (:func:`fsdp_shardings`: each
array's largest dimension divisible by the device count is split over ``'data'``; XLA
inserts the all-gathers and reduce-scatters). There is no per-device code and no
``pmap``: the same program runs on 1 CPU, 8 GPUs or a TPU pod slice.

Semantics that differ from PyTorch ``DataParallel``/``DistributedDataParallel``:

* BatchNorm statistics are computed over the **global** batch (the mean over the batch
  axis of a sharded array is a cross-device reduction), as in single-device training; the
  PyTorch references normalise each replica's slice separately. Results therefore do not
  depend on the device count (tested: 1 vs 8 devices).
* Random numbers (augmentation, drop-path) are drawn for the global batch from one key
  (``jax_threefry_partitionable``), so they do not depend on the device count either.

Several hosts: call :func:`initialize` first (``jax.distributed.initialize``; arguments or
the usual cluster auto-detection), then every process runs the same program; each reads
only its own rows of every global batch (:class:`HostBatches`: a permutation per epoch
shared by all hosts, host ``p`` of ``P`` takes the ``p``-th of ``P`` contiguous slices)
and :func:`global_batch` assembles the global array without copying data between hosts.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
"""The mesh axis the batch is split over."""


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, **kwargs) -> bool:
    """Starts multi-host JAX (``jax.distributed.initialize``) when there is more than one
    process: arguments given here, or ``JAXDARTS_COORDINATOR`` / ``JAXDARTS_NUM_PROCESSES`` /
    ``JAXDARTS_PROCESS_ID`` in the environment, or JAX's cluster auto-detection (SLURM,
    TPU pods, Open MPI) when ``num_processes`` is None and a cluster is detected. A single
    process without any of these is left alone. Idempotent; returns whether JAX runs
    distributed. Call before anything touches a device."""
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAXDARTS_COORDINATOR")
    if num_processes is None and env.get("JAXDARTS_NUM_PROCESSES"):
        num_processes = int(env["JAXDARTS_NUM_PROCESSES"])
    if process_id is None and env.get("JAXDARTS_PROCESS_ID"):
        process_id = int(env["JAXDARTS_PROCESS_ID"])
    if jax.distributed.is_initialized():
        return True
    if coordinator_address is None and num_processes in (None, 1) and not kwargs.get("cluster_detection_method"):
        return False
    if "cpu" in (os.environ.get("JAX_PLATFORMS") or "cpu"):  # not jax.default_backend(): it would start it
        # CPU collectives between processes need an implementation (gloo ships with jaxlib).
        try:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        except Exception:  # noqa: BLE001 - option renamed or absent: JAX's default then
            pass
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)
    return True


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (0: all devices of all hosts)
    with the axis :data:`DATA`. More than one host: all devices (``num_devices`` must be 0
    or the global count)."""
    devices = jax.devices()
    n = num_devices or len(devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"mesh.num_devices={num_devices}: accepted 0 (all) or 1..{len(devices)} "
                         f"(devices here: {len(devices)} {jax.default_backend()})")
    if jax.process_count() > 1 and n != len(devices):
        raise ValueError(f"mesh.num_devices={num_devices}: with {jax.process_count()} processes the mesh "
                         f"takes all {len(devices)} devices (accepted: 0 or {len(devices)})")
    # Auto axes: XLA's sharding propagation places the intermediates (explicit-sharding mode
    # would make every vmap/reduction over the batch state its sharding).
    return jax.make_mesh((n,), (DATA,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:n])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over :data:`DATA`, the rest replicated."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def fsdp_shardings(mesh: Mesh, tree, min_size: int = 2 ** 12):
    """FSDP-style shardings for a pytree of arrays (or shape structs): each leaf with at
    least ``min_size`` elements is split over :data:`DATA` along its largest dimension
    that the device count divides; other leaves are replicated."""
    n = mesh.shape[DATA]

    def one(x):
        shape = np.shape(x)
        if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
            return replicated(mesh)
        dims = sorted(range(len(shape)), key=lambda d: -shape[d])
        for d in dims:
            if shape[d] % n == 0:
                spec = [None] * len(shape)
                spec[d] = DATA
                return NamedSharding(mesh, P(*spec))
        return replicated(mesh)

    return jax.tree.map(one, tree)


def global_batch(mesh: Mesh, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows of a global batch -> global arrays sharded over :data:`DATA`
    (``jax.make_array_from_process_local_data``; one process: a sharded ``device_put``)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def mesh_info(mesh: Mesh) -> dict[str, Any]:
    """What every metrics line records about where it ran."""
    return {"num_devices": int(mesh.size), "num_hosts": int(jax.process_count()),
            "platform": mesh.devices.flat[0].platform}


def check_batch(global_batch_size: int, mesh: Mesh, what: str = "batch_size") -> int:
    """The per-host batch; the global batch must divide evenly over devices and hosts."""
    n, hosts = mesh.size, jax.process_count()
    if global_batch_size % n or global_batch_size % hosts:
        raise ValueError(f"{what}={global_batch_size} is not divisible by the {n} devices of the mesh; "
                         f"accepted: multiples of {n}")
    return global_batch_size // hosts


@dataclasses.dataclass
class HostBatches:
    """Deterministic shuffled global batches of which this host yields its own rows.

    Epoch ``e`` uses the permutation ``rng(seed, e)`` of all examples (the same on every
    host, and the same as :class:`jaxdarts.data.BatchStream`); global batch ``i`` is
    ``perm[i*B:(i+1)*B]`` and host ``p`` of ``P`` reads rows ``[p*B/P, (p+1)*B/P)`` of it,
    so hosts read disjoint examples and the global batch does not depend on ``P``.
    ``images`` may be an array or a random-access source: one with ``read(idx, epoch)``
    returning ``{'image', 'label'}`` (:class:`jaxdarts.data.ImageSource`; ``labels`` is then
    anything with the same ``len``) or with ``__getitem__`` on an index array. A host reads
    only its rows. The last incomplete batch is dropped.
    """

    images: Any
    labels: np.ndarray
    global_batch_size: int
    seed: int
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if self.global_batch_size % self.process_count:
            raise ValueError(f"batch_size {self.global_batch_size} is not divisible by {self.process_count} hosts")
        if len(self.labels) < self.global_batch_size:
            raise ValueError(f"batch_size {self.global_batch_size} is larger than the split ({len(self.labels)} "
                             "examples)")

    @property
    def steps_per_epoch(self) -> int:
        return len(self.labels) // self.global_batch_size

    def rows(self, epoch: int, step: int) -> np.ndarray:
        """The example indices this host reads for global batch ``step`` of ``epoch``."""
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.labels))
        local = self.global_batch_size // self.process_count
        i = (step % self.steps_per_epoch) * self.global_batch_size + self.process_index * local
        return perm[i:i + local]

    def batch(self, epoch: int, step: int) -> dict[str, np.ndarray]:
        idx = self.rows(epoch, step)
        if hasattr(self.images, "read"):  # a decoding source (ImageNet): images and labels together
            return self.images.read(idx, epoch)
        return {"image": np.asarray(self.images[idx]), "label": np.asarray(self.labels[idx])}

    def epoch(self, epoch: int, start_step: int = 0, num_steps: int | None = None) -> Iterator[dict]:
        stop = self.steps_per_epoch if num_steps is None else start_step + num_steps
        for step in range(start_step, stop):
            yield self.batch(epoch, step)


def eval_batches(images, labels, global_batch_size: int, process_index: int = 0, process_count: int = 1):
    """Every example once, in order, in global batches padded to full size: yields this
    host's rows ``{'image', 'label', 'valid'}`` (``valid`` 0 on padding)."""
    n = len(labels)
    local = global_batch_size // process_count
    for start in range(0, n, global_batch_size):
        idx = np.arange(start + process_index * local, start + (process_index + 1) * local)
        valid = idx < n
        idx = np.where(valid, idx, 0)
        b = images.read(idx) if hasattr(images, "read") else {"image": np.asarray(images[idx]),
                                                               "label": np.asarray(labels[idx])}
        yield {**b, "valid": valid.astype(np.float32)}
