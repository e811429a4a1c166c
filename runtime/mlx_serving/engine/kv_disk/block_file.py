"""One KV block as one file: safetensors (mx.load and the safetensors tools read it), written
and read here with numpy only.

Writing never calls into MLX, so it can run on a thread other than the engine's; reading
checks everything a damaged or foreign file could get wrong before any byte of it becomes
an array: the header's length and JSON, the format and its version, the model key and the
block hash the caller expects, every tensor's dtype, shape and extent against the file's
length, and a CRC-32 of the tensor bytes (a bit flipped by the disk, not an attacker; the
directory is the user's own).

A file is written under a temporary name in the same folder and renamed into place, so a
reader in this process or another one sees the whole file or none; two runtimes writing
the same block rename identical content over each other.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .identity import FORMAT_VERSION, block_name

FORMAT = "mlx-serving-kv"
TEMP_SUFFIX = ".tmp"
# A block's header names a few dozen tensors; anything near this is not ours.
_MAX_HEADER_BYTES = 1 << 20

# safetensors dtype -> how numpy holds it (bfloat16 travels as its raw 16 bits).
_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
}

Tensors = dict[str, tuple[np.ndarray, str]]  # name -> (array, safetensors dtype)


class BadBlock(Exception):
    """A block file that must not be loaded; the message says why."""


def write_block(path: Path, tensors: Tensors, metadata: dict[str, str]) -> int:
    """Write `tensors` (C-contiguous) and `metadata` to `path` atomically; returns its size."""
    table: dict[str, Any] = {}
    offset = 0
    crc = 0
    for name, (array, dtype) in tensors.items():
        table[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
        crc = zlib.crc32(array.data.cast("B"), crc)
    table["__metadata__"] = {**metadata, "format": FORMAT, "data_crc32": str(crc)}
    header = json.dumps(table, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the spec aligns the data to 8 bytes
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
    try:
        with open(temp, "wb") as out:
            out.write(struct.pack("<Q", len(header)))
            out.write(header)
            for array, _ in tensors.values():
                out.write(array.data.cast("B"))
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return 8 + len(header) + offset


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a whole, well-formed block file, reading its header only (the
    start-up index); raises BadBlock or OSError."""
    with open(path, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        head = source.read(8)
        length = _header_length(head, size)
        header = source.read(length)
    table, metadata = _parse_header(header, length)
    _check_extents(table, size - 8 - length)
    return metadata


@dataclass(frozen=True)
class BlockHeader:
    model: str
    parent: str
    token_ids: bytes


def read_header(path: Path, name: str) -> BlockHeader:
    """The header of the block file called `name`, reading nothing else: a whole file of
    this format and version whose model, parent and token ids hash to its name. Raises
    BadBlock or OSError."""
    metadata = read_metadata(path)
    if metadata.get("version") != str(FORMAT_VERSION):
        raise BadBlock(f"format version {metadata.get('version')!r}")
    model, parent = metadata.get("model", ""), metadata.get("parent", "")
    try:
        token_ids = base64.b64decode(metadata.get("token_ids", ""), validate=True)
        named = block_name(model, parent, token_ids)
    except ValueError:
        named = ""
    if named != name or str(len(token_ids) // 4) != metadata.get("tokens"):
        raise BadBlock("its header does not match its name")
    return BlockHeader(model, parent, token_ids)


def read_block(path: Path, expected: dict[str, str]) -> Tensors:
    """The tensors of a block whose metadata holds `expected`; raises BadBlock, or
    FileNotFoundError when it is gone (evicted, by this process or another)."""
    with open(path, "rb") as source:
        content = source.read()
    length = _header_length(content[:8], len(content))
    table, metadata = _parse_header(content[8 : 8 + length], length)
    for key, value in expected.items():
        if metadata.get(key) != value:
            raise BadBlock(f"{key} is {metadata.get(key)!r}, not {value!r}")
    data = memoryview(content)[8 + length :]
    _check_extents(table, len(data))
    if str(zlib.crc32(data)) != metadata.get("data_crc32"):
        raise BadBlock("the tensor bytes do not match their checksum")
    tensors: Tensors = {}
    for name, entry in table.items():
        start, end = entry["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=_NUMPY_DTYPES[entry["dtype"]])
        tensors[name] = (array.reshape(entry["shape"]), entry["dtype"])
    return tensors


def _header_length(head: bytes, size: int) -> int:
    if len(head) < 8:
        raise BadBlock("truncated: no header")
    (length,) = struct.unpack("<Q", head)
    if length > _MAX_HEADER_BYTES or 8 + length > size:
        raise BadBlock(f"truncated or not a block: header of {length} bytes in {size}")
    return int(length)


def _parse_header(header: bytes, length: int) -> tuple[dict[str, Any], dict[str, str]]:
    if len(header) != length:
        raise BadBlock("truncated header")
    try:
        table = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadBlock(f"unreadable header: {exc}") from None
    if not isinstance(table, dict):
        raise BadBlock("the header is not a table")
    metadata = table.pop("__metadata__", None)
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise BadBlock("not an mlx-serving KV block")
    return table, {str(k): str(v) for k, v in metadata.items()}


def _check_extents(table: dict[str, Any], data_bytes: int) -> None:
    """Every tensor well-typed and its bytes exactly where the header says; together they
    fill the data section to the end of the file (a cut file fails here)."""
    end = 0
    for name, entry in table.items():
        try:
            dtype = _NUMPY_DTYPES[entry["dtype"]]
            start, stop = (int(x) for x in entry["data_offsets"])
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
        except (KeyError, TypeError, ValueError):
            raise BadBlock(f"tensor {name!r}: malformed entry") from None
        if start != end or stop - start != count * dtype.itemsize:
            raise BadBlock(f"tensor {name!r}: its bytes are not where its shape says")
        end = stop
    if end != data_bytes:
        raise BadBlock(f"truncated: {data_bytes} data bytes, the header describes {end}")
