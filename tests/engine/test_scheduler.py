"""The scheduler's races, aimed at with fakes: batches that hand out a token per step and
can hold the engine thread inside a step or inside admission, a detokenizer that spells
token ids, and the real model registry telling the scheduler which models it let go of.

Each test pauses the engine thread where a request thread could meet it (admitting, in a
step) and lands the cancel, the reload or the unload there."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from types import SimpleNamespace
from typing import cast

import mlx.core as mx
import pytest
from tests.engine.fakes import WAIT_S, Sink, fake_model, fake_request

from mlx_serving.config import SchedulerConfig
from mlx_serving.engine.batch_lane import BatchLane, LaneToken
from mlx_serving.engine.between_steps import EngineAbandoned, EngineStopped
from mlx_serving.engine.loader import LoadedModel
from mlx_serving.engine.lockstep import SingleProcess
from mlx_serving.engine.registry import ModelRegistry
from mlx_serving.engine.scheduler import Scheduler
from mlx_serving.engine.stream import StreamRequest

LOGPROBS = mx.zeros((16,))
LONG = 1_000_000  # max_tokens of a stream that runs until it is ended


class FakeLane:
    """A batch that gives each of its streams token 7 per decode, until max_tokens."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.counts: dict[str, list[int]] = {}  # stream_id -> [generated, max_tokens]
        self.admitted: list[str] = []
        self.removed: list[str] = []
        self.closed = False
        self.fail_decode: Exception | None = None
        self.last_prefill_tokens = 0
        self.prefilling = False  # admitted streams decode at once
        self.prompt_cache = SimpleNamespace(stats=lambda: {"entries": 0.0})

    def __len__(self) -> int:
        return len(self.counts)

    def admit(self, request: StreamRequest, eos_token_ids: set[int]) -> int:
        self.counts[request.stream_id] = [0, request.max_tokens]
        self.admitted.append(request.stream_id)
        return 0

    def remove(self, stream_id: str) -> None:
        self.counts.pop(stream_id, None)
        self.removed.append(stream_id)

    def decode(self) -> list[LaneToken]:
        if self.fail_decode is not None:
            raise self.fail_decode
        time.sleep(0.001)  # a step takes time: the sink is not flooded
        tokens = []
        for stream_id, counts in list(self.counts.items()):
            counts[0] += 1
            done = "length" if counts[0] >= counts[1] else None
            if done:
                del self.counts[stream_id]
            tokens.append(LaneToken(stream_id, 7, LOGPROBS, done))
        return tokens

    def prefill(self, prefill_tokens: int) -> list[LaneToken]:
        return []

    def prefill_budget(self) -> int:
        return 16

    def stream_ids(self) -> list[str]:
        return list(self.counts)

    def close(self) -> None:
        self.closed = True


class Steps(SingleProcess):
    """The scheduler's lockstep: records every hook, hands out FakeLanes, and holds the
    engine thread in a decode or in opening a batch while told to."""

    def __init__(self) -> None:
        self.lanes: list[FakeLane] = []
        self.calls: list[tuple[str, ...]] = []
        self.gate = threading.Condition()
        self.pausing = False  # under gate: the next decode waits until it is cleared
        self.paused = False  # under gate: a decode waits now
        self.open_lanes = threading.Event()
        self.open_lanes.set()
        self.opening = threading.Event()
        self.abandoned = False

    def open_lane(self, model: LoadedModel, settings: SchedulerConfig) -> BatchLane:
        self.opening.set()
        assert self.open_lanes.wait(WAIT_S)
        lane = FakeLane(model)
        self.lanes.append(lane)
        self.calls.append(("open", model.model_id))
        return cast(BatchLane, lane)

    def admitted(self, request: StreamRequest, cached_tokens: int) -> None:
        self.calls.append(("admitted", request.stream_id))

    def removed(self, model_id: str, stream_id: str) -> None:
        self.calls.append(("removed", stream_id))

    def closed(self, model_id: str) -> None:
        self.calls.append(("closed", model_id))

    def decode(self, lane: BatchLane) -> list[LaneToken]:
        with self.gate:
            if self.pausing:
                self.paused = True
                self.gate.notify_all()
                assert self.gate.wait_for(lambda: not self.pausing, WAIT_S)
                self.paused = False
        if self.abandoned:
            raise EngineAbandoned
        return lane.decode()

    def stopped(self) -> None:
        self.calls.append(("stopped",))

    def lanes_of(self, model: LoadedModel) -> list[FakeLane]:
        return [lane for lane in self.lanes if lane.model is model]


