"""Tools and reasoning through the runtime process.

Two random-weight models: `llama` has a plain ChatML template (no tool support: the tools
go into the system prompt and calls are parsed in the Hermes JSON format), `tools` has a
Qwen2.5-style template that renders tools and `<tool_call>` special tokens (mlx-lm picks its
json_tools parser). Neither would ever write a call on its own: a forced tool_choice does it
through its grammar, and `auto` is driven with guidance that spells out the model's output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mlx_lm.tokenizer_utils import load as load_tokenizer

from mlx_serving.testing import make_model
from mlx_serving.testing.chat_templates import (
    THINK_TOKENS,
    THINKING_TEMPLATE,
    TOOL_TOKENS,
    TOOLS_TEMPLATE,
)
from mlx_serving.testing.client import RemoteError, RuntimeClient

WEATHER = {
    "type": "object",
    "properties": {
        # Bounded, so a random model's arguments fit the token budget.
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 8}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather forecast of a city",
            "parameters": WEATHER,
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def tools_dir(model_root: Path) -> Path:
    return make_model(
        model_root / "tools",
        "qwen2",
        seed=3,
        extra_special_tokens=TOOL_TOKENS,
        chat_template=TOOLS_TEMPLATE,
    )


@pytest.fixture(scope="module")
def thinking_dir(model_root: Path) -> Path:
    return make_model(
        model_root / "thinking",
        "llama",
        seed=4,
        extra_special_tokens=THINK_TOKENS,
        chat_template=THINKING_TEMPLATE,
    )


@pytest.fixture(scope="module")
def runtime(llama_dir: Path, tools_dir: Path, thinking_dir: Path) -> Iterator[RuntimeClient]:
    with RuntimeClient() as client:
        for model_id, path in (("llama", llama_dir), ("tools", tools_dir)):
            client.call("load_model", {"model_id": model_id, "local_path": str(path)})
        client.call("load_model", {"model_id": "thinking", "local_path": str(thinking_dir)})
        yield client


def generate(runtime: RuntimeClient, model_id: str, **params: Any) -> dict[str, Any]:
    request = {"model_id": model_id, "max_tokens": 96, "temperature": 0.8, "seed": 7}
    return runtime.generate({**request, **params})


def named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


# -- forced calls ------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", ["llama", "tools"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_named_tool_choice_gives_a_call_matching_the_schema(
    runtime: RuntimeClient, model_id: str, seed: int
) -> None:
    result = generate(
        runtime,
        model_id,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice=named("get_weather"),
        seed=seed,
    )
    assert result["event"]["finish_reason"] == "tool_calls", result["event"]
    [call] = result["tool_calls"]
    assert call["name"] == "get_weather"
    assert call["index"] == 0
    assert call["id"].startswith("call_")
    jsonschema.validate(json.loads(call["arguments"]), WEATHER)
    # The call's markup never reaches the text.
    assert result["text"] == ""
    assert result["stats"]["guidance_valid"] is True


def test_required_calls_one_of_the_tools(runtime: RuntimeClient) -> None:
    names = set()
    for seed in range(4):
        result = generate(
            runtime, "tools", messages=QUESTION, tools=TOOLS, tool_choice="required", seed=seed
        )
        assert result["event"]["finish_reason"] == "tool_calls"
        [call] = result["tool_calls"]
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
        names.add(call["name"])
    assert names <= set(SCHEMAS)


def test_a_function_without_parameters_is_called_with_an_empty_object(
    runtime: RuntimeClient,
) -> None:
    tools = [{"type": "function", "function": {"name": "ping"}}]
    result = generate(runtime, "llama", messages=QUESTION, tools=tools, tool_choice=named("ping"))
    [call] = result["tool_calls"]
    assert (call["name"], json.loads(call["arguments"])) == ("ping", {})


# -- the prompt --------------------------------------------------------------------------


def prompt_tokens(runtime: RuntimeClient, model_id: str, **params: Any) -> int:
    result = generate(runtime, model_id, messages=QUESTION, max_tokens=1, **params)
    count: int = result["stats"]["prompt_tokens"]
    return count


@pytest.mark.parametrize("model_id", ["llama", "tools"])
def test_tools_are_rendered_into_the_prompt(runtime: RuntimeClient, model_id: str) -> None:
    plain = prompt_tokens(runtime, model_id)
    with_tools = prompt_tokens(runtime, model_id, tools=TOOLS)
    assert with_tools > plain + 50  # both signatures are in there
    # tool_choice "none": the model is offered no tools.
    assert prompt_tokens(runtime, model_id, tools=TOOLS, tool_choice="none") == plain


def test_a_template_with_tool_support_renders_them_itself(
    runtime: RuntimeClient, tools_dir: Path
) -> None:
    tokenizer = load_tokenizer(tools_dir)
    expected = tokenizer.apply_chat_template(QUESTION, tools=TOOLS, add_generation_prompt=True)
    assert prompt_tokens(runtime, "tools", tools=TOOLS) == len(expected)


def test_a_call_and_its_result_round_trip(runtime: RuntimeClient, tools_dir: Path) -> None:
    first = generate(
        runtime, "tools", messages=QUESTION, tools=TOOLS, tool_choice=named("get_weather")
    )
    [call] = first["tool_calls"]
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": '{"forecast": "sunny"}'},
    ]
    answer = "It will be sunny."
    second = generate(
        runtime,
        "tools",
        messages=history,
        tools=TOOLS,
        guidance={"mode": "regex", "pattern": answer.replace(".", r"\.")},
    )
    assert second["text"] == answer
    assert second["tool_calls"] == []
    assert second["event"]["finish_reason"] == "stop"
    # The history reached the template as it expects it: arguments as an object, the
    # result in a tool message.
    tokenizer = load_tokenizer(tools_dir)
    rendered = json.loads(json.dumps(history))
    rendered[1]["tool_calls"][0]["function"]["arguments"] = json.loads(call["arguments"])
    expected = tokenizer.apply_chat_template(rendered, tools=TOOLS, add_generation_prompt=True)
    assert second["stats"]["prompt_tokens"] == len(expected)
    text = tokenizer.decode(expected)
    assert f'"name": "get_weather", "arguments": {call["arguments"]}' in text
    assert '<tool_response>\n{"forecast": "sunny"}\n</tool_response>' in text


def test_a_template_without_tool_support_gets_the_history_as_text(
    runtime: RuntimeClient,
) -> None:
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_1", "function": {"name": "get_time", "arguments": '{"zone": "CET"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
    ]
    result = generate(runtime, "llama", messages=history, tools=TOOLS, max_tokens=1)
    assert result["event"]["event"] == "completed"
    assert result["stats"]["prompt_tokens"] > prompt_tokens(runtime, "llama", tools=TOOLS)


# -- calls the model writes on its own (auto) -----------------------------------------------


def test_calls_are_parsed_from_the_stream_with_the_model_parser(runtime: RuntimeClient) -> None:
    # The tools model's <tool_call> markers are special tokens; the grammar writes them
    # as those tokens (Lark `<tool_call>`), the way a real model does.
    body = '"\\n{\\"name\\": \\"get_time\\", \\"arguments\\": {\\"zone\\": \\"UTC\\"}}\\n"'
    grammar = (
        f'start: "Let me check." <tool_call> {body} </tool_call> "\\n" '
        f"<tool_call> {body.replace('UTC', 'CET')} </tool_call>"
    )
    result = generate(
        runtime,
        "tools",
        messages=QUESTION,
        tools=TOOLS,
        guidance={"mode": "grammar", "grammar": grammar},
    )
    assert result["text"] == "Let me check."
    calls = result["tool_calls"]
    assert [(c["index"], c["name"], json.loads(c["arguments"])) for c in calls] == [
        (0, "get_time", {"zone": "UTC"}),
        (1, "get_time", {"zone": "CET"}),
    ]
    assert len({c["id"] for c in calls}) == 2
    assert result["event"]["finish_reason"] == "tool_calls"
    assert all("tool_call" not in c["token"] for c in result["chunks"])


def test_a_model_without_tool_support_answers_in_the_prompted_format(
    runtime: RuntimeClient,
) -> None:
    # Plain text markers, split over several ordinary tokens: held back until complete.
    pattern = (
        r'Sure\.\n<tool_call>\n\{"name": "get_weather", '
        r'"arguments": \{"city": "Oslo", "days": 2\}\}\n</tool_call>'
    )
    result = generate(
        runtime,
        "llama",
        messages=QUESTION,
        tools=TOOLS,
        guidance={"mode": "regex", "pattern": pattern},
    )
    assert result["text"] == "Sure."
    [call] = result["tool_calls"]
    assert json.loads(call["arguments"]) == {"city": "Oslo", "days": 2}
    assert result["event"]["finish_reason"] == "tool_calls"


def test_without_tools_the_same_text_is_plain_text(runtime: RuntimeClient) -> None:
    pattern = r'<tool_call>\n\{"name": "x", "arguments": \{\}\}\n</tool_call>'
    result = generate(
        runtime, "llama", messages=QUESTION, guidance={"mode": "regex", "pattern": pattern}
    )
    assert result["text"].startswith("<tool_call>")
    assert result["tool_calls"] == []
    assert result["event"]["finish_reason"] == "stop"


def test_a_cut_short_call_ends_with_length_and_comes_as_text(runtime: RuntimeClient) -> None:
    pattern = r'<tool_call>\n\{"name": "get_time", "arguments": \{"zone": "abcdefgh"\}\}'
    result = generate(
        runtime,
        "llama",
        messages=QUESTION,
        tools=TOOLS,
        max_tokens=16,
        guidance={"mode": "regex", "pattern": pattern},
    )
    assert result["event"]["finish_reason"] == "length"
    assert result["tool_calls"] == []
    # Markup and all: the client sees what the model wrote.
    assert result["text"].startswith("<tool_call>\n{")


# -- reasoning -----------------------------------------------------------------------------


def thinking(runtime: RuntimeClient, **params: Any) -> dict[str, Any]:
    # The template opened <think> in the prompt: the model's output begins in reasoning.
    grammar = 'start: "Two and two." </think> "\\n\\nFour."'
    return generate(
        runtime,
        "thinking",
        messages=[{"role": "user", "content": "2+2?"}],
        guidance={"mode": "grammar", "grammar": grammar},
        **params,
    )


def test_reasoning_comes_apart_when_asked(runtime: RuntimeClient) -> None:
    result = thinking(runtime, reasoning="separate")
    assert result["reasoning"] == "Two and two."
    assert result["text"] == "\n\nFour."
    assert all(c["reasoning"] is True for c in result["chunks"] if "reasoning" in c)
    assert result["event"]["finish_reason"] == "stop"


def test_reasoning_stays_inline_by_default(runtime: RuntimeClient) -> None:
    result = thinking(runtime)
    assert result["text"] == "Two and two.</think>\n\nFour."
    assert not any("reasoning" in c for c in result["chunks"])


def test_reasoning_the_model_opens_itself(runtime: RuntimeClient) -> None:
    result = generate(
        runtime,
        "thinking",
        prompt="Q: 2+2?\nA:",
        reasoning="separate",
        guidance={"mode": "grammar", "grammar": 'start: "So" <think> "hmm" </think> " 4"'},
    )
    assert (result["text"], result["reasoning"]) == ("So 4", "hmm")


# -- refused requests ----------------------------------------------------------------------


def tool(name: str, parameters: Any = None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tools": [tool("a", {"type": "array"})]}, "tools[0].function.parameters"),
        (
            {"tools": [tool("a", {"type": "object", "properties": {"x": {"type": "nope"}}})]},
            "tools[0].function.parameters.properties.x.type",
        ),
        ({"tools": [tool("a"), tool("a")]}, "tools[1].function.name"),
        ({"tools": [tool("has space")]}, "tools[0].function.name"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"tools": [tool("a")], "tool_choice": named("b")}, "tool_choice.function.name"),
        ({"tools": [tool("a")], "tool_choice": "always"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {
                "tools": [tool("a")],
                "tool_choice": "required",
                "guidance": {"mode": "regex", "pattern": "x"},
            },
            "tool_choice",
        ),
        ({"reasoning": "hidden"}, "reasoning"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "a", "arguments": "{"}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "x",
                        "tool_calls": [{"function": {"name": "a", "arguments": "{}"}}],
                    }
                ]
            },
            "messages[0].tool_calls",
        ),
    ],
)
def test_bad_tool_requests_are_refused_naming_the_field(
    runtime: RuntimeClient, params: dict[str, Any], field: str
) -> None:
    request = {"model_id": "llama", "messages": QUESTION, **params}
    with pytest.raises(RemoteError) as raised:
        runtime.call("generate", request)
    error = raised.value.error
    assert error["code"] == -32602, error
    assert error["data"]["field"] == field, error


def test_tools_need_messages(runtime: RuntimeClient) -> None:
    with pytest.raises(RemoteError) as raised:
        runtime.call("generate", {"model_id": "llama", "prompt": "x", "tools": [tool("a")]})
    assert raised.value.error["data"]["field"] == "tools"


def test_capabilities_list_tools(runtime: RuntimeClient) -> None:
    capabilities = runtime.call("runtime/info")["capabilities"]
    assert "tools" in capabilities and "reasoning" in capabilities
