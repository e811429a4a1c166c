"""Read a GGUF file through the `gguf` package, for files `mx.load` refuses.

Q4_0, Q4_1 and Q8_0 blocks are repacked into MLX triplets bit for bit (no loss, same as
the fast path); BF16 stays BF16; every other quantization type (Q5_0, Q5_1, K-quants,
IQ types, ...) is dequantized by `gguf.quants` and stored as float16, because MLX has
no affine layout that holds those blocks losslessly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import numpy.typing as npt

from .errors import GGUFImportError
from .reader import GGUF_BLOCK, GGUFContents, MetadataValue, QuantizedTensor, Tensor


def read_with_gguf_package(path: Path, why: str) -> GGUFContents:
    try:
        import gguf
    except ImportError as exc:  # the package is an optional ("demo") dependency
        raise GGUFImportError(
            f"{path}: MLX cannot read this file ({why}) and the `gguf` package that could "
            "is not installed"
        ) from exc
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise GGUFImportError(f"{path} is truncated or corrupt: {exc}") from exc
    metadata: dict[str, MetadataValue] = {
        key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")
    }
    tensors: dict[str, Tensor] = {}
    for tensor in reader.tensors:
        try:
            tensors[tensor.name] = _to_mlx(tensor.data, tensor.tensor_type.name, gguf)
        except (ValueError, NotImplementedError) as exc:
            raise GGUFImportError(
                f"{path}: cannot read tensor {tensor.name!r} of type {tensor.tensor_type.name}: "
                f"{exc}"
            ) from exc
    return GGUFContents(path, metadata, tensors)


def _to_mlx(data: npt.NDArray[Any], type_name: str, gguf: Any) -> Tensor:
    if type_name in ("F32", "F16"):
        return mx.array(np.ascontiguousarray(data))
    if type_name in _REPACKERS:
        return _REPACKERS[type_name](np.asarray(data, dtype=np.uint8))
    dense = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name])
    if type_name == "BF16":
        return mx.array(dense).astype(mx.bfloat16)  # exact: the values are BF16 already
    return mx.array(dense.astype(np.float16))


def _blocks(raw: npt.NDArray[np.uint8], block_bytes: int) -> npt.NDArray[np.uint8]:
    rows = raw.shape[0] if raw.ndim > 1 else 1
    return raw.reshape(rows, -1, block_bytes)


def _half(blocks: npt.NDArray[np.uint8], start: int) -> npt.NDArray[np.float16]:
    """The float16 stored at byte `start` of every block, shape (rows, blocks)."""
    return np.ascontiguousarray(blocks[..., start : start + 2]).view(np.float16)[..., 0]


def _nibbles(packed: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """GGML stores value j of a 32-block in the low nibble of byte j, value j+16 in the high."""
    low = packed & 0x0F
    high = packed >> 4
    values: npt.NDArray[np.uint8] = np.concatenate([low, high], axis=-1)
    return values


def _triplet(
    q: npt.NDArray[np.uint8],
    scales: npt.NDArray[np.float16],
    biases: npt.NDArray[np.float16],
    bits: int,
) -> QuantizedTensor:
    """Pack unsigned q (rows, blocks, 32) the way MLX does: value i at bit `bits * (i % k)`."""
    rows = q.shape[0]
    flat = q.reshape(rows, -1)
    if bits == 4:
        flat = (flat[:, 0::2] | (flat[:, 1::2] << 4)).astype(np.uint8)
    words = np.ascontiguousarray(flat).view("<u4")
    return QuantizedTensor(mx.array(words), mx.array(scales), mx.array(biases), bits, GGUF_BLOCK)


def _repack_q4_0(raw: npt.NDArray[np.uint8]) -> QuantizedTensor:
    blocks = _blocks(raw, 18)  # f16 d, 16 bytes of nibbles; value = d * (q - 8)
    d = _half(blocks, 0)
    return _triplet(_nibbles(blocks[..., 2:]), d, (d * np.float16(-8)).astype(np.float16), 4)


def _repack_q4_1(raw: npt.NDArray[np.uint8]) -> QuantizedTensor:
    blocks = _blocks(raw, 20)  # f16 d, f16 m, 16 bytes of nibbles; value = d * q + m
    return _triplet(_nibbles(blocks[..., 4:]), _half(blocks, 0), _half(blocks, 2), 4)


def _repack_q8_0(raw: npt.NDArray[np.uint8]) -> QuantizedTensor:
    blocks = _blocks(raw, 34)  # f16 d, 32 signed bytes; value = d * q
    d = _half(blocks, 0)
    # Shift to unsigned: d * q == d * (q + 128) - 128 * d, and 128 * d is exact in float16.
    unsigned = (blocks[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return _triplet(unsigned, d, (d * np.float16(-128)).astype(np.float16), 8)


_REPACKERS = {"Q4_0": _repack_q4_0, "Q4_1": _repack_q4_1, "Q8_0": _repack_q8_0}
