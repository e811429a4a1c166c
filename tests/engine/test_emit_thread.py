"""The emit thread hands the engine thread's batches to the sink in order, holds the
engine thread back when the sink stops taking them, and hands a sink's failure back."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from mlx_serving.engine.emit_thread import EmitThread
from mlx_serving.engine.stream import StreamRequest
from mlx_serving.engine.stream_outbox import StreamOutbox
from mlx_serving.engine.stream_output import TextWork
from mlx_serving.protocol.notifications import StreamChunk, StreamCompleted


def _chunk(n: int) -> tuple[str, Any]:
    return ("stream.chunk", StreamChunk(stream_id="s", token=str(n), token_id=n))


class GatedSink:
    """Records what it is given; blocks while the gate is closed; can raise once."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next: Exception | None = None

    def emit(self, notifications: list[tuple[str, Any]]) -> None:
        self.gate.wait()
        self.calls += 1
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        self.seen.extend(params.token_id for _, params in notifications)


class ListSink:
    """Records every notification it is given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def emit(self, notifications: list[tuple[str, Any]]) -> None:
        self.seen.extend(notifications)


def test_batches_reach_the_sink_in_order_and_the_callers_list_is_its_own() -> None:
    sink = GatedSink()
    emitter = EmitThread(sink)
    out: list[tuple[str, Any]] = []
    for n in range(500):
        out.append(_chunk(n))
        emitter.post(out)
        out.clear()  # as the scheduler does after each emit
    emitter.close(timeout=5)
    assert sink.seen == list(range(500))


def test_batches_that_queued_up_go_out_together() -> None:
    sink = GatedSink()
    sink.gate.clear()
    emitter = EmitThread(sink)
    emitter.post([_chunk(0)])
    time.sleep(0.05)  # the thread takes the first and waits in the sink
    for n in range(1, 20):
        emitter.post([_chunk(n)])
    sink.gate.set()
    emitter.close(timeout=5)
    assert sink.seen == list(range(20))
    assert sink.calls == 2


def test_a_sink_that_takes_nothing_holds_the_poster_back() -> None:
    sink = GatedSink()
    sink.gate.clear()
    emitter = EmitThread(sink, max_batches=4)
    posted = []

    def post_many() -> None:
        for n in range(50):
            emitter.post([_chunk(n)])
            posted.append(n)

    poster = threading.Thread(target=post_many)
    poster.start()
    time.sleep(0.3)
    # One batch is inside the sink, at most max_batches + 1 wait behind it.
    assert len(posted) <= 6
    sink.gate.set()
    poster.join(timeout=10)
    emitter.close(timeout=5)
    assert posted == list(range(50))
    assert sink.seen == list(range(50))


def test_a_sink_failure_is_raised_to_the_next_poster_once() -> None:
    sink = GatedSink()
    sink.fail_next = OSError("writer broke")
    emitter = EmitThread(sink)
    emitter.post([_chunk(0)])
    deadline = time.monotonic() + 5
    while sink.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    with pytest.raises(OSError, match="writer broke"):
        emitter.post([_chunk(1)])  # queued all the same
    emitter.post([_chunk(2)])
    emitter.close(timeout=5)
    assert sink.seen == [1, 2]


def test_a_final_event_made_later_settles_the_stream_for_the_outbox() -> None:
    """At shutdown the outbox ends the streams still owing a final event; one whose final
    event is queued as text work owes nothing, and gets no second one."""
    sink = ListSink()
    outbox = StreamOutbox(sink, on_thread=True)
    outbox.track(cast(StreamRequest, SimpleNamespace(stream_id="s")))
    final = ("stream.event", StreamCompleted(stream_id="s", finish_reason="length"))
    outbox.emit([TextWork(lambda out: out.append(final), ends="s")])
    outbox.end_unfinished({})
    outbox.close(timeout=5)
    assert sink.seen == [final]


def test_what_is_emitted_after_the_outbox_closed_still_reaches_the_sink() -> None:
    sink = ListSink()
    outbox = StreamOutbox(sink, on_thread=True)
    first = _chunk(1)
    outbox.emit([first])
    outbox.close(timeout=5)
    late = ("stream.event", StreamCompleted(stream_id="s", finish_reason="cancelled"))
    outbox.emit([late])  # a stream started after the stop, ended at once
    assert sink.seen == [first, late]
