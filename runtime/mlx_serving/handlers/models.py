"""load_model, unload_model."""

from __future__ import annotations

from ..dispatch import Method
from ..protocol.methods import LoadModelParams, LoadModelResult, Success, UnloadModelParams
from .context import RuntimeContext


def model_methods(context: RuntimeContext) -> dict[str, Method]:
    engine = context.engine

    def load_model(params: LoadModelParams) -> LoadModelResult:
        return engine.load(params)

    def unload_model(params: UnloadModelParams) -> Success:
        engine.unload(params.model_id)
        return Success()

    return {
        "load_model": Method(LoadModelParams, load_model),
        "unload_model": Method(UnloadModelParams, unload_model),
    }
