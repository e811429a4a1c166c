"""A vision request lives through its model being unloaded or replaced the way a text
request does: refused while it is prepared, ended with an error once acknowledged, never
run on a model the registry no longer holds.

These drive the Engine in-process with a collecting sink, so that the unload can be placed
exactly: while the request's images are processed, or between its acknowledgement and its
start.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytest.importorskip("mlx_vlm", reason="the vision tests need the `vision` extra (mlx-vlm)")

from tests.vision.images import data_uri, noise_png  # noqa: E402

from mlx_serving.config import Settings  # noqa: E402
from mlx_serving.engine.engine import Engine  # noqa: E402
from mlx_serving.engine.vision import engine as vision_engine  # noqa: E402
from mlx_serving.protocol.errors import ModelNotLoaded, RpcError  # noqa: E402
from mlx_serving.protocol.methods import (  # noqa: E402
    GenerateParams,
    GenerateWithImageParams,
    LoadModelParams,
)


class CollectingSink:
    def __init__(self) -> None:
        self.frames: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()

    def emit(self, notifications: list[tuple[str, msgspec.Struct]]) -> None:
        for name, params in notifications:
            self.frames.put((name, msgspec.to_builtins(params)))

    def until_final(self, stream_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The stream's frames up to and including its final event."""
        frames = []
        while True:
            name, params = self.frames.get(timeout=60)
            if params.get("stream_id") == stream_id:
                frames.append((name, params))
                if name == "stream.event":
                    return frames


@pytest.fixture
def engine(vision_dir: Path) -> Iterator[tuple[Engine, CollectingSink]]:
    sink = CollectingSink()
    engine = Engine(Settings(), sink)
    engine.vision.load(LoadModelParams(model_id="vlm", local_path=str(vision_dir)))
    try:
        yield engine, sink
    finally:
        engine.shutdown()


def request() -> GenerateWithImageParams:
    return GenerateWithImageParams(
        model_id="vlm", prompt="Describe.", image=data_uri(noise_png()), max_tokens=8
    )


def test_unloaded_while_its_images_are_processed(
    engine: tuple[Engine, CollectingSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, _ = engine
    processed, unloaded = threading.Event(), threading.Event()
    prepare = vision_engine.prepare_vision_inputs

    def slow_prepare(*args: Any, **kwargs: Any) -> Any:
        inputs = prepare(*args, **kwargs)
        processed.set()
        assert unloaded.wait(30)
        return inputs

    monkeypatch.setattr(vision_engine, "prepare_vision_inputs", slow_prepare)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(runtime.prepare_stream(request()))
        except RpcError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert processed.wait(30)
    runtime.unload("vlm")
    unloaded.set()
    thread.join(30)
    # The same error as a text request to a model that is not loaded, and no stream id.
    with pytest.raises(ModelNotLoaded) as text_error:
        runtime.prepare_stream(GenerateParams(model_id="vlm", prompt="x"))
    assert isinstance(outcome[0], ModelNotLoaded), outcome
    assert outcome[0].message == text_error.value.message
    assert runtime.scheduler.active_count == 0


@pytest.mark.parametrize("change", ["unloaded", "replaced"])
def test_acknowledged_then_its_model_goes(
    engine: tuple[Engine, CollectingSink], vision_dir: Path, change: str
) -> None:
    runtime, sink = engine
    prepared = runtime.prepare_stream(request())  # the client now has its stream id
    if change == "unloaded":
        runtime.unload("vlm")
    else:
        runtime.vision.load(LoadModelParams(model_id="vlm", local_path=str(vision_dir)))
    runtime.start(prepared)
    frames = sink.until_final(prepared.stream_id)
    assert [name for name, _ in frames] == ["stream.stats", "stream.event"], frames
    event = frames[-1][1]
    assert event["event"] == "error" and change in event["error"], event
    assert runtime.scheduler.active_count == 0
