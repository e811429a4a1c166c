"""A model that is replaced or unloaded ends its streams, never strands another's, and
lets go of its memory without waiting for the next request.

These drive the Engine in-process with a collecting sink, so the race can be placed
exactly: a stream prepared on a model, the model reloaded, and the stream started after
the new model already has a stream of its own.
"""

from __future__ import annotations

import gc
import queue
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mlx_serving.config import SchedulerConfig, Settings
from mlx_serving.engine.engine import Engine
from mlx_serving.protocol.methods import GenerateParams, LoadModelParams


class CollectingSink:
    def __init__(self) -> None:
        self.frames: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def emit(self, notifications: list[tuple[str, msgspec.Struct]]) -> None:
        for name, params in notifications:
            self.frames.put((name, msgspec.to_builtins(params)))

    def final_event(self, stream_id: str, timeout: float = 30) -> dict[str, Any]:
        for name, params in self.seen:
            if name == "stream.event" and params["stream_id"] == stream_id:
                return params
        deadline = time.monotonic() + timeout
        while True:
            name, params = self.frames.get(timeout=max(deadline - time.monotonic(), 0.01))
            self.seen.append((name, params))
            if name == "stream.event" and params["stream_id"] == stream_id:
                return params

    def wait_chunks(self, stream_id: str, count: int) -> None:
        seen = sum(1 for n, p in self.seen if n == "stream.chunk" and p["stream_id"] == stream_id)
        while seen < count:
            name, params = self.frames.get(timeout=30)
            self.seen.append((name, params))
            seen += name == "stream.chunk" and params["stream_id"] == stream_id


@pytest.fixture
def engine() -> Iterator[tuple[Engine, CollectingSink]]:
    sink = CollectingSink()
    engine = Engine(Settings(scheduler=SchedulerConfig(prompt_cache_dir="")), sink)
    try:
        yield engine, sink
    finally:
        engine.shutdown()


def _params(max_tokens: int) -> GenerateParams:
    return GenerateParams(model_id="m", prompt="hello", max_tokens=max_tokens, temperature=0)


def test_a_stream_started_after_its_model_was_replaced_strands_no_other(
    engine: tuple[Engine, CollectingSink], llama_dir: Path
) -> None:
    runtime, sink = engine
    runtime.load(LoadModelParams(model_id="m", local_path=str(llama_dir)))
    # Prepared (and acknowledged) on the first model, started late, as a guided request
    # whose schema took a while to compile would be.
    late = runtime.prepare_stream(_params(20))
    runtime.load(LoadModelParams(model_id="m", local_path=str(llama_dir)))
    current = runtime.prepare_stream(_params(200))
    runtime.start(current)
    sink.wait_chunks(current.stream_id, 3)
    runtime.start(late)

    assert "replaced" in sink.final_event(late.stream_id)["error"]
    assert sink.final_event(current.stream_id)["event"] == "completed"
    assert runtime.scheduler.active_count == 0


def test_a_stream_started_after_its_model_was_unloaded_fails(
    engine: tuple[Engine, CollectingSink], llama_dir: Path
) -> None:
    runtime, sink = engine
    runtime.load(LoadModelParams(model_id="m", local_path=str(llama_dir)))
    late = runtime.prepare_stream(_params(20))
    runtime.unload("m")
    runtime.start(late)
    assert "unloaded" in sink.final_event(late.stream_id)["error"]
    assert runtime.scheduler.active_count == 0
    assert runtime.scheduler.prompt_cache_stats() == {}


def test_unloading_an_idle_model_lets_go_of_it_at_once(
    engine: tuple[Engine, CollectingSink], llama_dir: Path
) -> None:
    runtime, sink = engine
    runtime.load(LoadModelParams(model_id="m", local_path=str(llama_dir)))
    stream = runtime.prepare_stream(_params(5))
    runtime.start(stream)
    assert sink.final_event(stream.stream_id)["finish_reason"] == "length"
    weights = weakref.ref(runtime.models.get("m").model)
    del stream
    runtime.unload("m")
    deadline = time.monotonic() + 5
    while runtime.scheduler.prompt_cache_stats() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runtime.scheduler.prompt_cache_stats() == {}  # no later request woke the engine
    gc.collect()
    assert weights() is None
