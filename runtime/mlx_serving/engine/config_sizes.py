"""Check the sizes in a model's config.json before mlx-lm builds a model from them.

mlx-lm builds the model config.json describes and only then compares it with the weights.
One bad value therefore costs more than a failed load: `num_hidden_layers` of 10**9 builds
layer after layer, at ~1.8 GB/s, and the load never answers; a negative
`max_position_embeddings` loads and is reported as the context length; a zero head count
fails deep inside as a ZeroDivisionError. So each size is checked here to be a whole
number MLX can index, and the layer count and vocabulary against the tensors the weight
files declare (their headers only). Both the plain and the distributed loading path call
`check_config_sizes` before mlx-lm sees the directory.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from ..protocol.errors import ModelLoadError

# MLX holds shapes as int32.
MAX_EXTENT = 2**31 - 1
# The spellings of each size across the config.json files mlx-lm reads.
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")
HEAD_KEYS = ("num_attention_heads", "n_head")
KV_HEAD_KEYS = ("num_key_value_heads",)
CONTEXT_KEYS = ("max_position_embeddings", "max_seq_len", "n_positions", "seq_length")
SIZE_KEYS = (
    *LAYER_KEYS,
    *HIDDEN_KEYS,
    *HEAD_KEYS,
    *KV_HEAD_KEYS,
    *CONTEXT_KEYS,
    "vocab_size",
    "intermediate_size",
    "head_dim",
)
# A layer's tensors are named `...layers.N.`, `...h.N.` (GPT-2), `...blocks.N.`, `...layer.N.`.
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_EMBEDDINGS = (
    "embed_tokens.weight",
    "wte.weight",
    "word_embeddings.weight",
    "tok_embeddings.weight",
)
# The safetensors format caps its JSON header at 100 MB.
_MAX_HEADER_BYTES = 100_000_000


class _Refused(Exception):
    """Why the config cannot describe a model these weights hold."""


def check_config_sizes(model_id: str, model_dir: Path) -> None:
    """ModelLoadError naming the first size in `model_dir`/config.json that is not a
    positive whole number MLX can index, or that the weight files cannot back."""
    try:
        _check(model_dir)
    except _Refused as exc:
        raise ModelLoadError(f"cannot load model '{model_id}': {exc}", model_id=model_id) from None


def _check(model_dir: Path) -> None:
    config = _read_config(model_dir / "config.json")
    # Multimodal configs nest the language model's sizes under text_config.
    text_config = config.get("text_config")
    sections = [config, *([text_config] if isinstance(text_config, dict) else [])]
    checked = [_sizes(section) for section in sections]
    shapes = _declared_shapes(model_dir)
    if not shapes:
        return  # no weight files: mlx-lm says so in its own words
    for sizes in checked:
        _check_against_weights(sizes, shapes)


def _sizes(section: dict[str, Any]) -> dict[str, int]:
    """The sizes a config section sets (null: the model's default), each checked."""
    sizes = {}
    for key in SIZE_KEYS:
        value = section.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_EXTENT:
            raise _Refused(
                f"config.json {key} is {value!r}, expected a whole number from 1 to {MAX_EXTENT}"
            )
        sizes[key] = value
    heads, kv_heads = _first(sizes, HEAD_KEYS), _first(sizes, KV_HEAD_KEYS)
    hidden = _first(sizes, HIDDEN_KEYS)
    if heads is not None and hidden is not None and heads > hidden:
        raise _Refused(f"config.json has {heads} attention heads for a hidden size of {hidden}")
    if heads is not None and kv_heads is not None and kv_heads > heads:
        raise _Refused(
            f"config.json has {kv_heads} key/value heads, more than its {heads} attention heads"
        )
    return sizes


def _check_against_weights(sizes: dict[str, int], shapes: dict[str, list[int]]) -> None:
    layers = _first(sizes, LAYER_KEYS)
    if layers is not None:
        indices = {int(m.group(1)) for name in shapes if (m := _LAYER_INDEX.search(name))}
        # Weights named some other way still bound the count: a layer has a tensor at least.
        present, what = (len(indices), "layers") if indices else (len(shapes), "tensors")
        if layers > present:
            raise _Refused(
                f"config.json says {layers} layers, but the weights hold {present} {what}"
            )
    vocab = sizes.get("vocab_size")
    embedding = next((n for n in shapes if n.endswith(_EMBEDDINGS) and shapes[n]), None)
    if vocab is not None and embedding is not None and vocab > shapes[embedding][0]:
        raise _Refused(
            f"config.json says vocab_size {vocab}, but the embedding {embedding} has "
            f"{shapes[embedding][0]} rows"
        )


def _first(sizes: dict[str, int], keys: tuple[str, ...]) -> int | None:
    return next((sizes[key] for key in keys if key in sizes), None)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _Refused(f"cannot read config.json: {exc}") from exc
    if not isinstance(config, dict):
        raise _Refused("config.json is not a JSON object")
    return config


def _declared_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Tensor name -> shape over the weight files mlx-lm loads (`model*.safetensors`)."""
    shapes: dict[str, list[int]] = {}
    for path in sorted(model_dir.glob("model*.safetensors")):
        try:
            header = safetensors_header(path)
        except (OSError, ValueError) as exc:
            raise _Refused(f"{path.name} is not a readable safetensors file: {exc}") from exc
        for name, entry in header.items():
            shape = entry.get("shape") if isinstance(entry, dict) else None
            if isinstance(shape, list) and all(isinstance(d, int) for d in shape):
                shapes[name] = shape
    return shapes


def safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor entries of a safetensors file's JSON header (an 8-byte little-endian
    length, then JSON), the length checked against the file's size before reading.
    ValueError for a file that is not safetensors."""
    with path.open("rb") as weights:
        size = path.stat().st_size
        prefix = weights.read(8)
        if len(prefix) < 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, _MAX_HEADER_BYTES):
            raise ValueError(f"its header claims {length} bytes of a {size}-byte file")
        header = json.loads(weights.read(length))
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    header.pop("__metadata__", None)
    return header
