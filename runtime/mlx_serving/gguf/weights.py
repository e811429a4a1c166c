"""GGUF tensors -> mlx-lm parameter names and layout, quantized blocks kept as they are.

Renaming follows llama.cpp's tensor names (`blk.N.attn_q.weight` ...) onto the Hugging Face
names mlx-lm's llama/qwen2 modules use. The only data change is undoing llama.cpp's row
permutation of Q and K; everything else is a rename (and, for floats, a dtype cast).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx

from .architectures import ArchSpec
from .errors import GGUFImportError
from .hparams import HParams
from .reader import GGUFContents, QuantizedTensor, Tensor

_GLOBAL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_PER_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BIASED = ("attn_q", "attn_k", "attn_v")
# Folded into config.json's rope_scaling rather than stored (see rope.py).
ROPE_FREQS = "rope_freqs.weight"


@dataclass(frozen=True)
class ConvertedWeights:
    arrays: dict[str, mx.array]  # mlx-lm parameter name -> array, ready for safetensors
    quantized: dict[str, tuple[int, int]]  # module path -> (group_size, bits)
    dense_matrices: list[str]  # module paths of Linear/Embedding weights left in float
    vocab_size: int
    tied_embeddings: bool


def convert_weights(
    contents: GGUFContents, spec: ArchSpec, hparams: HParams, float_dtype: mx.Dtype
) -> ConvertedWeights:
    arrays: dict[str, mx.array] = {}
    quantized: dict[str, tuple[int, int]] = {}
    dense: list[str] = []
    for name, tensor in contents.tensors.items():
        if name == ROPE_FREQS:
            continue
        module, param = _target(contents.path, name, spec)
        if spec.permute_qk and module.endswith(("q_proj", "k_proj")):
            heads = hparams.n_head if module.endswith("q_proj") else hparams.n_head_kv
            _check_head_rows(contents.path, name, tensor, heads)
            tensor = _unpermute(tensor, heads)
        if isinstance(tensor, QuantizedTensor):
            arrays[f"{module}.weight"] = tensor.weight
            arrays[f"{module}.scales"] = tensor.scales.astype(float_dtype)
            arrays[f"{module}.biases"] = tensor.biases.astype(float_dtype)
            quantized[module] = (tensor.group_size, tensor.bits)
        else:
            arrays[f"{module}.{param}"] = tensor.astype(float_dtype)
            if param == "weight" and tensor.ndim == 2:
                dense.append(module)
    embedding = contents.tensors.get("token_embd.weight")
    if embedding is None:
        raise GGUFImportError(f"{contents.path}: no token_embd.weight tensor")
    vocab_size = (embedding.weight if isinstance(embedding, QuantizedTensor) else embedding).shape[
        0
    ]
    _check_complete(contents.path, arrays, hparams, spec)
    return ConvertedWeights(
        arrays,
        quantized,
        dense,
        vocab_size,
        tied_embeddings="output.weight" not in contents.tensors,
    )


def quantization_config(weights: ConvertedWeights) -> dict[str, Any] | None:
    """mlx-lm's `quantization` entry: the most common setting, plus per-module exceptions.

    mlx-lm's loader looks a module's path up in this dict first (a dict of settings, or
    False for "leave it in float") before falling back to the top-level group_size/bits.
    """
    if not weights.quantized:
        return None
    (default, _), *_ = Counter(weights.quantized.values()).most_common(1)
    config: dict[str, Any] = {"group_size": default[0], "bits": default[1]}
    for module, (group_size, bits) in sorted(weights.quantized.items()):
        if (group_size, bits) != default:
            config[module] = {"group_size": group_size, "bits": bits}
    for module in sorted(weights.dense_matrices):
        config[module] = False
    return config


def _target(path: Path, name: str, spec: ArchSpec) -> tuple[str, str]:
    """(mlx-lm module path, parameter) for a GGUF tensor name; error if it has no place."""
    stem, _, param = name.rpartition(".")
    parts = stem.split(".")
    module: str | None = None
    if len(parts) == 1 and param == "weight":
        module = _GLOBAL.get(parts[0])
    elif len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit():
        suffix = _PER_BLOCK.get(parts[2])
        bias_ok = param == "bias" and spec.qkv_bias and parts[2] in _BIASED
        if suffix is not None and (param == "weight" or bias_ok):
            module = f"model.layers.{parts[1]}.{suffix}"
    if module is None:
        raise GGUFImportError(
            f"{path}: tensor {name!r} has no counterpart in mlx-lm's {spec.model_type} "
            f"(GGUF architecture {spec.gguf_arch!r}; mixture-of-experts and other variants "
            "are not supported)"
        )
    return module, param


def _check_head_rows(path: Path, name: str, tensor: Tensor, n_head: int) -> None:
    rows = (tensor.weight if isinstance(tensor, QuantizedTensor) else tensor).shape[0]
    if rows % (2 * n_head):
        raise GGUFImportError(
            f"{path}: tensor {name!r} has {rows} rows, which {n_head} heads of rotary pairs "
            "cannot divide"
        )


def _unpermute(tensor: Tensor, n_head: int) -> Tensor:
    """Undo llama.cpp's `permute` of Q/K rows: per head, interleaved pairs -> two halves."""

    def rows(array: mx.array) -> mx.array:
        count = array.shape[0]
        return (
            array.reshape(n_head, count // n_head // 2, 2, *array.shape[1:])
            .swapaxes(1, 2)
            .reshape(array.shape)
        )

    if isinstance(tensor, QuantizedTensor):
        return tensor.map_rows(rows)
    return rows(tensor)


def _check_complete(
    path: Path, arrays: dict[str, mx.array], hparams: HParams, spec: ArchSpec
) -> None:
    """mlx-lm's parameters and these match, so a bad file fails here rather than at load."""
    # Each block has nine tensors: a block count beyond the tensors present is a lie, and
    # naming every tensor it implies (2**32 blocks) would exhaust memory.
    if hparams.n_layer > len(arrays):
        raise GGUFImportError(
            f"{path}: {spec.gguf_arch}.block_count is {hparams.n_layer}, but the file holds "
            f"only {len(arrays)} tensors"
        )
    expected = {"model.embed_tokens.weight", "model.norm.weight"}
    for layer in range(hparams.n_layer):
        expected.update(f"model.layers.{layer}.{suffix}.weight" for suffix in _PER_BLOCK.values())
        if spec.qkv_bias:
            expected.update(f"model.layers.{layer}.self_attn.{p}_proj.bias" for p in "qkv")
    present = {_as_weight(key) for key in arrays}
    missing = sorted(expected - present)
    extra = sorted(present - expected - {"lm_head.weight"})
    for problem, keys in (("missing tensors for", missing), ("tensors beyond the model:", extra)):
        if keys:
            shown = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
            raise GGUFImportError(f"{path}: {problem} {shown}")


def _as_weight(key: str) -> str:
    for part in (".scales", ".biases"):
        if key.endswith(part):
            return key[: -len(part)] + ".weight"
    return key
