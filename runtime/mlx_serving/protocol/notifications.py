"""Notifications the runtime sends without being asked: stream output and progress."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

UNSET = msgspec.UNSET


class TopLogprob(msgspec.Struct, kw_only=True):
    token_id: int
    token: str
    logprob: float


class StreamChunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`stream.chunk`: one generated token and the text it completed (may be empty)."""

    stream_id: str
    token: str
    token_id: int
    is_final: bool = False
    logprob: float | msgspec.UnsetType = UNSET
    top_logprobs: list[TopLogprob] | msgspec.UnsetType = UNSET
    cumulative_text: str | msgspec.UnsetType = UNSET


class StreamChunkBatch(msgspec.Struct, kw_only=True):
    """`stream.chunk`, batched form: several single chunks of one flush in one line."""

    stream_id: str
    tokens: list[StreamChunk]
    batch_size: int
    is_batch: bool = True


class StreamStats(msgspec.Struct, kw_only=True):
    """`stream.stats`: timings in seconds; tokens_per_second excludes time to first token."""

    stream_id: str
    tokens_generated: int
    tokens_per_second: float
    time_to_first_token: float
    total_time: float
    prompt_tokens: int
    cached_prompt_tokens: int = 0
    draft_tokens_accepted: int = 0
    guidance_valid: bool | None = None


FinishReason = Literal["stop", "length", "cancelled"]


class StreamCompleted(msgspec.Struct, kw_only=True, tag="completed", tag_field="event"):
    stream_id: str
    finish_reason: FinishReason
    is_final: bool = True


class StreamFailed(msgspec.Struct, kw_only=True, tag="error", tag_field="event"):
    stream_id: str
    error: str
    is_final: bool = True
    error_code: int | None = None


StreamEvent = StreamCompleted | StreamFailed


class RuntimeProgress(msgspec.Struct, kw_only=True):
    """`runtime.progress`: how far a long task (load, download) has come."""

    task: Literal["download", "load"]
    model_id: str
    done: int
    total: int
    unit: str


# Notification method → the shapes its params take (a chunk comes single or batched).
NOTIFICATIONS: dict[str, list[Any]] = {
    "stream.chunk": [StreamChunk, StreamChunkBatch],
    "stream.stats": [StreamStats],
    "stream.event": [StreamEvent],
    "runtime.progress": [RuntimeProgress],
}
