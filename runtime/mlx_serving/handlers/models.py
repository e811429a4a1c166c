"""load_model, unload_model."""

from __future__ import annotations

from ..dispatch import Method
from ..protocol.methods import LoadModelParams, LoadModelResult, Success, UnloadModelParams
from .context import RuntimeContext
from .load_policy import LoadPolicy


def model_methods(context: RuntimeContext) -> dict[str, Method]:
    engine = context.engine
    policy = LoadPolicy(context.settings)

    def load_model(params: LoadModelParams) -> LoadModelResult:
        with policy.admit(params, (m.model_id for m in engine.models)) as admitted:
            return engine.load(admitted)

    def unload_model(params: UnloadModelParams) -> Success:
        engine.unload(params.model_id)
        return Success()

    return {
        "load_model": Method(LoadModelParams, load_model),
        "unload_model": Method(UnloadModelParams, unload_model),
    }
