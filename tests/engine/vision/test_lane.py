"""The vision lane's races, aimed at with fakes: mlx-vlm's generation loop is replaced by
iterators that can hold the lane thread inside a step, and the stream ids and verdicts are
the real `PendingStreams` the text scheduler shares with the lane.

One stream per model at a time, in arrival order; models take turns; a cancel or a
retirement lands on a waiting or a running stream, or before the stream starts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from tests.engine.fakes import WAIT_S, Sink, fake_model, fake_request

from mlx_serving.engine.loader import LoadedModel
from mlx_serving.engine.pending_streams import PendingStreams
from mlx_serving.engine.stream import StreamRequest
from mlx_serving.engine.vision import lane as vision_lane
from mlx_serving.engine.vision.inputs import VisionInputs
from mlx_serving.engine.vision.lane import VisionLane


class FakeResults:
    """What `mlx_vlm.stream_generate` yields: token 9 `tokens` times, then the closing
    result. While `hold` is clear, the lane thread waits inside `next()`."""

    def __init__(self, stream_id: str, tokens: int) -> None:
        self.stream_id = stream_id
        self.left = tokens
        self.hold = threading.Event()
        self.hold.set()
        self.inside = threading.Event()
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        self.inside.set()
        assert self.hold.wait(WAIT_S)
        if self.left == 0:
            return SimpleNamespace(token=9, logprobs=None, finish_reason="length")
        self.left -= 1
        return SimpleNamespace(token=9, logprobs=None, finish_reason=None)

    def close(self) -> None:
        self.closed = True


class Rig:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sink = Sink()
        self.streams = PendingStreams(threading.Condition(), max_active=16)
        self.lane = VisionLane(self.sink, self.streams)
        self.made = threading.Condition()
        self.results: dict[str, FakeResults] = {}  # under made: when the lane starts one
        self.tokens: dict[str, int] = {}
        self.held: set[str] = set()
        self.fail_start: set[str] = set()
        monkeypatch.setattr(vision_lane, "_results", self._results)

    def _results(self, request: StreamRequest, inputs: VisionInputs) -> FakeResults:
        if request.stream_id in self.fail_start:
            raise RuntimeError("no image tower")
        results = FakeResults(request.stream_id, self.tokens.get(request.stream_id, 3))
        if request.stream_id in self.held:
            results.hold.clear()
        with self.made:
            self.results[request.stream_id] = results
            self.made.notify_all()
        return results

    def prepare(self, model: LoadedModel, stream_id: str, tokens: int = 3) -> StreamRequest:
        self.streams.reserve(stream_id)
        self.tokens[stream_id] = tokens
        return fake_request(model, stream_id, max_tokens=tokens + 1)

    def start(self, model: LoadedModel, stream_id: str, tokens: int = 3) -> StreamRequest:
        request = self.prepare(model, stream_id, tokens)
        self.lane.start(request, VisionInputs(prompt="", prompt_tokens=[1], tensors={}))
        return request

    def running(self, stream_id: str) -> FakeResults:
        """The stream's results once the lane is inside one of its steps (it was held)."""
        with self.made:
            assert self.made.wait_for(lambda: stream_id in self.results, WAIT_S)
        results = self.results[stream_id]
        assert results.inside.wait(WAIT_S)
        return results


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    rig = Rig(monkeypatch)
    yield rig
    for results in rig.results.values():
        results.hold.set()
    rig.lane.stop(timeout=WAIT_S)


def test_streams_of_one_model_run_one_at_a_time_in_arrival_order(rig: Rig) -> None:
    model = fake_model("vlm")
    for stream_id in ("a", "b", "c"):
        rig.start(model, stream_id)
    for stream_id in ("a", "b", "c"):
        assert rig.sink.ended(stream_id) == "length"
        assert rig.sink.chunks(stream_id) == 3
    order = rig.sink.order()
    finals = [order.index(("stream.event", s)) for s in ("a", "b")]
    firsts = [order.index(("stream.chunk", s)) for s in ("b", "c")]
    assert finals[0] < firsts[0] and finals[1] < firsts[1]
    assert len(rig.streams) == 0