class Rig:
    def __init__(self) -> None:
        self.steps = Steps()
        self.sink = Sink()
        self.scheduler = Scheduler(
            self.sink, 16, SchedulerConfig(prompt_cache_dir=""), lockstep=self.steps
        )
        self.models = ModelRegistry()
        self.models.on_retire(self.scheduler.fail_model)

    def load(self, model_id: str = "m") -> LoadedModel:
        model = fake_model(model_id)
        self.models.put(model)  # a model it replaces is retired, as in the runtime
        return model

    def prepare(self, model: LoadedModel, stream_id: str, max_tokens: int = 3) -> StreamRequest:
        self.scheduler.reserve(stream_id)
        return fake_request(model, stream_id, max_tokens)

    def run(self, model: LoadedModel, stream_id: str, max_tokens: int = 3) -> StreamRequest:
        request = self.prepare(model, stream_id, max_tokens)
        self.scheduler.start(request)
        return request

    def pause_in_step(self) -> None:
        """Hold the engine thread inside its next decode (a stream must be decoding)."""
        with self.steps.gate:
            self.steps.pausing = True
            assert self.steps.gate.wait_for(lambda: self.steps.paused, WAIT_S)

    def resume(self) -> None:
        with self.steps.gate:
            self.steps.pausing = False
            self.steps.gate.notify_all()


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    rig.scheduler.start_engine_thread()
    yield rig
    rig.resume()
    rig.steps.open_lanes.set()
    rig.scheduler.stop(timeout=WAIT_S)


def test_the_engine_thread_starts_only_when_told() -> None:
    rig = Rig()
    model = rig.load()
    rig.run(model, "s")
    time.sleep(0.2)
    assert rig.sink.of("s") == [] and rig.steps.lanes == []
    rig.scheduler.start_engine_thread()
    try:
        assert rig.sink.ended("s") == "length"
        assert rig.sink.chunks("s") == 3
        assert rig.scheduler.active_count == 0
    finally:
        rig.scheduler.stop(timeout=WAIT_S)


def test_a_stream_prepared_on_a_model_that_is_then_reloaded_fails_cleanly(rig: Rig) -> None:
    old = rig.load()
    request = rig.prepare(old, "s")  # acknowledged to the client, not started yet
    new = rig.load()  # the same id loaded again: the registry retires `old`
    rig.scheduler.start(request)

    assert rig.sink.ended("s") == "model 'm' was replaced"
    assert rig.sink.chunks("s") == 0
    assert rig.steps.lanes_of(old) == []  # it never cost a batch
    assert rig.scheduler.active_count == 0
    rig.run(new, "t")
    assert rig.sink.ended("t") == "length"


def test_a_reload_while_streams_are_admitted_fails_each_of_them_once(rig: Rig) -> None:
    old = rig.load()
    rig.steps.open_lanes.clear()
    rig.steps.opening.clear()
    requests = [rig.prepare(old, sid, LONG) for sid in ("a", "b", "c")]
    for request in requests:
        rig.scheduler.start(request)
    # The engine thread admits "a" (it is opening the batch); "b" and "c" may wait behind
    # it, taken for admission or not yet.
    assert rig.steps.opening.wait(WAIT_S)
    new = rig.load()
    rig.steps.open_lanes.set()

    for sid in ("a", "b", "c"):
        assert rig.sink.ended(sid) == "model 'm' was replaced"
    (lane,) = rig.steps.lanes_of(old)
    assert lane.admitted == ["a"] and lane.closed  # the others never reached the batch
    assert rig.scheduler.active_count == 0
    rig.run(new, "d")
    assert rig.sink.ended("d") == "length"


