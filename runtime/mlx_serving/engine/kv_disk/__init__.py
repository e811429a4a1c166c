"""The disk tier of the prompt cache: KV blocks that outlive the process (issue 19).

`identity` says what a block was computed by and which caches can be cut into blocks;
`block_file` is one block as a file; `store` is the directory (index, budget, writer
thread); `blocks` cuts a model's caches into blocks and joins them back. This module wires
them to the settings: `disk_blocks` at lane creation, `open_configured_store` at start-up,
`close_stores` at shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from ...config import SchedulerConfig
from .blocks import BLOCK_TOKENS, DiskBlocks
from .identity import model_key, refusal, weights_fingerprint
from .store import BlockStore

if TYPE_CHECKING:
    from ..loader import LoadedModel

__all__ = [
    "BLOCK_TOKENS",
    "DiskBlocks",
    "close_stores",
    "disk_blocks",
    "open_configured_store",
    "persistence",
    "weights_fingerprint",
]

log = logging.getLogger(__name__)

# Blocks handed to the writer and not yet written, at most: past this a burst of finished
# streams drops blocks rather than holding their memory or waiting for the disk.
MAX_PENDING_BYTES = 256 * 1024 * 1024
# How long shutdown waits for queued blocks.
SHUTDOWN_WRITE_S = 5.0


def disk_tier_on(settings: SchedulerConfig) -> bool:
    return bool(
        settings.prompt_cache_dir
        and settings.prompt_cache_disk_bytes > 0
        and settings.prompt_cache_bytes > 0
        and settings.prompt_cache_entries > 0
    )


def open_configured_store(settings: SchedulerConfig) -> BlockStore | None:
    """The store the settings name, opened now so its index is built at start-up."""
    if not disk_tier_on(settings):
        return None
    assert settings.prompt_cache_dir
    return open_store(
        Path(settings.prompt_cache_dir), settings.prompt_cache_disk_bytes, MAX_PENDING_BYTES
    )


def persistence(loaded: LoadedModel, settings: SchedulerConfig) -> str | None:
    """Why a model's prompt caches stay in RAM, or None when they go to disk too."""
    if not disk_tier_on(settings):
        return "the disk tier is off"
    if not loaded.weights_fingerprint:
        return "its weights have no fingerprint (vision and distributed models keep none)"
    return refusal(make_prompt_cache(loaded.model))


def disk_blocks(
    loaded: LoadedModel,
    settings: SchedulerConfig,
    prefill_rate: Callable[[], float | None] = lambda: None,
) -> DiskBlocks | None:
    """The disk tier of one model's prompt cache, or None (and why, logged).
    `prefill_rate`: the model's measured prefill tokens/s (DiskBlocks.worth_it)."""
    reason = persistence(loaded, settings)
    if reason is not None:
        if disk_tier_on(settings):
            log.info("prompt caches of %s stay in RAM: %s", loaded.model_id, reason)
        return None
    store = open_configured_store(settings)
    assert store is not None
    model = loaded.model
    key = model_key(loaded.weights_fingerprint, loaded.dtype, make_prompt_cache(model), _device())
    return DiskBlocks(store, key, lambda: make_prompt_cache(model), prefill_rate=prefill_rate)


# One store per folder in a process: every model's blocks share its budget and its writer.
_stores: dict[Path, BlockStore] = {}
_stores_lock = threading.Lock()


def open_store(directory: Path, max_bytes: int, max_pending_bytes: int) -> BlockStore:
    """The process's store of `directory`, started (and its index built) on first use."""
    with _stores_lock:
        store = _stores.get(directory)
        if store is None:
            store = _stores[directory] = BlockStore(directory, max_bytes, max_pending_bytes)
        return store


def close_stores(timeout: float) -> None:
    """At shutdown: write what is queued, within `timeout` for all stores together."""
    deadline = time.monotonic() + timeout
    with _stores_lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        store.close(max(0.0, deadline - time.monotonic()))


def _device() -> str:
    if mx.default_device().type == mx.cpu:
        return "cpu"
    info = mx.device_info()
    return f"gpu:{info.get('architecture', '')}:{info.get('device_name', '')}"
