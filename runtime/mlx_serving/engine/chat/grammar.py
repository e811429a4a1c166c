"""The llguidance grammar that forces one tool call (tool_choice "required" or a named
function): the format's markers around `{"name": …, "arguments": …}`, the arguments
matching the function's parameters schema, then nothing but EOS. So even a model that
would never call a tool (or a random-weight one) emits a call the parser reads.
"""

from __future__ import annotations

import json
from typing import Any

from .formats import ToolFormat
from .tools import ToolSet

# As guidance.JSON_OPTIONS: fixed separators, so a model cannot spend its budget on blanks.
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def forced_call_grammar(fmt: ToolFormat, tools: ToolSet, tokenizer: Any) -> str:
    """A Lark grammar (llguidance's dialect) for one call in `fmt`, whose body is JSON."""
    calls = [_call_schema(name, tools.schemas[name]) for name in tools.forced]
    schema: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    schema = {**schema, "x-guidance": _JSON_OPTIONS}
    start = _marker(fmt.start, tokenizer)
    end = _marker(fmt.end, tokenizer)
    return f'start: {start} "\\n" %json {json.dumps(schema)} "\\n" {end}\n'


def _call_schema(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _marker(text: str, tokenizer: Any) -> str:
    """A marker that is one token of the vocabulary (usually a special token) is forced as
    that token, the way the model writes it; quoted text would only allow spelling it out
    in ordinary tokens, which llguidance keeps apart from special ones."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) == 1:
        return f"<[{ids[0]}]>"
    return json.dumps(text)
