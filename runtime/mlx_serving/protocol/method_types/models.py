"""load_model, load_vision_model, unload_model, download_model and check_draft."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from .common import UNSET, NonEmptyStr

ShardStrategy = Literal["pipeline", "tensor"]


class DistributedLoad(msgspec.Struct, kw_only=True):
    """How a model is split over the ranks of a distributed runtime."""

    # null: what the architecture supports (tensor when it can shard, else pipeline).
    strategy: ShardStrategy | None = None


class LoadModelParams(msgspec.Struct, kw_only=True):
    model_id: NonEmptyStr
    local_path: str | None = None
    revision: str | None = None
    quantization: str | None = None
    context_length: Annotated[int, Meta(ge=1)] | None = None
    trust_remote_code: bool = False
    draft: bool = False
    # Extension: compute dtype. A quantized model is dequantized first; on Linux CPU float32
    # runs through the optimized BLAS and decodes about 2x faster than 4-bit weights.
    dtype: Literal["float32", "float16", "bfloat16"] | None = None
    # Extension: sharding over the ranks of a distributed runtime (which shards every
    # model; this picks how).
    distributed: DistributedLoad | None = None
    # Extension: never evicted for room nor after keep_alive_s (unload_model still unloads).
    pin: bool = False
    # Extension: seconds unused before the model is evicted (and loaded again on demand);
    # null or -1: never; absent: the config's models.keep_alive_s.
    keep_alive_s: Annotated[float, Meta(ge=-1.0)] | None | msgspec.UnsetType = UNSET


class LoadModelResult(msgspec.Struct, kw_only=True):
    model_id: str
    state: Literal["ready"]
    context_length: int
    parameter_count: int
    dtype: str
    is_vision_model: bool
    cached_path: str
    draft: bool = False
    # The strategy used; absent unless the runtime is distributed.
    distributed: DistributedLoad | msgspec.UnsetType = UNSET


class LoadVisionModelResult(LoadModelResult, kw_only=True):
    # The transformers processor class that prepares images and text.
    processor_type: str
    # The vision tower's input edge in pixels; null where the processor resizes images
    # dynamically (Qwen2-VL and others).
    image_size: int | None = None


class UnloadModelParams(msgspec.Struct, kw_only=True):
    model_id: NonEmptyStr


class DownloadModelParams(msgspec.Struct, kw_only=True):
    """Fetch a snapshot from the Hugging Face Hub into the local cache; progress comes as
    `runtime.progress` notifications with task "download" and model_id = repo_id."""

    repo_id: NonEmptyStr
    revision: NonEmptyStr | None = None
    # Globs of the files to fetch; null: the config's download.allow_patterns (MLX weights,
    # config and tokenizer files); [] or ["*"]: every file.
    allow_patterns: Annotated[list[NonEmptyStr], Meta(max_length=64)] | None = None
    # A Hugging Face cache folder; null: the config's download.cache_dir, else HF_HUB_CACHE.
    cache_dir: NonEmptyStr | None = None


class DownloadModelResult(msgspec.Struct, kw_only=True):
    repo_id: str
    revision: str
    commit: str
    # Pass as load_model's local_path.
    local_path: str
    files: int
    total_bytes: int


# -- drafts --------------------------------------------------------------------------------


class CheckDraftParams(msgspec.Struct, kw_only=True):
    primary_id: NonEmptyStr
    draft_id: NonEmptyStr


class BatchCheckDraftParams(msgspec.Struct, kw_only=True):
    requests: Annotated[list[CheckDraftParams], Meta(max_length=1024)]


class DraftModelSummary(msgspec.Struct, kw_only=True):
    model_id: str
    vocab_size: int
    parameter_count: int
    model_type: str


class DraftPerformanceEstimate(msgspec.Struct, kw_only=True):
    # Draft parameters / primary parameters: speculation pays off when this is small.
    size_ratio: float
    recommended_num_draft_tokens: int


class DraftDetails(msgspec.Struct, kw_only=True):
    primary_model: DraftModelSummary
    draft_model: DraftModelSummary
    performance_estimate: DraftPerformanceEstimate


class CheckDraftResult(msgspec.Struct, kw_only=True):
    compatible: bool
    errors: list[str]
    warnings: list[str]
    details: DraftDetails
