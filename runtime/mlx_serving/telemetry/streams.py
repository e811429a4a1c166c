"""Stream figures taken from the notifications on their way to the writer.

The scheduler sends the notifications of one engine step as one batch; the observer reads
that batch once: chunk timestamps per stream give the inter-token latency (one
`observe_many` per batch), `stream.stats` gives TTFT, queue wait and token counts, and the
final `stream.event` the outcome. Nothing is added to the engine's own loop but this pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ..protocol.errors import GENERATION_ERROR
from ..protocol.notifications import (
    GenerationCompletedEvent,
    RuntimeErrorEvent,
    StreamChunk,
    StreamChunkBatch,
    StreamCompleted,
    StreamFailed,
    StreamStats,
)
from .registry import Counter, Histogram

Notification = tuple[str, msgspec.Struct]


@dataclass
class StreamMetrics:
    """The families the observer feeds (declared, with their names, in telemetry/__init__)."""

    generated_tokens: Counter
    prompt_tokens: Counter
    cached_prompt_tokens: Counter
    draft_tokens_accepted: Counter
    completed: Counter  # label finish_reason: stop, length
    cancelled: Counter
    errored: Counter
    time_to_first_token: Histogram
    inter_token_latency: Histogram
    queue_wait: Histogram
    generation_duration: Histogram


@dataclass
class _Live:
    model_id: str
    # perf_counter of the batch that carried the stream's last chunk; None before the first.
    last_chunk_at: float | None = None
    stats: StreamStats | None = None


class StreamObserver:
    def __init__(
        self,
        metrics: StreamMetrics,
        events: bool,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._metrics = metrics
        self._inter_token_latency = metrics.inter_token_latency.labels()
        self._events = events
        self._clock = clock
        self._live: dict[str, _Live] = {}
        # Started streams that have sent nothing yet: waiting for admission or prefill.
        self._waiting: set[str] = set()
        # Request threads start streams while the engine thread observes them.
        self._lock = threading.Lock()

    def started(self, stream_id: str, model_id: str) -> None:
        with self._lock:
            self._live[stream_id] = _Live(model_id)
            self._waiting.add(stream_id)

    @property
    def waiting_count(self) -> int:
        with self._lock:
            return len(self._waiting)

    def observe(self, notifications: list[Notification]) -> list[Notification]:
        """Record one emitted batch; returns the events to send after it."""
        now = self._clock()
        if len(notifications) == 1:
            method, params = notifications[0]
            if method == "stream.chunk" and isinstance(params, StreamChunk):
                # Most batches: one stream's token. It is observed on every token, so the
                # general path's bookkeeping would be a large part of a token's work.
                with self._lock:
                    lone = self._chunks_sent(params.stream_id, 1, now)
                if lone:
                    self._inter_token_latency.observe(lone[0])
                return []
        gaps: list[float] = []
        events: list[Notification] = []
        # Chunks per stream in this batch: tokens that arrive together share the gap since
        # the stream's previous batch, so a stream's gaps sum to its first-to-last span.
        per_stream: dict[str, int] = {}
        with self._lock:
            for method, params in notifications:
                if method == "stream.chunk":
                    if isinstance(params, StreamChunk):
                        per_stream[params.stream_id] = per_stream.get(params.stream_id, 0) + 1
                    elif isinstance(params, StreamChunkBatch):
                        for chunk in params.tokens:
                            per_stream[chunk.stream_id] = per_stream.get(chunk.stream_id, 0) + 1
                elif method == "stream.stats" and isinstance(params, StreamStats):
                    self._flush_chunks(per_stream, now, gaps)
                    self._on_stats(params)
                elif method == "stream.event":
                    self._flush_chunks(per_stream, now, gaps)
                    event = self._on_end(params)
                    if event is not None:
                        events.append(("runtime.event", event))
            self._flush_chunks(per_stream, now, gaps)
        if gaps:
            self._inter_token_latency.observe_many(gaps)
        return events if self._events else []

    def _flush_chunks(self, per_stream: dict[str, int], now: float, gaps: list[float]) -> None:
        for stream_id, count in per_stream.items():
            gaps.extend(self._chunks_sent(stream_id, count, now))
        per_stream.clear()

    def _chunks_sent(self, stream_id: str, count: int, now: float) -> list[float]:
        """The gaps of `count` chunks of one stream sent together at `now` (under _lock):
        they share the time since its previous batch; its first chunk has none."""
        live = self._live_stream(stream_id)
        last, live.last_chunk_at = live.last_chunk_at, now
        if last is None:
            return [0.0] * (count - 1)
        return [(now - last) / count] * count

    def _live_stream(self, stream_id: str) -> _Live:
        """The stream a chunk was sent for, no longer waiting (under _lock)."""
        live = self._live.get(stream_id)
        if live is None:  # not started through telemetry (a test's own scheduler)
            live = self._live[stream_id] = _Live(model_id="")
        self._waiting.discard(stream_id)
        return live

    def _on_stats(self, stats: StreamStats) -> None:
        m = self._metrics
        live = self._live.get(stats.stream_id)
        if live is not None:
            live.stats = stats
        self._waiting.discard(stats.stream_id)
        m.generated_tokens.inc(by=stats.tokens_generated)
        m.prompt_tokens.inc(by=stats.prompt_tokens)
        m.cached_prompt_tokens.inc(by=stats.cached_prompt_tokens)
        m.draft_tokens_accepted.inc(by=stats.draft_tokens_accepted)
        if stats.tokens_generated > 0:
            m.time_to_first_token.labels().observe(stats.time_to_first_token)
        m.queue_wait.labels().observe(stats.queue_time)
        m.generation_duration.labels().observe(stats.total_time)

    def _on_end(self, event: Any) -> msgspec.Struct | None:
        m = self._metrics
        live = self._live.pop(event.stream_id, None)
        self._waiting.discard(event.stream_id)
        model_id = live.model_id if live is not None else ""
        stats = live.stats if live is not None else None
        timestamp = time.time()
        if isinstance(event, StreamCompleted):
            if event.finish_reason == "cancelled":
                m.cancelled.inc()
            else:
                m.completed.inc(event.finish_reason)
            return GenerationCompletedEvent(
                timestamp=timestamp,
                stream_id=event.stream_id,
                model_id=model_id,
                finish_reason=event.finish_reason,
                tokens_generated=stats.tokens_generated if stats else 0,
                time_to_first_token=stats.time_to_first_token if stats else 0.0,
                total_time=stats.total_time if stats else 0.0,
            )
        if isinstance(event, StreamFailed):
            m.errored.inc()
            return RuntimeErrorEvent(
                timestamp=timestamp,
                code=event.error_code if event.error_code is not None else GENERATION_ERROR,
                message=event.error,
                model_id=model_id or None,
                stream_id=event.stream_id,
            )
        return None