def test_streams_of_two_models_take_turns(rig: Rig) -> None:
    one, two = fake_model("one"), fake_model("two")
    rig.held.add("a")
    rig.start(one, "a", tokens=20)
    rig.start(two, "b", tokens=20)
    rig.running("a").hold.set()
    assert rig.sink.ended("a") == "length" and rig.sink.ended("b") == "length"
    chunks = [s for name, s in rig.sink.order() if name == "stream.chunk"]
    assert chunks.index("b") < len(chunks) - 1 - chunks[::-1].index("a")  # interleaved


def test_a_cancel_before_the_start_costs_nothing(rig: Rig) -> None:
    model = fake_model("vlm")
    request = rig.prepare(model, "s")
    assert rig.streams.cancel("s")  # the client cancels before the start reaches the lane
    rig.lane.start(request, VisionInputs(prompt="", prompt_tokens=[1], tensors={}))
    assert rig.sink.ended("s") == "cancelled"
    assert "s" not in rig.results and len(rig.streams) == 0


def test_cancels_of_a_waiting_and_a_running_stream(rig: Rig) -> None:
    model = fake_model("vlm")
    rig.held.add("running")
    rig.start(model, "running", tokens=100)
    held = rig.running("running")
    rig.start(model, "waiting")
    assert rig.streams.cancel("waiting")
    assert rig.streams.cancel("running")
    held.hold.set()
    assert rig.sink.ended("waiting") == "cancelled"
    assert rig.sink.ended("running") == "cancelled"
    assert "waiting" not in rig.results  # never started
    assert held.closed  # mlx-vlm's generation context is left
    assert not rig.streams.cancel("running")


def test_a_retired_model_fails_its_streams_and_not_its_replacements(rig: Rig) -> None:
    old = fake_model("vlm")
    rig.held.add("running")
    rig.start(old, "running", tokens=100)
    held = rig.running("running")
    rig.start(old, "waiting")
    new = fake_model("vlm")  # the same id loaded again
    rig.start(new, "new")  # waits behind the old model's running stream
    old.retirement.reason = "model 'vlm' was replaced"
    rig.lane.fail_model(old, "model 'vlm' was replaced")
    held.hold.set()
    assert rig.sink.ended("running") == "model 'vlm' was replaced"
    assert rig.sink.ended("waiting") == "model 'vlm' was replaced"
    assert rig.sink.ended("new") == "length"
    assert "waiting" not in rig.results and len(rig.streams) == 0


def test_a_stream_prepared_before_its_model_was_retired_never_runs(rig: Rig) -> None:
    model = fake_model("vlm")
    request = rig.prepare(model, "s")
    model.retirement.reason = "model 'vlm' was unloaded"
    rig.lane.fail_model(model, "model 'vlm' was unloaded")  # before the start: sees nothing
    rig.lane.start(request, VisionInputs(prompt="", prompt_tokens=[1], tensors={}))
    assert rig.sink.ended("s") == "model 'vlm' was unloaded"
    assert "s" not in rig.results


def test_a_stream_that_cannot_start_fails_alone(rig: Rig) -> None:
    model = fake_model("vlm")
    rig.fail_start.add("broken")
    rig.start(model, "broken")
    rig.start(model, "fine")
    assert rig.sink.ended("broken") == "generation failed: RuntimeError: no image tower"
    assert rig.sink.ended("fine") == "length"


def test_stop_cancels_running_and_waiting_streams(rig: Rig) -> None:
    model = fake_model("vlm")
    rig.held.add("running")
    rig.start(model, "running", tokens=100)
    held = rig.running("running")
    rig.start(model, "waiting")
    stopper = threading.Thread(target=rig.lane.stop, kwargs={"timeout": WAIT_S})
    stopper.start()
    held.hold.set()
    stopper.join(WAIT_S)
    assert rig.sink.ended("running") == "cancelled"
    assert rig.sink.ended("waiting") == "cancelled"
    assert len(rig.streams) == 0
