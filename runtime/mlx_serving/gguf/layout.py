"""Walk a GGUF file's structure in Python before any native reader is allowed to trust it.

MLX's GGUF reader (gguflib, behind `mx.load`) follows the counts, lengths and offsets in
a file as written: a key length or tensor count of 2**40 sends it past the end of its
memory map (SIGSEGV), a tensor with 0 or 2**31 dimensions does the same, a retired type id
with no block size divides by zero (SIGFPE). The `gguf` package is no safer: it raises
IndexError on some of these and loops without end on a nested array that lies about its
length. One bad file must cost one failed load, not the process, so every field that
steers a reader is checked here against the size of the file, in Python integers that
cannot overflow, and the first field that does not fit is named in a GGUFImportError.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import GGUFImportError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
# MLX holds shapes and metadata array lengths as int32.
MAX_EXTENT = 2**31 - 1

# GGUF metadata value types with a fixed size: uint8, int8, uint16, int16, uint32, int32,
# float32, bool, uint64, int64, float64.
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_UINT32, _STRING, _ARRAY = 4, 8, 9

# ggml tensor type id -> (name, values per block, bytes per block): the storage types of
# llama.cpp's ggml.h, as the gguf package's GGML_QUANT_SIZES lists them (a test checks).
# Ids missing here (retired Q4_2/Q4_3, the Q4_0_N_M repacks, Q8_1 which is never stored)
# are refused.
TENSOR_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}

# The fewest bytes one entry can take: a metadata entry is a key length (8), a type (4)
# and a value of at least 1 byte; a tensor entry a name length (8), a dimension count (4),
# one dimension (8), a type (4) and an offset (8).
_MIN_KV_BYTES = 13
_MIN_TENSOR_BYTES = 32
_HEADER_BYTES = 24


@dataclass(frozen=True)
class TensorSpan:
    """Where one tensor's data lies in the file, and what it holds."""

    name: str
    dims: tuple[int, ...]  # in GGUF order: the fastest-varying dimension first
    type_name: str
    start: int  # absolute file offset
    nbytes: int


@dataclass(frozen=True)
class GGUFLayout:
    version: int
    alignment: int
    metadata_count: int
    data_start: int  # absolute file offset of the tensor data section
    tensors: tuple[TensorSpan, ...]


def check_layout(path: Path) -> GGUFLayout:
    """The layout of `path`, after checking that every structure in it fits in the file;
    GGUFImportError naming the first one that does not."""
    if not path.is_file():
        raise GGUFImportError(f"{path}: no such file")
    with path.open("rb") as stream:
        head = stream.read(8)
        if len(head) < 8 or head[:4] != MAGIC:
            raise GGUFImportError(
                f"{path} is not a GGUF file (it starts with {head[:4]!r}, "
                f"a GGUF file with {MAGIC!r})"
            )
        (version,) = struct.unpack("<I", head[4:8])
        if version not in SUPPORTED_VERSIONS:
            raise GGUFImportError(
                f"{path}: unsupported GGUF version {version} (supported: "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}; a big-endian file also reads "
                "this way)"
            )
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return _Walk(path, mapped).layout(version)


