"""Chat messages → the prompt's tokens, through the model's chat template.

Tool calls in the history and the request's tools take the shape the model's tool format
expects (formats.py): a template that renders tools gets them as Hugging Face templates
read them (`tools=`, assistant `tool_calls` with arguments as objects, `tool` messages);
for any other template they become text in the format the system prompt asks for.
"""

from __future__ import annotations

import json
from typing import Any

from ...protocol.errors import InvalidParams
from ...protocol.methods import ChatMessage, TextPart
from ..loader import LoadedModel
from .formats import ToolFormat
from .tools import ToolSet


def render_chat(
    loaded: LoadedModel, messages: list[ChatMessage], fmt: ToolFormat, tools: ToolSet | None
) -> list[int]:
    tokenizer = loaded.tokenizer
    if getattr(tokenizer, "chat_template", None) is None:
        raise InvalidParams("messages", f"model '{loaded.model_id}' has no chat template")
    rendered = _history(messages, fmt)
    if tools is None or fmt.native:
        text = _apply(tokenizer, rendered, tools.definitions if tools else None)
    else:
        text = _apply_with_tools_prompt(tokenizer, rendered, _tools_prompt(tools, fmt))
    tokens: list[int] = tokenizer.encode(text, add_special_tokens=False)
    return tokens


def _apply(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None) -> str:
    # `tools` only where there are some: custom renderers (mlx_lm.chat_templates) may not
    # take the argument.
    extra = {"tools": tools} if tools else {}
    try:
        text: str = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **extra
        )
    except Exception as exc:
        raise InvalidParams("messages", f"chat template failed: {exc}") from exc
    return text


def _apply_with_tools_prompt(
    tokenizer: Any, messages: list[dict[str, Any]], tools_prompt: str
) -> str:
    """The tools' description in the system message; where the template refuses a system
    role (gemma's does), ahead of the first message instead."""
    first = messages[0] if messages else None
    if first is not None and first["role"] in ("system", "developer"):
        first = {**first, "content": f"{first['content']}\n\n{tools_prompt}"}
        return _apply(tokenizer, [first, *messages[1:]])
    try:
        return _apply(tokenizer, [{"role": "system", "content": tools_prompt}, *messages])
    except InvalidParams:
        if first is None:
            raise
        first = {**first, "content": f"{tools_prompt}\n\n{first['content']}"}
        return _apply(tokenizer, [first, *messages[1:]])


def _tools_prompt(tools: ToolSet, fmt: ToolFormat) -> str:
    # The wording of Qwen2.5's template, whose tool-call syntax JSON_FORMAT is.
    signatures = "\n".join(json.dumps(d, ensure_ascii=False) for d in tools.definitions)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{signatures}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        f"within {fmt.start}{fmt.end} XML tags:\n"
        f'{fmt.start}\n{{"name": <function-name>, "arguments": <args-json-object>}}\n{fmt.end}'
    )


def _history(messages: list[ChatMessage], fmt: ToolFormat) -> list[dict[str, Any]]:
    rendered: list[dict[str, Any]] = []
    # Call id → function name, for tool messages (some templates print the name).
    called: dict[str, str] = {}
    for index, message in enumerate(messages):
        field = f"messages[{index}]"
        content = _text(message, field)
        if message.tool_calls and message.role != "assistant":
            raise InvalidParams(f"{field}.tool_calls", "only assistant messages carry tool calls")
        if message.tool_calls:
            calls: list[dict[str, Any]] = []
            for call_index, call in enumerate(message.tool_calls):
                arguments = _arguments(
                    call.function.arguments,
                    f"{field}.tool_calls[{call_index}].function.arguments",
                )
                called[call.id] = call.function.name
                calls.append(
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": arguments},
                    }
                )
            if fmt.native:
                rendered.append({"role": "assistant", "content": content, "tool_calls": calls})
            else:
                text = "\n".join(_written_call(fmt, c["function"]) for c in calls)
                content = f"{content}\n{text}" if content else text
                rendered.append({"role": "assistant", "content": content})
        elif message.role == "tool":
            if fmt.native:
                entry = {"role": "tool", "content": content}
                if message.tool_call_id is not None:
                    entry["tool_call_id"] = message.tool_call_id
                    if message.tool_call_id in called:
                        entry["name"] = called[message.tool_call_id]
                rendered.append(entry)
            else:
                # Templates without tool support know no `tool` role (some refuse it).
                text = f"<tool_response>\n{content}\n</tool_response>"
                rendered.append({"role": "user", "content": text})
        else:
            rendered.append({"role": message.role, "content": content})
    return rendered


def _text(message: ChatMessage, field: str) -> str:
    content = message.content
    if content is None:
        if message.role == "assistant" and message.tool_calls:
            return ""
        raise InvalidParams(f"{field}.content", "required (null only beside tool_calls)", "missing")
    if isinstance(content, str):
        return content
    parts = []
    for part_index, part in enumerate(content):
        if not isinstance(part, TextPart):
            raise InvalidParams(f"{field}.content[{part_index}]", "image parts need a vision model")
        parts.append(part.text)
    return "".join(parts)


def _arguments(text: str, field: str) -> dict[str, Any]:
    # Templates print arguments as objects (`| tojson`), as mlx_lm.server hands them over.
    try:
        arguments = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise InvalidParams(field, f"not JSON text: {exc}") from exc
    if not isinstance(arguments, dict):
        raise InvalidParams(field, "must be the JSON text of an object")
    return arguments


def _written_call(fmt: ToolFormat, function: dict[str, Any]) -> str:
    body = json.dumps(
        {"name": function["name"], "arguments": function["arguments"]}, ensure_ascii=False
    )
    return f"{fmt.start}\n{body}\n{fmt.end}"
