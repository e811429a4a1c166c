"""The engine thread survives its own failures: a fault outside any one model's batch ends
the live streams with an error event, and the next request is served."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import msgspec

from mlx_serving.config import Settings
from mlx_serving.engine.engine import Engine
from mlx_serving.protocol.methods import GenerateParams, LoadModelParams


class FlakySink:
    """Collects notifications; the first `failures` emits raise, as a broken writer would."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._lock = threading.Lock()

    def emit(self, notifications: list[tuple[str, msgspec.Struct]]) -> None:
        with self._lock:
            if self.failures:
                self.failures -= 1
                raise OSError("writer broke")
        for name, params in notifications:
            self.events.put((name, msgspec.to_builtins(params)))

    def final_event(self, stream_id: str) -> dict[str, Any]:
        while True:
            name, params = self.events.get(timeout=30)
            if name == "stream.event" and params["stream_id"] == stream_id:
                return dict(params)


def test_a_failed_engine_iteration_ends_streams_and_serving_goes_on(llama_dir: Path) -> None:
    sink = FlakySink(failures=1)
    engine = Engine(Settings(), sink)
    try:
        engine.load(LoadModelParams(model_id="llama", local_path=str(llama_dir)))
        params = GenerateParams(model_id="llama", prompt="x", max_tokens=50, temperature=0)
        doomed = engine.prepare_stream(params)
        engine.start(doomed)
        ended = sink.final_event(doomed.stream_id)
        assert ended["event"] == "error"
        assert "internal error: OSError: writer broke" in ended["error"]
        assert engine.scheduler.active_count == 0

        after = engine.prepare_stream(params)
        engine.start(after)
        assert sink.final_event(after.stream_id)["finish_reason"] == "length"
    finally:
        engine.shutdown()
