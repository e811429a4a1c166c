"""Broken copies of a valid GGUF file: cut at every structural boundary, or with one field lying.

Offsets come from the `gguf` package's reader run on the *valid* file (safe there), so
these files are built independently of the runtime's own checks. Each variant says
whether its structure alone is impossible (`structural`): such a file must be refused
before any tensor is read. The others (a tensor count one too small, transposed
dimensions, hyperparameters no model could have) have a layout that fits the file and must
fail later, still as a clean load error.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
from gguf import GGUFValueType as V

HUGE = (2**31, 2**40, 2**64 - 1)
_HEADER = 24
_KV_PARTS = ("length", "key", "type", "value")
_TENSOR_PARTS = ("length", "name", "dimension_count", "dims", "type", "offset")
# Hyperparameters that size the model, as `{architecture}.{suffix}`.
_SIZES = (
    ".block_count",
    ".context_length",
    ".embedding_length",
    ".feed_forward_length",
    ".attention.head_count",
    ".attention.head_count_kv",
    ".rope.dimension_count",
)


@dataclass(frozen=True)
class Variant:
    label: str
    data: bytes
    structural: bool = True

    def write(self, directory: Path) -> Path:
        name = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.label)
        path = directory / f"{name}.gguf"
        path.write_bytes(self.data)
        return path


def truncations(path: Path) -> Iterator[Variant]:
    """The file cut at and just past each boundary: header fields, every metadata entry
    (its key, type and value), every tensor entry (name, dimensions, type, offset), the
    padding before the data, and every tensor's data (start and middle)."""
    data = path.read_bytes()
    reader = gguf.GGUFReader(str(path))
    end = max(t.data_offset + int(t.n_bytes) for t in reader.tensors)
    cuts: dict[str, int] = {f"header+{n}": n for n in (4, 8, 12, 16, 20)}
    for key, field in _metadata(reader):
        for part, offset in _part_offsets(field.offset, field.parts[:4]):
            cuts[f"kv:{key}:{part}"] = offset
            cuts[f"kv:{key}:{part}+1"] = offset + 1
    table_end = _HEADER
    for tensor in reader.tensors:
        field = tensor.field
        for part, offset in _part_offsets(field.offset, field.parts, _TENSOR_PARTS):
            cuts[f"tensor-info:{tensor.name}:{part}"] = offset
        table_end = field.offset + sum(int(p.nbytes) for p in field.parts)
        cuts[f"data:{tensor.name}"] = tensor.data_offset
        cuts[f"data:{tensor.name}+half"] = tensor.data_offset + int(tensor.n_bytes) // 2
    cuts["padding"] = table_end
    cuts["padding+1"] = table_end + 1
    cuts["data-start"] = reader.data_offset
    cuts["last-byte"] = end - 1
    for label, keep in sorted(cuts.items(), key=lambda item: item[1]):
        if keep < end:
            yield Variant(f"cut:{label}@{keep}", data[:keep])


def lies(path: Path) -> Iterator[Variant]:
    """The file whole, with one count, length, type, dimension or offset changed."""
    patch = _Patcher(path.read_bytes())
    reader = gguf.GGUFReader(str(path))
    tensors, kvs = len(reader.tensors), len(_metadata(reader))
    for value in HUGE:
        yield patch("tensor_count", 8, "<Q", value)
        yield patch("kv_count", 16, "<Q", value)
    # One entry too many reads the next section as this one; one too few leaves the last
    # tensor entry unread and moves where the data starts, still inside the file.
    yield patch("tensor_count", 8, "<Q", tensors + 1)
    yield patch("tensor_count", 8, "<Q", tensors - 1, structural=False)
    yield patch("kv_count", 16, "<Q", kvs + 1)
    yield patch("kv_count", 16, "<Q", kvs - 1)
    for key, field in _metadata(reader):
        yield from _metadata_lies(key, field, patch)
    for tensor in reader.tensors:
        yield from _tensor_lies(tensor, reader, patch)


def _metadata_lies(key: str, field: gguf.ReaderField, patch: _Patcher) -> Iterator[Variant]:
    offsets = dict(_part_offsets(field.offset, field.parts[:5]))
    for value in HUGE:
        yield patch(f"{key}:key_length", offsets["length"], "<Q", value)
    yield patch(f"{key}:value_type", offsets["type"], "<I", 99)
    kind = field.types[0]
    if kind == V.STRING:
        for value in HUGE:
            yield patch(f"{key}:string_length", offsets["value"], "<Q", value)
    elif kind == V.ARRAY:
        item_type, length = offsets["value"], offsets["value"] + 4
        yield patch(f"{key}:item_type", item_type, "<I", int(V.ARRAY))
        yield patch(f"{key}:item_type", item_type, "<I", 99)
        for value in HUGE:
            yield patch(f"{key}:array_length", length, "<Q", value)
        if field.types[1] == V.STRING:
            first_item = length + 8
            yield patch(f"{key}:item0_length", first_item, "<Q", 2**40)
    elif key == "general.alignment":
        for value in (0, 3, 2**31):
            yield patch(key, offsets["value"], "<I", value)
    elif key.endswith(_SIZES) and kind == V.UINT32:
        # A layout that fits, describing a model no file could hold.
        for value in (0, 2**32 - 1):
            yield patch(key, offsets["value"], "<I", value, structural=False)


def _tensor_lies(
    tensor: gguf.ReaderTensor, reader: gguf.GGUFReader, patch: _Patcher
) -> Iterator[Variant]:
    name = tensor.name
    offsets = dict(_part_offsets(tensor.field.offset, tensor.field.parts, _TENSOR_PARTS))
    for value in HUGE:
        yield patch(f"{name}:name_length", offsets["length"], "<Q", value)
    for value in (0, 5, 2**31):
        yield patch(f"{name}:dimension_count", offsets["dimension_count"], "<I", value)
    for value in (0, *HUGE):
        yield patch(f"{name}:dim0", offsets["dims"], "<Q", value)
    # Retired Q4_2 (no block size in some readers) and an id no reader knows.
    for value in (4, 99):
        yield patch(f"{name}:type", offsets["type"], "<I", value)
    for value in (2**40, 2**64 - 1):
        yield patch(f"{name}:data_offset", offsets["offset"], "<Q", value)
    relative = tensor.data_offset - reader.data_offset
    yield patch(f"{name}:data_offset", offsets["offset"], "<Q", relative + 1)
    dims = [int(d) for d in tensor.field.parts[3]]
    if len(dims) == 2 and dims[0] != dims[1]:
        # Transposed: the same bytes, so the layout fits; the model it describes does not.
        yield patch(f"{name}:dims", offsets["dims"], "<QQ", dims[1], dims[0], structural=False)


@dataclass(frozen=True)
class _Patcher:
    data: bytes

    def __call__(
        self, label: str, offset: int, fmt: str, *values: int, structural: bool = True
    ) -> Variant:
        changed = bytearray(self.data)
        struct.pack_into(fmt, changed, offset, *values)
        shown = ",".join(map(str, values))
        return Variant(f"lie:{label}={shown}", bytes(changed), structural)


def _metadata(reader: gguf.GGUFReader) -> list[tuple[str, gguf.ReaderField]]:
    return [(k, f) for k, f in reader.fields.items() if not k.startswith("GGUF.")]


def _part_offsets(
    start: int, parts: list[Any], names: tuple[str, ...] = _KV_PARTS
) -> Iterator[tuple[str, int]]:
    """(name, absolute offset) of each leading part of a metadata or tensor entry."""
    offset = start
    for name, part in zip(names, parts, strict=False):
        yield name, offset
        offset += int(part.nbytes)
