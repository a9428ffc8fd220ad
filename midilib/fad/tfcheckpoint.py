"""Read a TensorFlow (V2 format) checkpoint with numpy only, no TensorFlow.

A checkpoint `PREFIX` is `PREFIX.index`, a LevelDB-style SSTable mapping each
variable name to a `BundleEntryProto` (dtype, shape, shard, offset, size), and
`PREFIX.data-00000-of-0000N`, the raw little-endian tensor bytes. We parse the
table blocks (prefix-compressed keys) and the protobuf varints by hand, which
is all that is needed to load the musicnn weights without a 1.6 GB dependency.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_MAGIC = 0xDB4775248B80FB57  # LevelDB table magic number, the footer's last 8 bytes
_FOOTER = 48
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
           9: np.int64, 10: np.bool_, 19: np.float16}  # TF DataType enum -> numpy


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode one base-128 varint; returns (value, next position)."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Flat (field number, value) pairs of a protobuf message; nested messages stay bytes."""
    fields, pos = [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _block(data: bytes, handle: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of the table block that a BlockHandle points to."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if data[offset + size] != 0:
        raise ValueError("compressed checkpoint index blocks are not supported")
    block = data[offset : offset + size]
    (n_restarts,) = struct.unpack_from("<I", block, size - 4)
    end = size - 4 - 4 * n_restarts  # entries stop where the restart array starts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def _entry(value: bytes) -> dict:
    """A BundleEntryProto as a dict (dtype, shape, shard, offset, size)."""
    entry = {"dtype": 1, "shape": [], "shard": 0, "offset": 0, "size": 0}
    for number, field in _proto_fields(value):
        if number == 1:
            entry["dtype"] = field
        elif number == 2:  # TensorShapeProto: repeated Dim (field 2) {size: field 1}
            dims = [dict(_proto_fields(d)) for n, d in _proto_fields(field) if n == 2]
            entry["shape"] = [int(d.get(1, 0)) for d in dims]
        elif number in (3, 4, 5):
            entry[{3: "shard", 4: "offset", 5: "size"}[number]] = field
        elif number == 7:
            raise ValueError("partitioned (sliced) checkpoint variables are not supported")
    return entry


def read_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """All variables of the checkpoint at `prefix` (without `.index`), as numpy arrays."""
    index_path = Path(f"{prefix}.index")
    if not index_path.is_file():
        raise FileNotFoundError(f"checkpoint index not found: {index_path}")
    data = index_path.read_bytes()
    if len(data) < _FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC:
        raise ValueError(f"{index_path}: not a TensorFlow checkpoint index (bad table magic)")
    footer = data[len(data) - _FOOTER :]
    _, pos = _varint(footer, _varint(footer, 0)[1])  # skip the metaindex handle
    index_handle = footer[pos:]
    entries = [kv for _, handle in _block(data, index_handle) for kv in _block(data, handle)]
    header = dict(_proto_fields(entries[0][1])) if entries and entries[0][0] == b"" else {}
    n_shards = int(header.get(1, 1))
    shards: dict[int, np.memmap] = {}
    out = {}
    for key, value in entries:
        if key == b"":
            continue  # the BundleHeaderProto
        entry = _entry(value)
        if entry["dtype"] not in _DTYPES:
            continue  # strings etc.: never model weights
        shard = entry["shard"]
        if shard not in shards:
            path = Path(f"{prefix}.data-{shard:05d}-of-{n_shards:05d}")
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint data shard not found: {path}")
            shards[shard] = np.memmap(path, dtype=np.uint8, mode="r")
        dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
        raw = shards[shard][entry["offset"] : entry["offset"] + entry["size"]]
        if raw.size != entry["size"] or entry["size"] != dtype.itemsize * int(np.prod(entry["shape"])):
            raise ValueError(f"{prefix}: variable {key.decode()} has an inconsistent size")
        out[key.decode()] = np.array(raw).view(dtype).reshape(entry["shape"])  # a writable copy
    return out