def test_a_reloaded_models_batch_runs_beside_the_one_it_replaces(rig: Rig) -> None:
    old = rig.load()
    rig.run(old, "old", LONG)
    rig.sink.wait_chunks("old", 1)
    rig.pause_in_step()
    # The registry has the new model before it retires the old one: a stream on the new
    # one can be admitted in between. It gets a batch of its own.
    new = LoadedModel(**{**old.__dict__, "retirement": type(old.retirement)()})
    rig.run(new, "new", 5)
    rig.resume()
    assert rig.sink.ended("new") == "length"
    assert rig.sink.chunks("new") == 5
    assert rig.sink.of("old")[-1][0] == "stream.chunk"  # still running

    rig.models.put(new)  # now the old one is retired
    assert rig.sink.ended("old") == "model 'm' was replaced"
    (old_lane,) = rig.steps.lanes_of(old)
    assert old_lane.closed
    assert not rig.steps.lanes_of(new)[0].closed


def test_an_unload_ends_running_and_queued_streams(rig: Rig) -> None:
    model = rig.load()
    rig.run(model, "running", LONG)
    rig.sink.wait_chunks("running", 1)
    rig.pause_in_step()
    rig.run(model, "queued", LONG)  # started while the engine is inside a step
    rig.models.remove("m")
    rig.resume()
    assert rig.sink.ended("running") == "model 'm' was unloaded"
    assert rig.sink.ended("queued") == "model 'm' was unloaded"
    (lane,) = rig.steps.lanes
    assert lane.admitted == ["running"] and lane.closed
    assert ("closed", "m") in rig.steps.calls


def test_a_cancel_before_admission_costs_no_batch(rig: Rig) -> None:
    model = rig.load()
    rig.run(model, "running", LONG)
    rig.sink.wait_chunks("running", 1)
    rig.pause_in_step()
    rig.run(model, "queued", LONG)
    assert rig.scheduler.cancel("queued")
    rig.resume()
    assert rig.sink.ended("queued") == "cancelled"
    assert rig.sink.chunks("queued") == 0
    assert "queued" not in rig.steps.lanes[0].admitted
    assert rig.scheduler.cancel("running")
    assert rig.sink.ended("running") == "cancelled"
    assert rig.steps.lanes[0].removed == ["running"]
    assert ("removed", "running") in rig.steps.calls


def test_a_cancel_while_the_batch_opens_ends_that_stream_after_admission(rig: Rig) -> None:
    model = rig.load()
    rig.steps.open_lanes.clear()
    rig.steps.opening.clear()
    rig.run(model, "s", LONG)
    assert rig.steps.opening.wait(WAIT_S)
    assert rig.scheduler.cancel("s")
    rig.steps.open_lanes.set()
    assert rig.sink.ended("s") == "cancelled"
    assert rig.steps.lanes[0].removed == ["s"]


def test_a_failure_outranks_a_cancel(rig: Rig) -> None:
    model = rig.load()
    rig.run(model, "s", LONG)
    rig.sink.wait_chunks("s", 1)
    rig.pause_in_step()
    assert rig.scheduler.cancel("s")
    rig.models.remove("m", "evicted to make room")
    assert rig.scheduler.cancel("s")  # a second cancel changes nothing
    rig.resume()
    assert rig.sink.ended("s") == "evicted to make room"


def test_a_cancel_of_an_ended_stream_is_refused(rig: Rig) -> None:
    model = rig.load()
    rig.run(model, "s")
    rig.sink.final("s")
    assert not rig.scheduler.cancel("s")
    assert not rig.scheduler.cancel("never-started")


def test_a_failed_batch_fails_its_streams_and_the_next_stream_gets_a_fresh_one(
    rig: Rig,
) -> None:
    model = rig.load()
    rig.run(model, "a", LONG)
    rig.run(model, "b", LONG)
    rig.sink.wait_chunks("b", 1)
    rig.pause_in_step()
    rig.steps.lanes[0].fail_decode = RuntimeError("boom")
    rig.resume()
    for sid in ("a", "b"):
        assert rig.sink.ended(sid) == "generation failed: RuntimeError: boom"
    rig.run(model, "c")
    assert rig.sink.ended("c") == "length"
    assert len(rig.steps.lanes) == 2


