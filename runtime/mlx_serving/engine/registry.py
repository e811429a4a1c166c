"""The models resident in this runtime, addressed by model_id."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ..protocol.errors import ModelNotLoaded
from .loader import LoadedModel


class ModelRegistry:
    """Thread-safe map model_id → LoadedModel. Loads run outside the lock, so a slow load
    never blocks lookups of the models already resident."""

    def __init__(self) -> None:
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

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
        return previous

    def remove(self, model_id: str) -> LoadedModel | None:
        with self._lock:
            return self._models.pop(model_id, None)

    def __iter__(self) -> Iterator[LoadedModel]:
        with self._lock:
            return iter(list(self._models.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)
