"""TensorBoard event files without TensorFlow (or the tensorboard package).

:class:`SummaryWriter` writes ``events.out.tfevents.*`` files that TensorBoard reads:
TFRecord framing (little-endian length, masked CRC-32C of the length, the record, masked
CRC-32C of the record) around ``tensorflow.Event`` protocol buffers, encoded here by hand
(``Event{wall_time=1, step=2, file_version=3, summary=5}``, ``Summary{value=1}``,
``Summary.Value{tag=1, simple_value=2, image=4}``,
``Summary.Image{height=1, width=2, colorspace=3, encoded_image_string=4}``).

The search engine writes the per-epoch scalars of ``metrics.jsonl`` and the derived cells as
images (``cfg.tensorboard``, on by default; images need matplotlib) into
``<workdir>/tensorboard``; retraining writes its scalars likewise. ``tensorboard --logdir
<workdir>`` shows them.
"""

from __future__ import annotations

import os
import socket
import struct
import time

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes_field(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _event(wall_time: float, step: int = 0, file_version: str | None = None, summary: bytes | None = None) -> bytes:
    out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if summary is not None:
        out += _bytes_field(5, summary)
    return out


def scalar_value(tag: str, value: float) -> bytes:
    return _bytes_field(1, _bytes_field(1, tag.encode()) + _key(2, 5) + struct.pack("<f", float(value)))


def image_value(tag: str, png: bytes, height: int, width: int, channels: int = 4) -> bytes:
    img = (_key(1, 0) + _varint(height) + _key(2, 0) + _varint(width) + _key(3, 0) + _varint(channels)
           + _bytes_field(4, png))
    return _bytes_field(1, _bytes_field(1, tag.encode()) + _bytes_field(4, img))


def png_size(png: bytes) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return height, width


class SummaryWriter:
    """Appends events to one new ``events.out.tfevents.<time>.<host>`` file in ``logdir``."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.jaxdarts"
        self.path = os.path.join(logdir, name)
        self._f = open(self.path, "ab")
        self._write(_event(time.time(), 0, file_version="brain.Event:2"))

    def _write(self, record: bytes):
        header = struct.pack("<Q", len(record))
        self._f.write(header + struct.pack("<I", masked_crc(header)) + record + struct.pack("<I", masked_crc(record)))

    def scalars(self, values: dict[str, float], step: int):
        """One event with every finite scalar of ``values``."""
        import math

        body = b"".join(scalar_value(k, v) for k, v in values.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
        if body:
            self._write(_event(time.time(), step, summary=body))

    def image(self, tag: str, png: bytes, step: int):
        h, w = png_size(png)
        self._write(_event(time.time(), step, summary=image_value(tag, png, h, w)))

    def flush(self):
        self._f.flush()

    def close(self):
        self._f.close()


def read_events(path: str):
    """The records of an event file, CRCs checked: ``[bytes, ...]`` (for tests/tools)."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8:pos + 12])[0] != masked_crc(header):
            raise ValueError(f"{path}: bad length CRC at byte {pos}")
        rec = data[pos + 12:pos + 12 + n]
        if struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] != masked_crc(rec):
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
