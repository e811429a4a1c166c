"""Reuse of KV caches across requests that share a token prefix.

mlx-lm's `LRUPromptCache` (a token trie with LRU eviction and a byte bound, the one
mlx_lm.server uses) does the bookkeeping; this wraps it with the rule a batched insert
needs (at least one prompt token left to feed) and hit counters for stats and metrics.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache

# LRUPromptCache can hold several models; ours holds one.
_MODEL_KEY = "model"


@dataclass(frozen=True)
class CacheLookup:
    cache: list[Any] | None  # per-layer KV caches holding `cached_tokens`, or None
    cached_tokens: int
    remaining: list[int]  # what still has to be prefilled; never empty


class PromptCache:
    """The prompt caches of one loaded model (it lives and dies with the model's batch)."""

    def __init__(self, max_bytes: int, max_entries: int = 64) -> None:
        self._lru = LRUPromptCache(max_size=max_entries, max_bytes=max_bytes)
        self.enabled = max_bytes > 0 and max_entries > 0
        self.hits = 0
        self.misses = 0
        self.cached_tokens_total = 0
        # Inserts come from the engine thread; runtime/state and metrics read from others.
        self._lock = threading.Lock()

    def fetch(self, tokens: list[int]) -> CacheLookup:
        if not self.enabled:
            return CacheLookup(None, 0, list(tokens))
        with self._lock:
            cache, remaining = self._lru.fetch_nearest_cache(_MODEL_KEY, tokens)
        if cache is not None and not remaining:
            # An exact hit: give back the last token so it can be fed to produce logits.
            if can_trim_prompt_cache(cache):
                trim_prompt_cache(cache, 1)
                remaining = tokens[-1:]
            else:
                cache, remaining = None, list(tokens)
        cached = len(tokens) - len(remaining) if cache is not None else 0
        with self._lock:
            if cached:
                self.hits += 1
                self.cached_tokens_total += cached
            else:
                self.misses += 1
        return CacheLookup(cache if cached else None, cached, list(remaining))

    def store(self, tokens: list[int], cache: list[Any]) -> None:
        if not self.enabled or not tokens:
            return
        with self._lock:
            self._lru.insert_cache(_MODEL_KEY, list(tokens), cache)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return int(self._lru.nbytes)

    def __len__(self) -> int:
        with self._lock:
            return len(self._lru)