def test_stop_cancels_every_stream_and_later_starts_end_at_once(rig: Rig) -> None:
    model = rig.load()
    rig.run(model, "a", LONG)
    rig.run(model, "b", LONG)
    rig.sink.wait_chunks("b", 1)
    rig.scheduler.stop(timeout=WAIT_S)
    for sid in ("a", "b"):
        assert rig.sink.ended(sid) == "cancelled"
    assert rig.steps.calls[-2:] == [("closed", "m"), ("stopped",)]
    rig.run(model, "late")
    assert rig.sink.ended("late") == "cancelled"
    with pytest.raises(EngineStopped, match="shutting down"):
        rig.scheduler.run_between_steps(lambda: None)


def test_streams_taken_over_while_the_engine_thread_is_stuck_in_a_step(rig: Rig) -> None:
    """What a distributed runtime's watchdog does when a collective hangs: another thread
    ends everything for good; the engine thread leaves when it comes back."""
    model = rig.load()
    rig.run(model, "s", LONG)
    rig.sink.wait_chunks("s", 1)
    rig.pause_in_step()
    rig.run(model, "queued", LONG)
    waiting: Future[None] = Future()
    threading.Thread(target=lambda: _run_between_steps(rig.scheduler, waiting)).start()
    time.sleep(0.1)  # the work is queued behind the stuck step

    rig.scheduler.end_everything("distributed group failed: gone", for_good=True)
    assert rig.sink.ended("s") == "distributed group failed: gone"
    assert rig.sink.ended("queued") == "distributed group failed: gone"
    with pytest.raises(EngineStopped, match="gone"):
        waiting.result(WAIT_S)
    rig.run(model, "late")
    assert rig.sink.ended("late") == "distributed group failed: gone"
    with pytest.raises(EngineStopped, match="gone"):
        rig.scheduler.run_between_steps(lambda: None)
    assert rig.scheduler.active_count == 0

    frames = len(rig.sink.frames)
    rig.steps.abandoned = True
    rig.resume()
    time.sleep(0.2)
    assert len(rig.sink.frames) == frames  # nothing follows a final event


def _run_between_steps(scheduler: Scheduler, done: Future[None]) -> None:
    try:
        done.set_result(scheduler.run_between_steps(lambda: None))
    except Exception as exc:
        done.set_exception(exc)


def test_the_lockstep_hears_each_batch_change_in_order(rig: Rig) -> None:
    old = rig.load()
    rig.run(old, "a")
    rig.sink.final("a")
    rig.run(old, "b", LONG)
    rig.sink.wait_chunks("b", 1)
    assert rig.scheduler.cancel("b")
    rig.sink.final("b")
    rig.load()  # retires `old`: its empty batch closes
    deadline = time.monotonic() + WAIT_S
    while ("closed", "m") not in rig.steps.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    # A stream that ended in its batch is removed all the same: followers' batches
    # forget it as rank 0's did, whichever way it ended.
    assert rig.steps.calls == [
        ("open", "m"),
        ("admitted", "a"),
        ("removed", "a"),
        ("admitted", "b"),
        ("removed", "b"),
        ("closed", "m"),
    ]


def test_streams_started_out_of_order_are_admitted_in_the_order_they_arrived(
    rig: Rig,
) -> None:
    model = rig.load()
    rig.run(model, "busy", LONG)
    rig.pause_in_step()
    # Prepared on a pool, the later request of two read together can start first.
    first = rig.prepare(model, "first")
    second = rig.prepare(model, "second")
    assert first.arrival < second.arrival
    rig.scheduler.start(second)
    rig.scheduler.start(first)
    rig.resume()
    assert rig.sink.ended("first") == "length" and rig.sink.ended("second") == "length"
    (lane,) = rig.steps.lanes
    assert lane.admitted == ["busy", "first", "second"]
    rig.scheduler.cancel("busy")
