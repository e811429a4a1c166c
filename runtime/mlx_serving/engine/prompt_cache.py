"""Reuse of KV caches across requests that share a token prefix, in RAM and on disk.

mlx-lm's `LRUPromptCache` (a token trie with LRU eviction and a byte bound, the one
mlx_lm.server uses; its search made linear, prompt_trie.py) is the RAM tier; this wraps
it with the rule a batched insert needs (at least one prompt token left to feed) and hit
counters for stats and metrics. The optional disk tier (`kv_disk.DiskBlocks`) gets every
stored cache's blocks, each written once, in the background; a lookup takes whichever
tier holds the longer prefix, RAM first. So what RAM evicts and what a shutdown or a
crash loses is still on disk, for this process and the next.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import mlx.core as mx
from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

from .kv_disk import DiskBlocks
from .prompt_trie import lru_prompt_cache

log = logging.getLogger(__name__)

T = TypeVar("T")

# LRUPromptCache can hold several models; ours holds one.
_MODEL_KEY = "model"


@dataclass(frozen=True)
class CacheLookup:
    cache: list[Any] | None  # per-layer KV caches holding `cached_tokens`, or None
    cached_tokens: int
    remaining: list[int]  # what still has to be prefilled; never empty


class PromptCache:
    """The prompt caches of one loaded model (it lives and dies with the model's batch)."""

    def __init__(
        self, max_bytes: int, max_entries: int = 64, disk: DiskBlocks | None = None
    ) -> None:
        self._lru = lru_prompt_cache(max_size=max_entries, max_bytes=max_bytes)
        self.enabled = max_bytes > 0 and max_entries > 0
        self.disk = disk if self.enabled else None
        self.hits = 0
        self.misses = 0
        self.cached_tokens_total = 0
        # Inserts come from the engine thread; runtime/state and metrics read from others.
        self._lock = threading.Lock()
        self._disk_failed = False  # logged already (engine thread only)

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
        restored = self._disk_work(self.disk.restore, tokens, cached) if self.disk else None
        if restored is not None:
            cache, cached = restored
            remaining = tokens[cached:]
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
        # A stream's cache taken out of a batch is a lazy slice of the whole batch's KV
        # arrays: kept unevaluated, each entry would pin those (measured: 6 entries counted
        # as 6 MB held 115 MB). Evaluated, it holds its own tokens only.
        mx.eval([layer.state for layer in cache])
        with self._lock:
            self._lru.insert_cache(_MODEL_KEY, list(tokens), cache)
        if self.disk is not None:
            self._disk_work(self.disk.save, tokens, cache)

    def _disk_work(self, work: Callable[..., T], *args: Any) -> T | None:
        """The disk tier only ever saves work: a failure of its own is a miss, logged
        once, never a failed stream."""
        try:
            return work(*args)
        except Exception:
            if not self._disk_failed:
                log.exception("prompt cache: the disk tier failed; going on without it")
            self._disk_failed = True
            return None

    @property
    def nbytes(self) -> int:
        with self._lock:
            return int(self._lru.nbytes)

    def __len__(self) -> int:
        with self._lock:
            return len(self._lru)

    def stats(self) -> dict[str, float]:
        """Counters for runtime metrics: both tiers (`hits`, `cached_tokens`) and each."""
        with self._lock:
            stats: dict[str, float] = {
                "entries": len(self._lru),
                "bytes": int(self._lru.nbytes),
                "hits": self.hits,
                "misses": self.misses,
                "cached_tokens": self.cached_tokens_total,
            }
        disk = self.disk
        if disk is not None:
            usage = disk.store.model_usage(disk.model_key)
            stats |= {
                "disk_hits": disk.hits,
                "disk_cached_tokens": disk.cached_tokens,
                "disk_bytes": usage.bytes,
                "disk_blocks_written": usage.blocks_written,
                "disk_restored_bytes": disk.restored_bytes,
                "disk_restore_seconds": disk.restore_seconds,
                "disk_save_seconds": disk.save_seconds,
                "disk_write_cpu_seconds": usage.write_cpu_seconds,
                "disk_skipped": disk.skipped,
            }
        return stats
