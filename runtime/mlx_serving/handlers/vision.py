"""load_vision_model (generate_with_image is generate's handler, see generate.py).

Both need mlx-vlm (the `vision` extra). Without it they are still answered, with an error
naming the extra, but not advertised in runtime/info's capabilities."""

from __future__ import annotations

from ..dispatch import Method
from ..engine.vision import vision_installed
from ..protocol.errors import NotAvailable
from ..protocol.methods import LoadModelParams, LoadVisionModelResult
from .context import RuntimeContext
from .model_loads import ModelLoads

VISION_METHODS = ("load_vision_model", "generate_with_image")


def unadvertised_vision_methods() -> tuple[str, ...]:
    return () if vision_installed() else VISION_METHODS


def vision_methods(context: RuntimeContext, loads: ModelLoads) -> dict[str, Method]:
    def load_vision_model(params: LoadModelParams) -> LoadVisionModelResult:
        try:
            result = loads.load(params, "vision")
        except NotAvailable:
            # Installed but not importable: stop advertising what cannot be served.
            context.capabilities[:] = [
                name for name in context.capabilities if name not in VISION_METHODS
            ]
            raise
        assert isinstance(result, LoadVisionModelResult)
        return result

    return {"load_vision_model": Method(LoadModelParams, load_vision_model)}
