"""What the config says about load_model before the engine sees it: security, the default
context length and the bound on resident models."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import msgspec

from ..config import Settings
from ..engine.model_paths import check_trust_remote_code, confine_model_path
from ..protocol.errors import ModelLoadError
from ..protocol.methods import LoadModelParams


class LoadPolicy:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loading: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def admit(
        self, params: LoadModelParams, loaded_ids: Iterable[str]
    ) -> Iterator[LoadModelParams]:
        """The params to load with (the model's real path when roots confine it), holding a
        slot of `models.max_loaded_models` while the load runs."""
        security = self._settings.security
        check_trust_remote_code(params.trust_remote_code, security)
        real = confine_model_path(params.model_id, params.local_path, params.revision, security)
        if real is not None:
            # The loader reads the path that was checked, not one a symlink swap could move.
            params = msgspec.structs.replace(params, local_path=str(real))
        default_context = self._settings.models.default_context_length
        if params.context_length is None and default_context is not None:
            params = msgspec.structs.replace(params, context_length=default_context)
        with self._slot(params.model_id, loaded_ids):
            yield params

    @contextmanager
    def _slot(self, model_id: str, loaded_ids: Iterable[str]) -> Iterator[None]:
        limit = self._settings.models.max_loaded_models
        with self._lock:
            resident = set(loaded_ids) | set(self._loading)
            if limit is not None and model_id not in resident and len(resident) >= limit:
                raise ModelLoadError(
                    f"this runtime holds at most {limit} models (models.max_loaded_models) "
                    f"and {len(resident)} are loaded or loading; unload one first",
                    model_id=model_id,
                )
            self._loading[model_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._loading[model_id] -= 1
                if not self._loading[model_id]:
                    del self._loading[model_id]
