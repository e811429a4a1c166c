"""The models resident in this runtime, addressed by model_id."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from ..protocol.errors import ModelNotLoaded
from .loader import LoadedModel

# Told once per model the registry lets go of, with the reason its streams end.
RetireListener = Callable[[LoadedModel, str], None]


class ModelRegistry:
    """Thread-safe map model_id → LoadedModel. Loads run outside the lock, so a slow load
    never blocks lookups of the models already resident.

    The one place a model's life ends: `put` over an existing id and `remove` mark the old
    model retired and tell every listener (the schedulers end its streams), whichever
    engine (text, vision, distributed) loaded it."""

    def __init__(self) -> None:
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._listeners: list[RetireListener] = []

    def on_retire(self, listener: RetireListener) -> None:
        self._listeners.append(listener)

    def get(self, model_id: str) -> LoadedModel:
        with self._lock:
            loaded = self._models.get(model_id)
        if loaded is None:
            raise ModelNotLoaded(f"model '{model_id}' is not loaded", model_id=model_id)
        return loaded

    def put(self, loaded: LoadedModel) -> LoadedModel | None:
        with self._lock:
            previous = self._models.get(loaded.model_id)
            self._models[loaded.model_id] = loaded
        if previous is not None:
            self._retire(previous, f"model '{loaded.model_id}' was replaced")
        return previous

    def remove(self, model_id: str, reason: str | None = None) -> LoadedModel | None:
        """`reason`: what the model's streams are told (default: it was unloaded)."""
        with self._lock:
            previous = self._models.pop(model_id, None)
        if previous is not None:
            self._retire(previous, reason or f"model '{model_id}' was unloaded")
        return previous

    def _retire(self, model: LoadedModel, reason: str) -> None:
        model.retirement.reason = reason
        for listener in self._listeners:
            listener(model, reason)

    def __iter__(self) -> Iterator[LoadedModel]:
        with self._lock:
            return iter(list(self._models.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)
