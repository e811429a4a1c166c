"""Thin per-area handlers; `build_methods` assembles the one method table."""

from __future__ import annotations

from ..dispatch import Method
from ..engine.chat import CAPABILITIES as CHAT_CAPABILITIES
from ..engine.guidance import CAPABILITIES as GUIDANCE_CAPABILITIES
from .context import RuntimeContext
from .download import download_methods
from .embed import embed_methods, unadvertised_embed_methods
from .generate import generate_methods
from .model_loads import ModelLoads
from .models import model_methods
from .runtime import NOT_YET_SERVED, runtime_methods
from .tokenize import tokenize_methods
from .vision import unadvertised_vision_methods, vision_methods


def build_methods(context: RuntimeContext) -> dict[str, Method]:
    methods: dict[str, Method] = {}
    loads = ModelLoads(context)  # one load path for text, vision and embedding models
    groups = (
        runtime_methods,
        lambda context: model_methods(context, loads),
        download_methods,
        tokenize_methods,
        generate_methods,
        lambda context: vision_methods(context, loads),
        lambda context: embed_methods(context, loads),
    )
    for group in groups:
        methods.update(group(context))
    served = set(methods) - set(NOT_YET_SERVED) - set(unadvertised_vision_methods())
    served -= set(unadvertised_embed_methods(context))
    features = set(GUIDANCE_CAPABILITIES) | set(CHAT_CAPABILITIES)
    context.capabilities[:] = sorted(served | features)
    return methods


__all__ = ["RuntimeContext", "build_methods"]
