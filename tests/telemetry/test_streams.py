"""The stream observer's arithmetic and the exported buckets, without a runtime."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from mlx_serving.protocol.notifications import (
    StreamChunk,
    StreamChunkBatch,
    StreamCompleted,
    StreamStats,
)
from mlx_serving.telemetry import Telemetry
from mlx_serving.telemetry.registry import EXPORT_BOUNDS, Histogram
from mlx_serving.telemetry.streams import StreamObserver


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def chunk(stream_id: str) -> tuple[str, msgspec.Struct]:
    return ("stream.chunk", StreamChunk(stream_id=stream_id, token="x", token_id=1))


def stats(stream_id: str, tokens: int) -> tuple[str, msgspec.Struct]:
    params = StreamStats(
        stream_id=stream_id,
        tokens_generated=tokens,
        tokens_per_second=0.0,
        time_to_first_token=0.5,
        total_time=2.0,
        prompt_tokens=3,
        queue_time=0.25,
    )
    return ("stream.stats", params)


def end(stream_id: str) -> tuple[str, msgspec.Struct]:
    return ("stream.event", StreamCompleted(stream_id=stream_id, finish_reason="length"))


def test_tokens_sent_together_share_the_gap_since_the_last_batch() -> None:
    telemetry = Telemetry()
    clock = Clock()
    observer = StreamObserver(telemetry.stream_metrics, events=True, clock=clock)
    observer.started("a", "m")
    assert observer.waiting_count == 1
    clock.now = 1.0
    assert observer.observe([chunk("a"), chunk("b")]) == []
    assert observer.waiting_count == 0
    clock.now = 3.0
    token = StreamChunk(stream_id="a", token="x", token_id=1)
    batch = StreamChunkBatch(stream_id="a", tokens=[token, token], batch_size=2)
    observer.observe([("stream.chunk", batch), chunk("b")])
    clock.now = 4.0
    events = observer.observe([chunk("a"), stats("a", 4), end("a")])
    itl = telemetry.stream_metrics.inter_token_latency.labels()
    # a: 1.0, 1.0 (two tokens over 2 s), 1.0; b: 2.0. Gaps of a stream sum to its span.
    assert itl.count == 4
    assert itl.sum == 5.0
    assert [name for name, _ in events] == ["runtime.event"]
    completed = events[0][1]
    assert msgspec.structs.asdict(completed)["model_id"] == "m"
    m = telemetry.stream_metrics
    assert m.generated_tokens.value() == 4
    assert m.completed.value("length") == 1
    assert m.queue_wait.labels().sum == 0.25


def test_events_off_records_but_announces_nothing() -> None:
    telemetry = Telemetry()
    observer = StreamObserver(telemetry.stream_metrics, events=False)
    assert observer.observe([chunk("a"), stats("a", 1), end("a")]) == []
    assert telemetry.stream_metrics.completed.value("length") == 1


@given(st.lists(st.floats(min_value=0.0, max_value=300.0), max_size=200))
def test_exported_buckets_count_exactly(values: list[float]) -> None:
    family = Histogram("h_seconds", "test")
    family.labels().observe_many(values)
    (sample,) = family.snapshot().samples
    finite = sample.buckets[:-1]
    assert [b.le for b in finite] == list(EXPORT_BOUNDS)
    for bucket in finite:
        assert isinstance(bucket.le, float)
        # The collector's buckets are half-open: a value equal to a bound counts above it.
        assert bucket.cumulative == sum(1 for v in values if v < bucket.le)
    assert sample.buckets[-1].le == "+Inf"
    assert sample.buckets[-1].cumulative == sample.count == len(values)
