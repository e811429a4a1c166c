"""Prompts that share a prefix and wait to be prefilled together: the prefix is computed
once. Agents and chat apps send the same system prompt and tool list with every request,
and several requests often arrive before the first one's KV reaches the prompt cache.

A prompt admitted while an older one that starts with the same tokens still waits (or is
being prefilled) follows it: when the older prompt's prefill is done, the follower takes
views of the shared prefix's keys and values (no copy: MLX copies a buffer before writing
to one that a view still reads) and prefills only the rest. Only plain `KVCache` layers
are shared this way: rotating windows and recurrent states cannot be cut at a token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import mlx.core as mx
from mlx_lm.models.cache import KVCache

if TYPE_CHECKING:
    from .prefill import Prefill

# Following an older prompt must save at least this many tokens over the prompt cache's
# own hit: below it, waiting costs more than it saves.
MIN_SHARED_TOKENS = 64


def sliceable(cache: Sequence[Any]) -> bool:
    return all(type(layer) is KVCache for layer in cache)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix (slice comparisons run in C)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


def best_leader(
    waiting: Iterable[Prefill], tokens: Sequence[int], cached: int
) -> tuple[Prefill, int] | None:
    """The waiting prompt to follow and how many of `tokens` it will hold, or None when
    none shares MIN_SHARED_TOKENS more than the `cached` tokens the prompt cache gave.
    A leader's prefill ends one token short of its prompt (the decoder feeds the last),
    and a follower keeps at least one token of its own to feed."""
    best: tuple[Prefill, int] | None = None
    for prefill in waiting:
        if not sliceable(prefill.cache):
            continue
        prompt = prefill.request.prompt_tokens
        shared = min(common_prefix(prompt, tokens), len(prompt) - 1, len(tokens) - 1)
        if shared >= cached + MIN_SHARED_TOKENS and (best is None or shared > best[1]):
            best = (prefill, shared)
    return best


def prefix_views(cache: Sequence[Any], tokens: int) -> list[Any]:
    """New cache layers holding views of the first `tokens` of `cache`'s layers."""
    layers = []
    for layer in cache:
        view = KVCache()
        view.state = (layer.keys[..., :tokens, :], layer.values[..., :tokens, :], tokens)
        layers.append(view)
    mx.eval([(view.keys, view.values) for view in layers])
    return layers
