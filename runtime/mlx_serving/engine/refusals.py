"""The option combinations a generate request may not ask for, in one table.

Each row names the field the -32602 points at, why, when it applies, and the stage of
prepare_stream that checks it: `runtime` before the model the request names is touched (a
refused request never loads an evicted model again), `request` once the request is within
the limits, `model` once the model is looked up. Within a stage the first row that applies
answers. Stages and rows keep the order the checks always ran in, so a request with
several faults gets the error it always got (an unknown model with a draft and guidance:
-32602 for the combination, before -32005).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from ..protocol.errors import InvalidParams
from ..protocol.methods import GenerateParams, GenerateWithImageParams, NamedToolChoice
from .chat.tools import ToolSet, tool_set
from .encoders import LoadedEncoder
from .loader import LoadedModel
from .memory import ModelKind
from .vision import LoadedVisionModel

Stage = Literal["runtime", "request", "model"]


@dataclass(frozen=True)
class Ask:
    """What a refusal looks at."""

    params: GenerateParams
    # Every rank of a group replays the engine's steps; only sampling goes along.
    distributed: bool
    # The kind of model the request names; None before it is looked up.
    model: ModelKind | None = None

    @property
    def draft(self) -> bool:
        return self.params.draft_model is not None

    @property
    def guidance(self) -> bool:
        return self.params.guidance is not None

    @property
    def asks_for_call(self) -> bool:
        """tool_choice "required" or a named function, with tools."""
        choice = self.params.tool_choice
        return bool(self.params.tools) and (
            choice == "required" or isinstance(choice, NamedToolChoice)
        )

    @cached_property
    def tools(self) -> ToolSet | None:
        """The request's tools, their definitions checked (engine/chat/tools.py) when a row
        first asks: after the rows that refuse tools outright, before the rest."""
        return tool_set(self.params)

    @property
    def forced_call(self) -> bool:
        """A call forced with a grammar: a guidance mask too (engine/chat/grammar.py)."""
        return self.tools is not None and bool(self.tools.forced)

    @property
    def image_fields(self) -> bool:
        """The method is generate_with_image, which alone takes `image` and `images`."""
        return isinstance(self.params, GenerateWithImageParams)


@dataclass(frozen=True)
class Refusal:
    stage: Stage
    field: str
    # May name the model: "{model_id}".
    reason: str
    applies: Callable[[Ask], bool]


_IMAGES_ON_GENERATE = (
    "generate takes images only as image parts of messages; send image/images with "
    "generate_with_image"
)

REFUSALS: tuple[Refusal, ...] = (
    Refusal(
        "runtime",
        "draft_model",
        "speculative decoding is not available in a distributed runtime",
        lambda ask: ask.distributed and ask.draft,
    ),
    Refusal(
        "runtime",
        "guidance",
        "structured output is not available in a distributed runtime",
        lambda ask: ask.distributed and ask.guidance,
    ),
    Refusal(
        "runtime",
        "tool_choice",
        "a forced tool call is not available in a distributed runtime",
        lambda ask: ask.distributed and ask.asks_for_call,
    ),
    # The speculative path verifies several drafted tokens per step; a token mask would
    # need its matcher rolled back on every rejected draft.
    Refusal(
        "request",
        "draft_model",
        "cannot be combined with guidance (structured output)",
        lambda ask: ask.draft and ask.guidance,
    ),
    # Generation needs an output head; an embedding model has none.
    Refusal(
        "model",
        "model_id",
        "'{model_id}' is an embedding model: it serves embed only",
        lambda ask: ask.model == "embedding",
    ),
    Refusal(
        "model",
        "tool_choice",
        "needs tools",
        lambda ask: not ask.params.tools and ask.params.tool_choice not in (None, "auto", "none"),
    ),
    Refusal(
        "model",
        "tools",
        "tools need messages (a chat); prompt is raw text",
        lambda ask: bool(ask.params.tools) and not ask.params.messages,
    ),
    # A forced call is a token mask, as guidance is: one mask per stream, and none that
    # speculative decoding could step past. (`forced_call` first: it checks the tools.)
    Refusal(
        "model",
        "tool_choice",
        "a forced call cannot be combined with guidance",
        lambda ask: ask.forced_call and ask.guidance,
    ),
    Refusal(
        "model",
        "draft_model",
        "cannot be combined with a forced tool_choice",
        lambda ask: ask.forced_call and ask.draft,
    ),
    # Refused rather than generating as if the images had not been sent.
    Refusal(
        "model",
        "image",
        _IMAGES_ON_GENERATE,
        lambda ask: not ask.image_fields and bool(ask.params.image),
    ),
    Refusal(
        "model",
        "images",
        _IMAGES_ON_GENERATE,
        lambda ask: not ask.image_fields and bool(ask.params.images),
    ),
    Refusal(
        "model",
        "model_id",
        "model '{model_id}' is a text model; load a vision model with load_vision_model",
        lambda ask: ask.image_fields and ask.model == "text",
    ),
    Refusal(
        "model",
        "guidance",
        "structured output is not supported for vision yet",
        lambda ask: ask.model == "vision" and ask.guidance,
    ),
    Refusal(
        "model",
        "tools",
        "tool calling is not supported for vision models yet",
        lambda ask: ask.model == "vision" and bool(ask.params.tools),
    ),
    Refusal(
        "model",
        "draft_model",
        "speculative decoding is not supported for vision",
        lambda ask: ask.model == "vision" and ask.draft,
    ),
)


def refuse(ask: Ask, stage: Stage) -> None:
    """Raise the -32602 of the first row of `stage` that applies."""
    refusal = first_refusal(ask, stage)
    if refusal is not None:
        raise InvalidParams(refusal.field, refusal.reason.format(model_id=ask.params.model_id))


def first_refusal(ask: Ask, stage: Stage) -> Refusal | None:
    return next((r for r in REFUSALS if r.stage == stage and r.applies(ask)), None)


def model_kind(loaded: LoadedModel) -> ModelKind:
    if isinstance(loaded, LoadedEncoder):
        return "embedding"
    return "vision" if isinstance(loaded, LoadedVisionModel) else "text"
