"""How a model writes a tool call: the markers around a call and the parser of its body.

A tokenizer that mlx-lm loaded with a tool parser (named in tokenizer_config.json or
inferred from the chat template, mlx_lm.tokenizer_utils) has the model's own format: its
template renders the tools and the model was trained to answer in that syntax. Any other
model gets `JSON_FORMAT`: the tools go into the system prompt with an instruction to answer
in the Hermes syntax (`<tool_call>{"name": …, "arguments": …}</tool_call>`), the one most
small instruct models have seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlx_lm.tool_parsers import json_tools

# (body text, tools as the template saw them) → one call {name, arguments} or a list.
ToolParser = Callable[[str, list[dict[str, Any]] | None], Any]


@dataclass(frozen=True)
class ToolFormat:
    start: str
    # "" where a call runs to the end of the output (mistral's [TOOL_CALLS]).
    end: str
    parse: ToolParser
    # The body between the markers is `{"name": …, "arguments": …}` on lines of its own,
    # which a forced call's grammar can spell (grammar.py); other syntaxes are forced in
    # JSON_FORMAT instead.
    json_body: bool
    # The model's chat template renders the tools (else they go into the system prompt).
    native: bool


JSON_FORMAT = ToolFormat(
    start=json_tools.tool_call_start,
    end=json_tools.tool_call_end,
    parse=json_tools.parse_tool_call,
    json_body=True,
    native=False,
)


def model_format(tokenizer: Any) -> ToolFormat:
    """The model's own tool-call format where mlx-lm knows one, else JSON_FORMAT."""
    parser = getattr(tokenizer, "tool_parser", None)
    if not getattr(tokenizer, "has_tool_calling", False) or parser is None:
        return JSON_FORMAT
    return ToolFormat(
        start=tokenizer.tool_call_start,
        end=tokenizer.tool_call_end or "",
        parse=parser,
        json_body=parser.__module__ == json_tools.__name__,
        native=True,
    )
