"""Small fakes for the engine's concurrency tests: models with a tokenizer that spells
token ids, and a sink that waits for a stream's final event."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec

from mlx_serving.engine.loader import LoadedModel
from mlx_serving.engine.stream import StreamRequest

WAIT_S = 10


class SpellingDetokenizer:
    """Token t reads "<t>"."""

    last_segment = ""

    def reset(self) -> None:
        self.last_segment = ""

    def add_token(self, token_id: int) -> None:
        self.last_segment = f"<{token_id}>"

    def finalize(self) -> None:
        self.last_segment = ""


class FakeTokenizer:
    eos_token_ids = [0]

    @property
    def detokenizer(self) -> SpellingDetokenizer:
        return SpellingDetokenizer()


def fake_model(model_id: str = "m") -> LoadedModel:
    """A model with no weights: what runs its streams is faked too."""
    return LoadedModel(
        model_id=model_id,
        model=None,
        tokenizer=FakeTokenizer(),
        path=Path(model_id),
        config={},
        context_length=4096,
        parameter_count=0,
        dtype="float16",
        draft=False,
    )


def fake_request(model: LoadedModel, stream_id: str, max_tokens: int = 3) -> StreamRequest:
    return StreamRequest(
        stream_id=stream_id,
        model=model,
        prompt_tokens=[1, 2, 3],
        max_tokens=max_tokens,
        sampler=lambda logprobs: logprobs,
        logits_processors=[],
        stop_sequences=[],
        stop_token_ids=frozenset(),
    )


class Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[str, dict[str, Any]]] = []
        self.cond = threading.Condition()

    def emit(self, notifications: list[tuple[str, msgspec.Struct]]) -> None:
        with self.cond:
            self.frames += [(name, msgspec.to_builtins(p)) for name, p in notifications]
            self.cond.notify_all()

    def of(self, stream_id: str) -> list[tuple[str, dict[str, Any]]]:
        with self.cond:
            return [(n, p) for n, p in self.frames if p["stream_id"] == stream_id]

    def final(self, stream_id: str) -> dict[str, Any]:
        """The one final event of a stream, once it is there."""
        with self.cond:
            assert self.cond.wait_for(lambda: self._finals(stream_id), WAIT_S), stream_id
            (final,) = self._finals(stream_id)
            return final

    def ended(self, stream_id: str) -> str:
        """How a stream ended: its finish reason, or its error."""
        final = self.final(stream_id)
        return str(final.get("finish_reason") or final["error"])

    def chunks(self, stream_id: str) -> int:
        return sum(1 for name, _ in self.of(stream_id) if name == "stream.chunk")

    def wait_chunks(self, stream_id: str, count: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.chunks(stream_id) >= count, WAIT_S)

    def order(self) -> list[tuple[str, str]]:
        """(name, stream_id) of every frame so far."""
        with self.cond:
            return [(n, p["stream_id"]) for n, p in self.frames]

    def _finals(self, stream_id: str) -> list[dict[str, Any]]:
        return [p for n, p in self.frames if n == "stream.event" and p["stream_id"] == stream_id]
