"""Every model load of the runtime: load_model, load_vision_model and the reloads of evicted
models that requests ask for. One load policy (security, default context length,
max_loaded_models) for all of them, the memory budget (the engine's residency), the same
progress notifications and events."""

from __future__ import annotations

import time

from ..engine.memory import ModelKind
from ..engine.memory.known import Eviction
from ..protocol.methods import LoadModelParams, LoadModelResult
from ..protocol.notifications import LoadStage, ModelLoadedEvent, RuntimeProgress
from .context import RuntimeContext
from .load_policy import LoadPolicy


class ModelLoads:
    def __init__(self, context: RuntimeContext) -> None:
        self._context = context
        self._engine = context.engine
        self._policy = LoadPolicy(context.settings)
        self._engine.residency.reload_with(self._reload)
        self._engine.residency.on_evicted(self._evicted)

    def load(self, params: LoadModelParams, kind: ModelKind) -> LoadModelResult:
        engine = self._engine
        telemetry = self._context.telemetry

        def report(stage: LoadStage, done: int, total: int) -> None:
            progress = RuntimeProgress(
                task="load",
                model_id=params.model_id,
                done=done,
                total=total,
                unit="stages",
                stage=stage,
            )
            self._context.notify([("runtime.progress", progress)])

        with self._policy.admit(params, (m.model_id for m in engine.models)) as admitted:
            replacing = self.is_loaded(params.model_id)
            started = time.perf_counter()
            result = engine.residency.load(admitted, kind, on_stage=report)
        if replacing:
            telemetry.model_unloaded(params.model_id, "replaced")
        telemetry.model_loaded(
            ModelLoadedEvent(
                timestamp=time.time(),
                model_id=result.model_id,
                load_time=time.perf_counter() - started,
                context_length=result.context_length,
                parameter_count=result.parameter_count,
                dtype=result.dtype,
                draft=result.draft,
            )
        )
        return result

    def unload(self, model_id: str) -> None:
        """unload_model: gone now, and not loaded again on demand."""
        # Checked before, so that unloading an absent model (idempotent) is no event; two
        # concurrent unloads of one model may both report it.
        was_loaded = self.is_loaded(model_id)
        self._engine.residency.forget(model_id)
        self._engine.unload(model_id)
        if was_loaded:
            self._context.telemetry.model_unloaded(model_id, "unloaded")

    def is_loaded(self, model_id: str) -> bool:
        return any(m.model_id == model_id for m in self._engine.models)

    def _reload(self, params: LoadModelParams, kind: ModelKind) -> None:
        # The remembered params passed the policy before; a load now must pass it again
        # (max_loaded_models may be reached, the allowed roots may have changed).
        self.load(params, kind)

    def _evicted(self, eviction: Eviction) -> None:
        self._context.telemetry.model_unloaded(
            eviction.model_id, eviction.reason, eviction.detail, eviction.weights
        )
