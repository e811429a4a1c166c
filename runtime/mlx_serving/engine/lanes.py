"""Where each admitted stream runs: its model's batch, or alone with a draft model.

Batches are kept by model identity, not model id: a reloaded model's batch can open while
the batch of the model it replaced still ends its streams. A batch closes when its model
is retired and its last stream is gone; one that failed is discarded unclosed (its state is
unknown) and the model's next stream opens a fresh one. The lockstep is told of every
change to a batch (lockstep.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import mlx.core as mx

from ..config import SchedulerConfig
from .batch_lane import BatchLane
from .loader import LoadedModel
from .lockstep import Lockstep
from .speculative_lane import SpeculativeLane
from .stream import StreamRequest


@dataclass
class ModelLane:
    model: LoadedModel
    lane: BatchLane


class Lanes:
    """The engine thread's. It changes the batches under `_lock`, which
    `prompt_cache_stats` (any thread) reads them under."""

    def __init__(self, lockstep: Lockstep, settings: SchedulerConfig) -> None:
        self._lockstep = lockstep
        self._settings = settings
        self._lock = threading.Lock()
        self._batches: dict[int, ModelLane] = {}  # id(model) -> its batch
        self._speculative: dict[str, SpeculativeLane] = {}  # stream_id -> its lane

    def admit(self, request: StreamRequest) -> int:
        """Start a stream in its lane (a batch opens if need be); returns the prompt tokens
        that came from the prompt cache."""
        if request.draft is not None:
            lane = SpeculativeLane(request, request.draft.model, request.num_draft_tokens)
            self._speculative[request.stream_id] = lane
            return 0
        model = request.model
        entry = self._batches.get(id(model))
        if entry is None:
            entry = ModelLane(model, self._lockstep.open_lane(model, self._settings))
            with self._lock:
                self._batches[id(model)] = entry
        cached = entry.lane.admit(request, set(model.tokenizer.eos_token_ids))
        self._lockstep.admitted(request, cached)
        return cached

    def remove(self, request: StreamRequest) -> None:
        """Take a stream out of its lane before its end (its batch keeps its cache)."""
        if self._speculative.pop(request.stream_id, None) is not None:
            return
        entry = self._batches.get(id(request.model))
        if entry is not None:
            entry.lane.remove(request.stream_id)
            self._lockstep.removed(request.model.model_id, request.stream_id)

    def close(self, model: LoadedModel) -> bool:
        """Close a model's batch; False while it still has streams."""
        entry = self._batches.get(id(model))
        if entry is None:
            return True
        if len(entry.lane):
            return False
        with self._lock:
            del self._batches[id(model)]
        entry.lane.close()
        # The batch's KV caches and the prompt cache go back to the system now, not at the
        # next allocation.
        mx.clear_cache()
        self._lockstep.closed(model.model_id)
        return True

    def discard(self, model: LoadedModel) -> list[str]:
        """Forget a failed batch; the ids of the streams it held."""
        with self._lock:
            entry = self._batches.pop(id(model), None)
        return entry.lane.stream_ids() if entry is not None else []

    def clear(self) -> None:
        with self._lock:
            self._batches.clear()
        self._speculative.clear()

    def busy(self) -> list[ModelLane]:
        """The batches with streams, in the order they opened (the order they step)."""
        return [entry for entry in self._batches.values() if len(entry.lane)]

    def holds(self, entry: ModelLane) -> bool:
        return self._batches.get(id(entry.model)) is entry

    def models(self) -> list[LoadedModel]:
        return [entry.model for entry in self._batches.values()]

    def speculative(self) -> list[tuple[str, SpeculativeLane]]:
        return list(self._speculative.items())

    def prompt_cache_stats(self) -> dict[str, dict[str, float]]:
        with self._lock:
            entries = list(self._batches.values())
        return {entry.model.model_id: entry.lane.prompt_cache.stats() for entry in entries}
