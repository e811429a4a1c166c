"""The KV cache one stream costs: for every layer, a key and a value vector per KV head
for each token of the prompt and of max_tokens, in the model's compute dtype."""

from __future__ import annotations

from typing import Any

from ..loader import LoadedModel

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# mlx-lm's KV caches grow by this many tokens at a time (KVCache.step), so a stream holds
# its tokens rounded up to it.
CACHE_STEP = 256
# What a stream costs in a continuous batch beyond its own cache: mlx-lm's batch cache pads
# every row to the longest and copies the whole batch when a stream joins or leaves (old
# and new arrays alive together). Measured in docs/MEMORY.md.
BATCH_OVERHEAD = 2


def kv_bytes(model: LoadedModel, tokens: int) -> int:
    """Bytes a stream of `tokens` tokens (prompt + max_tokens) on `model` is charged."""
    rounded = -(-tokens // CACHE_STEP) * CACHE_STEP
    return rounded * kv_bytes_per_token(model) * BATCH_OVERHEAD


def kv_bytes_per_token(model: LoadedModel) -> int:
    """layers x KV heads x head dim x 2 (key and value) x dtype bytes, from the model's
    config (a vision model's from its text_config)."""
    config: dict[str, Any] = {**(model.config.get("text_config") or {}), **model.config}
    layers = _first_int(config, "num_hidden_layers", "n_layers", "num_layers", "n_layer")
    heads = _first_int(config, "num_attention_heads", "n_heads", "n_head")
    kv_heads = _first_int(config, "num_key_value_heads", "n_kv_heads") or heads
    head_dim = _first_int(config, "head_dim")
    hidden = _first_int(config, "hidden_size", "d_model", "n_embd")
    if not head_dim and heads and hidden:
        head_dim = hidden // heads
    if not (layers and kv_heads and head_dim):
        # An architecture that names these otherwise: a layer's worth of hidden states per
        # token, for every layer we can count, is the same order of magnitude.
        layers, kv_heads, head_dim = layers or 32, 1, hidden or 4096
    return layers * kv_heads * head_dim * 2 * _DTYPE_BYTES.get(model.dtype, 2)


def _first_int(config: dict[str, Any], *keys: str) -> int:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0
