"""runtime/info, runtime/state and shutdown: what the runtime is, holds and does now."""

from __future__ import annotations

from typing import Literal

import msgspec

from ...config import Settings
from .common import UNSET
from .models import ShardStrategy


class MemoryInfo(msgspec.Struct, kw_only=True):
    rss: int
    vms: int


class Limits(msgspec.Struct, kw_only=True):
    max_frame_bytes: int
    max_output_line_bytes: int
    max_tokens: int
    max_temperature: float
    max_prompt_bytes: int
    max_active_streams: int


class RankStatus(msgspec.Struct, kw_only=True):
    rank: int
    host: str
    pid: int
    memory: MemoryInfo
    # MLX's allocator: bytes held now and at most since the rank started.
    mlx_active_bytes: int
    mlx_peak_bytes: int


class DistributedStatus(msgspec.Struct, kw_only=True):
    """A runtime serving across several ranks (`--hostfile`); rank 0 answers."""

    backend: str
    size: int
    state: Literal["ok", "failed"]
    error: str | None = None
    ranks: list[RankStatus]
    # Seconds since the ranks' figures were gathered (every 2 s).
    ranks_age_s: float
    # How each loaded model is split over the ranks.
    models: dict[str, ShardStrategy] = {}


class PromptCacheInfo(msgspec.Struct, kw_only=True):
    """Where prompt KV caches outlive the process, and for which loaded models."""

    # The disk tier's folder (scheduler.prompt_cache_dir); null: the disk tier is off.
    directory: str | None
    max_disk_bytes: int
    # Loaded models whose prompt caches also go to disk.
    persisted_models: list[str]
    # The other loaded models, each with why its caches stay in RAM (a sliding window or a
    # recurrent state mlx-lm cannot restore exactly, a distributed or vision model).
    not_persisted: dict[str, str]


class RuntimeInfo(msgspec.Struct, kw_only=True):
    version: str
    mlx_version: str
    mlx_lm_version: str
    protocol: str
    capabilities: list[str]
    mlx_supported: bool
    memory: MemoryInfo
    backend: Literal["metal", "cuda", "cpu"]
    native: dict[str, bool]
    native_notes: dict[str, str]
    limits: Limits
    # Extension: the effective runtime.yaml settings (file, environment and overrides).
    config: Settings
    # Extension: the prompt cache's disk tier.
    prompt_cache: PromptCacheInfo
    # Extension: the group of a distributed runtime; absent in a single process.
    distributed: DistributedStatus | msgspec.UnsetType = UNSET


class LoadedModelState(msgspec.Struct, kw_only=True):
    """A model the runtime knows: resident, or evicted (for room or after keep_alive_s)
    and loaded again on demand. unload_model forgets it."""

    model_id: str
    # "evicted": not resident; a generate or tokenize naming it loads it again.
    state: Literal["ready", "evicted"]
    # embedding: loaded with load_embedding_model; it serves embed only.
    type: Literal["text", "vision", "embedding"]
    resident: bool
    pinned: bool
    # Its weights: measured once loaded; before that, read from the weight files' headers.
    bytes: int
    # Unix time it was last loaded, used by a request, or left by its last stream.
    last_used: float
    # Evicted after this long unused; null: never.
    keep_alive_s: float | None


class MemoryState(msgspec.Struct, kw_only=True):
    """The memory budget (models.memory_budget_bytes) and what holds it."""

    budget_bytes: int
    # weights_bytes + kv_reserved_bytes + loading_bytes (the prompt caches included).
    used_bytes: int
    # Resident models' weights and their prompt caches' share.
    weights_bytes: int
    # What the running and admitted streams reserved for their KV caches.
    kv_reserved_bytes: int
    # Estimated weights of the loads in flight.
    loading_bytes: int
    # Streams waiting for room before they are acknowledged.
    streams_waiting: int


class RuntimeState(msgspec.Struct, kw_only=True):
    # Every known model, the evicted ones included (`resident`).
    loaded_models: list[LoadedModelState]
    active_streams: int
    restart_count: int
    memory: MemoryState
    # Extension: as in runtime/info.
    distributed: DistributedStatus | msgspec.UnsetType = UNSET
