"""Splitting a stream's text into text, reasoning and tool calls, fed a few characters at a
time as a detokenizer releases them."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from mlx_lm.tool_parsers import mistral

from mlx_serving.engine.chat.formats import JSON_FORMAT, ToolFormat
from mlx_serving.engine.chat.response import (
    ResponseCall,
    ResponsePart,
    ResponseText,
    chat_output,
)


def thinking_tokenizer(prompt_opens_reasoning: bool = False) -> Any:
    # Token ids stand in for the prompt: 1 is <think>, 2 is </think>.
    def rfind(token: int) -> Any:
        return lambda tokens: max((i for i, t in enumerate(tokens) if t == token), default=-1)

    return SimpleNamespace(
        has_thinking=True,
        think_start="<think>",
        think_end="</think>",
        rfind_think_start=rfind(1),
        rfind_think_end=rfind(2),
    )


PLAIN = SimpleNamespace(has_thinking=False)


def split(
    pieces: list[str],
    *,
    tokenizer: Any = PLAIN,
    prompt: list[int] | None = None,
    fmt: ToolFormat | None = JSON_FORMAT,
    reasoning: bool = False,
) -> list[ResponsePart]:
    output = chat_output(
        tokenizer, prompt or [], tool_format=fmt, tools=None, separate_reasoning=reasoning
    )
    assert output is not None
    splitter = output.splitter()
    parts: list[ResponsePart] = []
    for piece in pieces:
        parts += splitter.feed(piece)
    return parts + splitter.finish()


def text_of(parts: list[ResponsePart], reasoning: bool = False) -> str:
    return "".join(
        p.text for p in parts if isinstance(p, ResponseText) and p.reasoning == reasoning
    )


def calls_of(parts: list[ResponsePart]) -> list[tuple[int, str, dict[str, Any]]]:
    return [
        (p.index, p.name, json.loads(p.arguments)) for p in parts if isinstance(p, ResponseCall)
    ]


def pieces_of(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


CALLS = (
    'Checking.\n<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
    '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>\n'
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(CALLS)])
def test_calls_are_found_however_the_text_is_cut(size: int) -> None:
    parts = split(pieces_of(CALLS, size))
    assert calls_of(parts) == [(0, "a", {"x": 1}), (1, "b", {})]
    # Blank text around calls is no answer; the markup never comes out as text.
    assert text_of(parts) == "Checking."


def test_a_call_is_sent_as_soon_as_its_end_marker_arrives() -> None:
    output = chat_output(PLAIN, [], tool_format=JSON_FORMAT, tools=None, separate_reasoning=False)
    assert output is not None
    splitter = output.splitter()
    assert splitter.feed('<tool_call>{"name": "a", "arguments": {}}') == []
    [call] = splitter.feed("</tool_call>")
    assert isinstance(call, ResponseCall) and call.name == "a"
    assert call.id.startswith("call_")


def test_text_that_only_looks_like_a_marker_is_released() -> None:
    parts = split(["a <tool", "_cal", "l is not <b>"])
    assert text_of(parts) == "a <tool_cal" + "l is not <b>"
    assert calls_of(parts) == []


def test_text_without_calls_keeps_its_blanks() -> None:
    assert text_of(split(["one\n\n", "two ", "\n"])) == "one\n\ntwo \n"


def test_a_call_that_does_not_parse_comes_as_the_text_written() -> None:
    parts = split(["So: <tool_call>not json</tool_call> ok"])
    assert calls_of(parts) == []
    assert text_of(parts) == "So: <tool_call>not json</tool_call> ok"


def test_a_call_cut_short_by_the_end_of_the_stream_comes_as_text() -> None:
    parts = split(['<tool_call>{"name": "a", "argu'])
    assert text_of(parts) == '<tool_call>{"name": "a", "argu'


def test_parameters_and_string_arguments_are_read_as_arguments() -> None:
    parts = split(
        [
            '<tool_call>{"name": "a", "parameters": {"x": 1}}</tool_call>',
            '<tool_call>{"name": "b", "arguments": "{\\"y\\": 2}"}</tool_call>',
        ]
    )
    assert calls_of(parts) == [(0, "a", {"x": 1}), (1, "b", {"y": 2})]


def test_a_format_without_an_end_marker_is_parsed_at_the_end() -> None:
    fmt = ToolFormat(
        start=mistral.tool_call_start,
        end=mistral.tool_call_end,
        parse=mistral.parse_tool_call,
        json_body=False,
        native=True,
    )
    parts = split(['[TOOL_CALLS][{"name": "a", "arguments": {"q": "z"}}]'], fmt=fmt)
    assert calls_of(parts) == [(0, "a", {"q": "z"})]


def test_reasoning_is_split_from_the_answer() -> None:
    parts = split(
        pieces_of("<think>hmm</think>\n\nYes.", 2),
        tokenizer=thinking_tokenizer(),
        fmt=None,
        reasoning=True,
    )
    assert text_of(parts, reasoning=True) == "hmm"
    assert text_of(parts) == "\n\nYes."


def test_a_prompt_that_opened_the_reasoning_starts_in_it() -> None:
    parts = split(
        ["so ", "four</think>4"],
        tokenizer=thinking_tokenizer(),
        prompt=[5, 1, 9],
        fmt=None,
        reasoning=True,
    )
    assert (text_of(parts, reasoning=True), text_of(parts)) == ("so four", "4")
    # A closed reasoning earlier in the prompt (an earlier turn) does not count.
    parts = split(["4"], tokenizer=thinking_tokenizer(), prompt=[1, 2], fmt=None, reasoning=True)
    assert text_of(parts) == "4"


def test_a_call_may_follow_the_reasoning_directly() -> None:
    text = '<think>call it</think><tool_call>{"name": "a", "arguments": {}}</tool_call>'
    parts = split([text], tokenizer=thinking_tokenizer(), reasoning=True)
    assert text_of(parts, reasoning=True) == "call it"
    assert calls_of(parts) == [(0, "a", {})]


def test_nothing_to_split_gives_no_output_split() -> None:
    assert chat_output(PLAIN, [], tool_format=None, tools=None, separate_reasoning=True) is None
    tokenizer = thinking_tokenizer()
    assert (
        chat_output(tokenizer, [], tool_format=None, tools=None, separate_reasoning=False) is None
    )