class _Walk:
    """One pass over the header, the metadata and the tensor table, in file order."""

    def __init__(self, path: Path, buffer: mmap.mmap) -> None:
        self.path = path
        self.buffer = buffer
        self.size = len(buffer)
        self.pos = 8  # past the magic and version

    def fail(self, what: str) -> GGUFImportError:
        return GGUFImportError(f"{self.path} is truncated or corrupt: {what}")

    def take(self, count: int, what: str) -> int:
        """Advance over `count` bytes; the position they start at."""
        start = self.pos
        if count > self.size - start:
            raise self.fail(
                f"{what} needs {count} bytes at offset {start}, "
                f"the file has {self.size - start} left"
            )
        self.pos += count
        return start

    def u32(self, what: str) -> int:
        value: int = struct.unpack_from("<I", self.buffer, self.take(4, what))[0]
        return value

    def u64(self, what: str) -> int:
        value: int = struct.unpack_from("<Q", self.buffer, self.take(8, what))[0]
        return value

    def text(self, what: str) -> str:
        length = self.u64(f"the length of {what}")
        start = self.take(length, f"{what} ({length} bytes)")
        try:
            return self.buffer[start : start + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} at offset {start} is not UTF-8") from exc

    def count(self, what: str, smallest_entry: int) -> int:
        value = self.u64(what)
        room = (self.size - self.pos) // smallest_entry
        if value > room:
            raise self.fail(f"{what} is {value}, the rest of the file holds at most {room}")
        return value

    def layout(self, version: int) -> GGUFLayout:
        tensor_count = self.count("the tensor count", _MIN_TENSOR_BYTES)
        kv_count = self.count("the metadata count", _MIN_KV_BYTES)
        alignment = DEFAULT_ALIGNMENT
        keys: set[str] = set()
        for index in range(kv_count):
            key = self.text(f"the key of metadata entry {index}")
            if key in keys:
                raise self.fail(f"metadata key {key!r} appears twice")
            keys.add(key)
            value_type = self.u32(f"the type of {key!r}")
            if key == "general.alignment":
                alignment = self.alignment(value_type)
            else:
                self.value(value_type, key)
        tensors = [self.tensor_entry(index) for index in range(tensor_count)]
        data_start = -(-self.pos // alignment) * alignment
        if tensors and data_start > self.size:
            raise self.fail(f"the tensor data would start at {data_start}, past the end")
        names: set[str] = set()
        spans = []
        for name, dims, type_id, offset in tensors:
            if name in names:
                raise self.fail(f"tensor {name!r} appears twice")
            names.add(name)
            spans.append(self.span(name, dims, type_id, offset, data_start, alignment))
        return GGUFLayout(version, alignment, kv_count, data_start, tuple(spans))

    def alignment(self, value_type: int) -> int:
        if value_type != _UINT32:
            raise self.fail(f"general.alignment has value type {value_type}, not uint32")
        alignment = self.u32("general.alignment")
        if alignment == 0 or alignment & (alignment - 1):
            raise self.fail(f"general.alignment is {alignment}, not a power of two")
        return alignment

    def value(self, value_type: int, key: str) -> None:
        if value_type == _STRING:
            self.text(f"the value of {key!r}")
        elif value_type == _ARRAY:
            self.array(key)
        elif value_type in _SCALAR_BYTES:
            self.take(_SCALAR_BYTES[value_type], f"the value of {key!r}")
        else:
            raise self.fail(f"{key!r} has unknown value type {value_type}")

    def array(self, key: str) -> None:
        item_type = self.u32(f"the item type of {key!r}")
        # llama.cpp writes no arrays of arrays and MLX cannot read them; refusing them
        # also keeps this walk free of recursion a crafted file could make deep.
        if item_type == _ARRAY:
            raise self.fail(f"{key!r} is an array of arrays")
        if item_type != _STRING and item_type not in _SCALAR_BYTES:
            raise self.fail(f"{key!r} is an array of unknown value type {item_type}")
        smallest = 8 if item_type == _STRING else _SCALAR_BYTES[item_type]
        length = self.count(f"the length of {key!r}", smallest)
        if length > MAX_EXTENT:
            raise self.fail(f"{key!r} has {length} items, more than MLX can index")
        if item_type != _STRING:
            self.take(length * smallest, f"the items of {key!r}")
            return
        for index in range(length):
            self.text(f"item {index} of {key!r}")

    def tensor_entry(self, index: int) -> tuple[str, tuple[int, ...], int, int]:
        name = self.text(f"the name of tensor {index}")
        ndim = self.u32(f"the dimension count of {name!r}")
        if not 1 <= ndim <= MAX_DIMS:
            raise self.fail(f"tensor {name!r} has {ndim} dimensions (1 to {MAX_DIMS} allowed)")
        dims = tuple(self.u64(f"dimension {axis} of {name!r}") for axis in range(ndim))
        type_id = self.u32(f"the type of {name!r}")
        offset = self.u64(f"the data offset of {name!r}")
        return name, dims, type_id, offset

    def span(
        self,
        name: str,
        dims: tuple[int, ...],
        type_id: int,
        offset: int,
        data_start: int,
        alignment: int,
    ) -> TensorSpan:
        if any(not 1 <= extent <= MAX_EXTENT for extent in dims):
            raise self.fail(
                f"tensor {name!r} has dimensions {list(dims)} (each must be 1 to {MAX_EXTENT})"
            )
        if type_id not in TENSOR_TYPES:
            raise self.fail(f"tensor {name!r} has unknown type id {type_id}")
        type_name, block_values, block_bytes = TENSOR_TYPES[type_id]
        if dims[0] % block_values:
            raise self.fail(
                f"tensor {name!r} ({type_name}) has rows of {dims[0]} values, "
                f"not a multiple of its block of {block_values}"
            )
        values = 1
        for extent in dims:
            values *= extent
        nbytes = values // block_values * block_bytes
        if offset % alignment:
            raise self.fail(
                f"tensor {name!r} starts at data offset {offset}, "
                f"not a multiple of the alignment {alignment}"
            )
        start = data_start + offset
        if nbytes > self.size - start:
            raise self.fail(
                f"tensor {name!r} ({nbytes} bytes at offset {start}) extends past the end "
                f"of the file ({self.size} bytes)"
            )
        return TensorSpan(name, dims, type_name, start, nbytes)
