"""A request's `tools` and `tool_choice`, checked once: every error names its field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema

from ...protocol.errors import InvalidParams
from ...protocol.methods import GenerateParams, NamedToolChoice

# What a function without `parameters` takes: nothing, so a forced call's arguments are {}.
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

_MAX_REASON_CHARS = 2000


@dataclass(frozen=True)
class ToolSet:
    # OpenAI function definitions as dicts, as chat templates and mlx-lm's parsers read them.
    definitions: list[dict[str, Any]]
    # Function name → the JSON Schema of its arguments object, in the request's order.
    schemas: dict[str, dict[str, Any]]
    # The functions a forced call may name (tool_choice "required": all; a named choice:
    # that one); empty when the model decides ("auto").
    forced: tuple[str, ...] = ()


def tool_set(params: GenerateParams) -> ToolSet | None:
    """The request's tools, or None where the model is offered none (no tools, or
    tool_choice "none": the tools are then not rendered and no call is parsed). Which
    requests may carry tools is engine/refusals.py's to decide."""
    choice = params.tool_choice
    if not params.tools or choice == "none":
        return None
    schemas: dict[str, dict[str, Any]] = {}
    definitions: list[dict[str, Any]] = []
    for index, tool in enumerate(params.tools):
        function = tool.function
        field = f"tools[{index}].function"
        if function.name in schemas:
            raise InvalidParams(f"{field}.name", f"duplicate function name '{function.name}'")
        schema = _arguments_schema(function.parameters, f"{field}.parameters")
        schemas[function.name] = schema
        described: dict[str, Any] = {"name": function.name}
        if function.description is not None:
            described["description"] = function.description
        described["parameters"] = schema
        definitions.append({"type": "function", "function": described})
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in schemas:
            raise InvalidParams("tool_choice.function.name", f"no tool is named '{name}'")
        return ToolSet(definitions, schemas, (name,))
    if choice == "required":
        return ToolSet(definitions, schemas, tuple(schemas))
    return ToolSet(definitions, schemas)


def _arguments_schema(parameters: dict[str, Any] | None, field: str) -> dict[str, Any]:
    if parameters is None:
        return NO_ARGUMENTS
    if parameters.get("type", "object") != "object":
        # A call's arguments are a JSON object (OpenAI's `arguments` is its text).
        raise InvalidParams(field, 'must describe an object ("type": "object")')
    validator_class = jsonschema.validators.validator_for(parameters)
    try:
        validator_class.check_schema(parameters)
    except jsonschema.SchemaError as exc:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        reason = f"invalid JSON Schema: {exc.message}"[:_MAX_REASON_CHARS]
        raise InvalidParams(f"{field}{path}", reason) from exc
    return parameters
