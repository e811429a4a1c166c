"""Notifications the runtime sends without being asked: stream output, progress, events."""

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
    # Reasoning of a thinking model, sent apart only when the request asked for
    # `reasoning: "separate"`; absent on ordinary text.
    reasoning: bool = False


# This runtime never sends the batched form. It is declared because PROTOCOL.md allows it
# (compat runtimes sent it) and clients check stream.chunk against the generated schema:
# the TS client validates every notification, so without it a batch would be refused.
class StreamChunkBatch(msgspec.Struct, kw_only=True):
    """`stream.chunk`, batched form: several single chunks of one flush in one line."""

    stream_id: str
    tokens: list[StreamChunk]
    batch_size: int
    is_batch: bool = True


class StreamToolCall(msgspec.Struct, kw_only=True):
    """`stream.tool_call`: one complete call the model made, sent as soon as it is parsed;
    the call's markup is not sent as chunk text."""

    stream_id: str
    # 0, 1, … in the order of the stream's calls.
    index: int
    id: str
    name: str
    # JSON text of the arguments object.
    arguments: str


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
    # From the request to its admission into the model's batch (before its first prefill).
    queue_time: float = 0.0


# tool_calls: the model stopped (EOS or a stop sequence) after at least one tool call.
FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


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


LoadStage = Literal["resolving", "converting_gguf", "loading_weights", "ready"]


class RuntimeProgress(msgspec.Struct, kw_only=True):
    """`runtime.progress`: how far a long task (load, download) has come."""

    task: Literal["download", "load"]
    model_id: str
    done: int
    total: int
    unit: str
    # Loads count stages (unit "stages"): the one just begun, done = its index; the last,
    # "ready", has done == total and comes before the load_model answer.
    stage: LoadStage | msgspec.UnsetType = UNSET


class _Event(msgspec.Struct, kw_only=True, tag_field="event"):
    # Unix time, seconds.
    timestamp: float


class ModelLoadedEvent(_Event, tag="model_loaded"):
    model_id: str
    load_time: float
    context_length: int
    parameter_count: int
    dtype: str
    draft: bool


class ModelUnloadedEvent(_Event, tag="model_unloaded"):
    model_id: str
    # "replaced": load_model loaded the same model_id again; "evicted": a load or a stream
    # needed its room in the memory budget; "expired": unused for its keep_alive_s. An
    # evicted or expired model is loaded again on demand (models.reload_on_demand).
    reason: Literal["unloaded", "replaced", "evicted", "expired"]
    # For "evicted" and "expired": what needed the room and the budget, in words. Left out
    # otherwise, so an unload reads as it always did.
    detail: str | msgspec.UnsetType = UNSET
    # The weights it let go of; left out where not known.
    bytes: int | msgspec.UnsetType = UNSET


class GenerationStartedEvent(_Event, tag="generation_started"):
    stream_id: str
    model_id: str
    prompt_tokens: int
    max_tokens: int


class GenerationCompletedEvent(_Event, tag="generation_completed"):
    """After the stream's final `stream.event` of kind completed (cancelled included)."""

    stream_id: str
    model_id: str
    finish_reason: FinishReason
    tokens_generated: int
    time_to_first_token: float
    total_time: float


class RuntimeErrorEvent(_Event, tag="error"):
    """A failed stream (after its final event), a failed model load, or an internal error
    of a request. Mistakes of the caller (-32600 … -32602, -32005) are not events."""

    code: int
    message: str
    method: str | None = None
    model_id: str | None = None
    stream_id: str | None = None


class RuntimeStatusEvent(_Event, tag="runtime_status"):
    """The runtime's own state changes: "stopping" when shutdown begins, before its
    streams are ended."""

    status: Literal["stopping"]
    active_streams: int
    loaded_models: int


RuntimeEvent = (
    ModelLoadedEvent
    | ModelUnloadedEvent
    | GenerationStartedEvent
    | GenerationCompletedEvent
    | RuntimeErrorEvent
    | RuntimeStatusEvent
)


# Notification method → the shapes its params take (a chunk comes single or batched).
NOTIFICATIONS: dict[str, list[Any]] = {
    "stream.chunk": [StreamChunk, StreamChunkBatch],
    "stream.tool_call": [StreamToolCall],
    "stream.stats": [StreamStats],
    "stream.event": [StreamEvent],
    "runtime.progress": [RuntimeProgress],
    "runtime.event": [RuntimeEvent],
}
