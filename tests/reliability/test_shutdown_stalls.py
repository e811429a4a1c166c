"""Shutdown never waits on a slow step or on a client that does not read.

A prefill step on a slow machine can outlast the scheduler's stop timeout; every stream
must still get its final event. A client that stopped reading stdout must not keep the
runtime alive after SIGTERM and stdin EOF.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
from tests.reliability.stdio import send, start_runtime

from mlx_serving.config import SchedulerConfig, Settings
from mlx_serving.engine.batch_lane import BatchLane, LaneToken
from mlx_serving.engine.engine import Engine
from mlx_serving.engine.lockstep import SingleProcess
from mlx_serving.protocol.methods import GenerateParams, LoadModelParams


class RecordingSink:
    def __init__(self) -> None:
        self.frames: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def emit(self, notifications: list[tuple[str, msgspec.Struct]]) -> None:
        with self.lock:
            self.frames += [(n, msgspec.to_builtins(p)) for n, p in notifications]

    def of(self, stream_id: str) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return [(n, p) for n, p in self.frames if p["stream_id"] == stream_id]


class LongPrefill(SingleProcess):
    """Stands in for a prefill chunk that takes longer than stop()'s timeout."""

    def __init__(self) -> None:
        self.in_step = threading.Event()
        self.release = threading.Event()

    def prefill(self, lane: BatchLane, prefill_tokens: int) -> list[LaneToken]:
        tokens = super().prefill(lane, prefill_tokens)
        self.in_step.set()
        self.release.wait(30)
        return tokens


def test_streams_end_at_stop_while_the_engine_is_inside_a_long_step(llama_dir: Path) -> None:
    sink = RecordingSink()
    stall = LongPrefill()
    settings = Settings(scheduler=SchedulerConfig(prompt_cache_dir=""))
    engine = Engine(settings, sink, lockstep=stall)
    engine.load(LoadModelParams(model_id="m", local_path=str(llama_dir)))
    in_step, release = stall.in_step, stall.release
    params = GenerateParams(model_id="m", prompt="hello", max_tokens=100)
    streams = [engine.prepare_stream(params) for _ in range(3)]
    for stream in streams[:2]:
        engine.start(stream)
    assert in_step.wait(30)
    engine.start(streams[2])  # queued behind the step: never admitted

    started = time.monotonic()
    engine.scheduler.stop(timeout=0.5)
    assert time.monotonic() - started < 5
    for stream in streams:
        frames = sink.of(stream.stream_id)
        finals = [(p["event"], p.get("finish_reason")) for n, p in frames if n == "stream.event"]
        assert finals == [("completed", "cancelled")], frames

    # The step comes back later: nothing it produced may follow a final event.
    count = len(sink.frames)
    release.set()
    time.sleep(0.5)
    assert len(sink.frames) == count


def test_runtime_exits_on_sigterm_while_its_client_reads_nothing(llama_dir: Path) -> None:
    runtime = start_runtime(llama_dir)
    assert runtime.stdin is not None
    params = {
        "model_id": "m",
        "prompt": "x",
        "max_tokens": 4000,
        "temperature": 0,
        "include_cumulative_text": True,  # frames grow with the stream: the queue fills
        "logit_bias": {"2": -100},  # no end-of-sequence
    }
    for i in range(4):
        send(runtime.stdin, i + 1, "generate", {**params, "stream_id": f"s{i}"})
    time.sleep(4)  # the 8 MiB outbound queue is full and the engine waits on it
    started = time.monotonic()
    runtime.send_signal(signal.SIGTERM)
    runtime.stdin.close()
    try:
        code = runtime.wait(15)
    finally:
        runtime.kill()
    elapsed = time.monotonic() - started
    assert code == 0
    print(f"\n[shutdown] SIGTERM + EOF to exit with a client not reading: {elapsed:.2f} s")
