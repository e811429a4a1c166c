"""Read a GGUF file into plain metadata and MLX tensors, quantized blocks kept packed.

MLX's own loader (`mx.load`) is the fast path: it memory-maps the file and turns the
Q4_0, Q4_1 and Q8_0 blocks into MLX affine-quantized triplets without a copy through
Python. It refuses a whole file when any one tensor has a type it cannot convert (Q5_0,
Q5_1, the IQ types, ...), and it narrows BF16 to F16; those files go through the `gguf`
package instead (see `fallback.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import mlx.core as mx

from .errors import GGUFImportError
from .layout import check_layout

MetadataValue = str | int | float | bool | list["MetadataValue"]

# Q4_0, Q4_1 and Q8_0 all quantize blocks of 32 values with one scale (and offset).
GGUF_BLOCK = 32
# llama.cpp's `general.file_type` for a file whose matrices are BF16.
_FILE_TYPE_BF16 = 32


@dataclass(frozen=True)
class QuantizedTensor:
    """An MLX affine-quantized matrix: value = scales * q + biases, per group of columns."""

    weight: mx.array  # uint32, `32 // bits` values packed per word along the last axis
    scales: mx.array
    biases: mx.array
    bits: int
    group_size: int

    def map_rows(self, fn: Callable[[mx.array], mx.array]) -> QuantizedTensor:
        """The same tensor with `fn` applied to the rows of all three parts alike."""
        return QuantizedTensor(
            fn(self.weight), fn(self.scales), fn(self.biases), self.bits, self.group_size
        )


Tensor = QuantizedTensor | mx.array


@dataclass(frozen=True)
class GGUFContents:
    """What the importer needs from a GGUF file, keyed by llama.cpp's names."""

    path: Path
    metadata: dict[str, MetadataValue]
    tensors: dict[str, Tensor]  # e.g. "blk.0.attn_q.weight"

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFImportError(f"{self.path}: no general.architecture in the GGUF metadata")
        return arch


def read_gguf(path: Path) -> GGUFContents:
    """Metadata and tensors of `path`; GGUFImportError if it is not a readable GGUF file."""
    check_layout(path)  # before any native reader follows the file's lengths and offsets
    try:
        loaded = mx.load(str(path), format="gguf", return_metadata=True)
    except (RuntimeError, ValueError) as exc:
        reason = str(exc)
        if "extends past the end of the file" in reason:
            raise GGUFImportError(f"{path} is truncated or corrupt: {reason}") from exc
        if "gguf_init failed" in reason:
            raise GGUFImportError(
                f"{path}: cannot parse the GGUF header and metadata (truncated or corrupt file)"
            ) from exc
        # Any other failure is a tensor type MLX does not convert: read it the slow way.
        return _read_with_gguf_package(path, reason)
    arrays, raw_metadata = cast(tuple[dict[str, mx.array], dict[str, Any]], loaded)
    metadata = {key: _plain(value) for key, value in raw_metadata.items()}
    if metadata.get("general.file_type") == _FILE_TYPE_BF16:
        # mx.load would narrow BF16 to F16, which overflows above 65504.
        return _read_with_gguf_package(path, "BF16 tensors")
    return GGUFContents(path, metadata, _group_triplets(arrays))


def _plain(value: object) -> MetadataValue:
    """Metadata as Python values: MLX hands scalars and numeric arrays back as mx.array."""
    if isinstance(value, mx.array):
        value = value.item() if value.ndim == 0 else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (str, int, float, bool)):
        return value
    raise GGUFImportError(f"unexpected GGUF metadata value of type {type(value).__name__}")


def _group_triplets(arrays: dict[str, mx.array]) -> dict[str, Tensor]:
    """Fold mx.load's flat `X.weight`/`X.scales`/`X.biases` keys into QuantizedTensors.

    MLX names the triplet of a tensor called `X.weight` as `X.weight`, `X.scales` and
    `X.biases`, and of a tensor called `X` (no suffix) as `X`, `X.scales`, `X.biases`.
    """
    tensors: dict[str, Tensor] = {}
    consumed: set[str] = set()
    for key in arrays:
        if not key.endswith(".scales"):
            continue
        stem = key[: -len(".scales")]
        name = f"{stem}.weight" if f"{stem}.weight" in arrays else stem
        weight, scales, biases = arrays[name], arrays[key], arrays[f"{stem}.biases"]
        group_size = GGUF_BLOCK
        bits = weight.shape[-1] * 32 // (scales.shape[-1] * group_size)
        tensors[name] = QuantizedTensor(weight, scales, biases, bits, group_size)
        consumed.update((name, key, f"{stem}.biases"))
    for key, array in arrays.items():
        if key not in consumed:
            tensors[key] = array
    return tensors


def _read_with_gguf_package(path: Path, why: str) -> GGUFContents:
    from .fallback import read_with_gguf_package

    return read_with_gguf_package(path, why)
