"""The bytes a model's weights take: estimated from the weight files' headers before a
load (so a load that cannot fit is refused before it reads anything), measured after."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from ...protocol.methods import LoadModelParams

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U32": 4,
    "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
_FLOATS = {"F64", "F32", "F16", "BF16"}
# A safetensors header longer than this is not one we read (the format caps it at 100 MB).
_MAX_HEADER = 100 * 1024 * 1024


def estimate_weight_bytes(params: LoadModelParams) -> int | None:
    """What the weights named by load_model's params will take once loaded, from file
    headers alone; None where the files are not found or not understood (the load then
    goes ahead and its measured size counts from then on)."""
    from ...gguf.errors import GGUFImportError

    try:
        source = _weights_source(params)
        if source is None:
            return None
        if source.suffix.lower() == ".gguf":
            return _gguf_bytes(source, params.dtype)
        return _safetensors_bytes(source, params.dtype)
    except (OSError, ValueError, KeyError, TypeError, struct.error, GGUFImportError):
        return None  # a broken file: the loader refuses it with the reason


def measure_weight_bytes(model: Any) -> int:
    """The bytes of the model's parameters as loaded (after any dtype cast)."""
    from mlx.utils import tree_flatten

    return sum(int(value.nbytes) for _, value in tree_flatten(model.parameters()))


def _weights_source(params: LoadModelParams) -> Path | None:
    """The model folder or GGUF file load_model will read, found the way the loader finds
    it (engine/loader.py resolve_model_dir), without converting anything."""
    candidate = Path(params.local_path or params.model_id).expanduser()
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        if (candidate / "config.json").is_file():
            return candidate
        ggufs = sorted(candidate.glob("*.gguf"))
        return ggufs[0] if len(ggufs) == 1 else None
    if params.local_path:
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(params.model_id, revision=params.revision, local_files_only=True)
        )
    except Exception:  # not in the cache, or not a repo id: the loader says which
        return None


def _safetensors_bytes(folder: Path, dtype: str | None) -> int | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    quantization = config.get("quantization") or config.get("quantization_config") or {}
    bits = quantization.get("bits") if isinstance(quantization, dict) else None
    total = 0
    for path in files:
        for name, entry in _safetensors_header(path).items():
            if name == "__metadata__":
                continue
            total += _tensor_bytes(entry, dtype, bits)
    return total


def _tensor_bytes(entry: dict[str, Any], dtype: str | None, bits: int | None) -> int:
    kind = entry["dtype"]
    values = math.prod(int(extent) for extent in entry["shape"])
    if dtype is None:
        return values * _SAFETENSORS_DTYPE_BYTES[kind]
    if kind in _FLOATS:
        return values * _DTYPE_BYTES[dtype]
    if kind == "U32" and isinstance(bits, int) and bits > 0:
        # A packed quantized matrix: a cast dequantizes it (engine/loader.py _cast).
        return values * (32 // bits) * _DTYPE_BYTES[dtype]
    return values * _SAFETENSORS_DTYPE_BYTES[kind]


def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8))
        if length > _MAX_HEADER:
            raise ValueError(f"{path}: safetensors header of {length} bytes")
        header = json.loads(stream.read(length))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not an object")
    return header


def _gguf_bytes(path: Path, dtype: str | None) -> int:
    from ...gguf.layout import check_layout

    layout = check_layout(path)
    if dtype is None:
        return sum(span.nbytes for span in layout.tensors)
    return sum(math.prod(span.dims) * _DTYPE_BYTES[dtype] for span in layout.tensors)
