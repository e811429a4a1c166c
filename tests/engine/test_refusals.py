"""The table of option combinations generate refuses: which row answers a request, and in
which order the rows are asked (the first that applies is the client's -32602)."""

from __future__ import annotations

from typing import Any

import pytest

from mlx_serving.engine.memory import ModelKind
from mlx_serving.engine.refusals import REFUSALS, Ask, Stage, first_refusal, refuse
from mlx_serving.protocol.errors import InvalidParams
from mlx_serving.protocol.methods import (
    ChatMessage,
    FunctionDefinition,
    GenerateParams,
    GenerateWithImageParams,
    NamedToolChoice,
    RegexGuidance,
    ToolChoiceFunction,
    ToolDefinition,
)

MESSAGES = [ChatMessage(role="user", content="hi")]
TOOLS = [ToolDefinition(function=FunctionDefinition(name="f"))]
NAMED = NamedToolChoice(function=ToolChoiceFunction(name="f"))
GUIDANCE = RegexGuidance(pattern="a+")


def _refused(
    model: ModelKind = "text", distributed: bool = False, with_image: bool = False, **fields: Any
) -> tuple[str, str] | None:
    """The first refusal, stage by stage as prepare_stream asks."""
    kind = GenerateWithImageParams if with_image else GenerateParams
    params = kind(model_id="m", **fields)
    stages: tuple[Stage, ...] = ("runtime", "request", "model")
    for stage in stages:
        ask = Ask(params, distributed, model if stage == "model" else None)
        refusal = first_refusal(ask, stage)
        if refusal is not None:
            return refusal.field, refusal.reason.format(model_id="m")
    return None


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": "hi"},
        {"messages": MESSAGES, "tools": TOOLS},
        {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "required"},
        {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "none", "guidance": GUIDANCE},
        {"messages": MESSAGES, "tools": TOOLS, "draft_model": "d"},
        {"prompt": "hi", "guidance": GUIDANCE},
        {"prompt": "hi", "tool_choice": "auto"},
    ],
)
def test_what_a_text_model_serves(fields: dict[str, Any]) -> None:
    assert _refused(**fields) is None


def test_each_refusal_and_its_wording() -> None:
    assert _refused(distributed=True, prompt="x", draft_model="d") == (
        "draft_model",
        "speculative decoding is not available in a distributed runtime",
    )
    assert _refused(distributed=True, prompt="x", guidance=GUIDANCE) == (
        "guidance",
        "structured output is not available in a distributed runtime",
    )
    # Forced as the distributed check always read it: tools and a call asked for.
    assert _refused(distributed=True, prompt="x", tools=TOOLS, tool_choice=NAMED) == (
        "tool_choice",
        "a forced tool call is not available in a distributed runtime",
    )
    assert _refused(prompt="x", guidance=GUIDANCE, draft_model="d") == (
        "draft_model",
        "cannot be combined with guidance (structured output)",
    )
    assert _refused("embedding", prompt="x") == (
        "model_id",
        "'m' is an embedding model: it serves embed only",
    )
    assert _refused(prompt="x", tool_choice="required") == ("tool_choice", "needs tools")
    assert _refused(prompt="x", tools=TOOLS) == (
        "tools",
        "tools need messages (a chat); prompt is raw text",
    )
    forced = {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "required"}
    assert _refused(**forced, guidance=GUIDANCE) == (
        "tool_choice",
        "a forced call cannot be combined with guidance",
    )
    assert _refused(**forced, draft_model="d") == (
        "draft_model",
        "cannot be combined with a forced tool_choice",
    )
    on_generate = (
        "generate takes images only as image parts of messages; send image/images with "
        "generate_with_image"
    )
    assert _refused(prompt="x", image="AAAA") == ("image", on_generate)
    assert _refused(prompt="x", images=["AAAA"]) == ("images", on_generate)
    assert _refused(with_image=True, prompt="x", image="AAAA") == (
        "model_id",
        "model 'm' is a text model; load a vision model with load_vision_model",
    )
    assert _refused("vision", prompt="x", guidance=GUIDANCE) == (
        "guidance",
        "structured output is not supported for vision yet",
    )
    assert _refused("vision", messages=MESSAGES, tools=TOOLS) == (
        "tools",
        "tool calling is not supported for vision models yet",
    )
    assert _refused("vision", prompt="x", draft_model="d") == (
        "draft_model",
        "speculative decoding is not supported for vision",
    )
    assert _refused("vision", with_image=True, prompt="x", image="AAAA") is None


def test_the_first_row_that_applies_answers() -> None:
    everything = {
        "messages": MESSAGES,
        "tools": TOOLS,
        "tool_choice": "required",
        "guidance": GUIDANCE,
        "draft_model": "d",
        "images": ["AAAA"],
    }
    assert _refused("vision", distributed=True, **everything) == (
        "draft_model",
        "speculative decoding is not available in a distributed runtime",
    )
    assert _refused("vision", **everything) == (
        "draft_model",
        "cannot be combined with guidance (structured output)",
    )
    assert _refused("embedding", messages=MESSAGES, tools=TOOLS, tool_choice="required") == (
        "model_id",
        "'m' is an embedding model: it serves embed only",
    )
    assert _refused("vision", messages=MESSAGES, tools=TOOLS, guidance=GUIDANCE) == (
        "guidance",
        "structured output is not supported for vision yet",
    )
    assert len({(r.field, r.reason) for r in REFUSALS}) == len(REFUSALS)


def test_tools_are_checked_after_the_rows_that_refuse_them_outright() -> None:
    """A forced call of an unknown function: the tools' own error, as before the table
    existed, not the guidance conflict that comes after it."""
    missing = NamedToolChoice(function=ToolChoiceFunction(name="g"))
    params = GenerateParams(
        model_id="m", messages=MESSAGES, tools=TOOLS, tool_choice=missing, guidance=GUIDANCE
    )
    with pytest.raises(InvalidParams) as raised:
        refuse(Ask(params, False, "text"), "model")
    assert raised.value.field == "tool_choice.function.name"
    # Outright refusals come first, without the tools checked.
    assert _refused(prompt="x", tools=TOOLS, tool_choice=missing) == (
        "tools",
        "tools need messages (a chat); prompt is raw text",
    )
