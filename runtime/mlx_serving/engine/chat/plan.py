"""What a chat request asks beyond its messages — tools, tool_choice, reasoning — decided
once per request: how the prompt is rendered, which grammar (if any) forces a call, and how
the output is split."""

from __future__ import annotations

from dataclasses import dataclass

from ...protocol.methods import ChatMessage, GenerateParams
from ..loader import LoadedModel
from .formats import JSON_FORMAT, ToolFormat, model_format
from .grammar import forced_call_grammar
from .messages import render_chat
from .response import ChatOutput, chat_output
from .tools import ToolSet


@dataclass(frozen=True)
class ChatPlan:
    loaded: LoadedModel
    tools: ToolSet | None
    # The model's tool format: how tools and past calls are rendered.
    model_format: ToolFormat
    separate_reasoning: bool

    @property
    def output_format(self) -> ToolFormat | None:
        """The format calls are parsed in: the model's, or for a forced call whose syntax
        the grammar cannot spell, JSON_FORMAT (the grammar then writes that)."""
        if self.tools is None:
            return None
        if self.tools.forced and not self.model_format.json_body:
            return JSON_FORMAT
        return self.model_format

    def prompt_tokens(self, messages: list[ChatMessage]) -> list[int]:
        return render_chat(self.loaded, messages, self.model_format, self.tools)

    def forced_call(self) -> tuple[str, str] | None:
        """The grammar forcing a call and the request field its errors name, or None."""
        tools = self.tools
        fmt = self.output_format
        if tools is None or fmt is None or not tools.forced:
            return None
        grammar = forced_call_grammar(fmt, tools, self.loaded.tokenizer)
        if len(tools.forced) == 1:
            index = list(tools.schemas).index(tools.forced[0])
            return grammar, f"tools[{index}].function.parameters"
        return grammar, "tools"

    def output(self, prompt_tokens: list[int]) -> ChatOutput | None:
        return chat_output(
            self.loaded.tokenizer,
            prompt_tokens,
            tool_format=self.output_format,
            tools=self.tools.definitions if self.tools else None,
            separate_reasoning=self.separate_reasoning,
        )


def plan_chat(params: GenerateParams, loaded: LoadedModel, tools: ToolSet | None) -> ChatPlan:
    """The plan of a request engine/refusals.py let through (a forced call comes without
    guidance or a draft model), with its checked `tools` (chat/tools.py)."""
    return ChatPlan(
        loaded=loaded,
        tools=tools,
        model_format=model_format(loaded.tokenizer),
        separate_reasoning=params.reasoning == "separate",
    )
