"""TensorBoard event files without TensorFlow: a thin layer over tensorboardX's writer.

:class:`SummaryWriter` writes ``events.out.tfevents.*`` files that TensorBoard reads, with
``tensorboardX`` (TF-free; protobuf and TFRecord framing are its): a metrics line's
numeric entries as scalars (:func:`flat_scalars`: sweeps as ``name/run_i``), and PNG images
as they are (the derived cells, :func:`jaxdarts.cell_diagram.cell_diagram`).

The search writes them through :class:`jaxdarts.hooks.TensorBoardHook` (``cfg.tensorboard``,
on by default; images need matplotlib) into ``<workdir>/tensorboard``; retraining writes its
scalars likewise. ``tensorboard --logdir <workdir>`` shows them. :func:`read_events` reads
a file back (tests, tools).
"""

from __future__ import annotations

import math
import os
import struct
import time

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2, summary_pb2
from tensorboardX.record_writer import masked_crc32c

__all__ = ["SummaryWriter", "read_events", "read_records", "flat_scalars", "png_size"]


def png_size(png: bytes) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return height, width


class SummaryWriter:
    """Appends events to one new ``events.out.tfevents.*`` file in ``logdir`` (``path``),
    synchronously (tensorboardX's ``EventsWriter``: after :meth:`flush` every event is on
    disk; its queued ``SummaryWriter`` is not, which a resumed run or a reader would race)."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        self._ev = EventsWriter(os.path.join(logdir, "events"), f".{os.getpid()}.jaxdarts")
        self.path = self._ev._file_name

    def _add(self, values, step: int):
        self._ev.write_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                             summary=summary_pb2.Summary(value=values)))

    def scalars(self, values: dict[str, float], step: int):
        """One event with every finite scalar of ``values``."""
        vals = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        if vals:
            self._add(vals, step)

    def image(self, tag: str, png: bytes, step: int):
        """A PNG image as it is (no re-encoding)."""
        h, w = png_size(png)
        img = summary_pb2.Summary.Image(height=h, width=w, colorspace=4, encoded_image_string=png)
        self._add([summary_pb2.Summary.Value(tag=tag, image=img)], step)

    def flush(self):
        self._ev.flush()

    def close(self):
        self._ev.close()


def read_events(path: str) -> list:
    """The events of a file (``tensorboardX.proto.event_pb2.Event``), CRCs checked."""
    return [event_pb2.Event.FromString(r) for r in read_records(path)]


def read_records(path: str) -> list[bytes]:
    """The serialised records of an event file, CRCs checked (TFRecord framing)."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8:pos + 12])[0] != masked_crc32c(header):
            raise ValueError(f"{path}: bad length CRC at byte {pos}")
        rec = data[pos + 12:pos + 12 + n]
        if struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] != masked_crc32c(rec):
            raise ValueError(f"{path}: bad record CRC at byte {pos}")
        out.append(rec)
        pos += 16 + n
    return out


def flat_scalars(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numeric entries of a metrics line, lists (sweeps) as ``name/run_i``."""
    out = {}
    for k, v in metrics.items():
        if k in ("epoch",):
            continue
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[prefix + k] = float(v)
        elif isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            out.update({f"{prefix}{k}/run_{i}": float(x) for i, x in enumerate(v)})
    return out
