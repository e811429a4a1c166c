"""Split a stream's text into ordinary text, reasoning and tool calls as it is generated.

mlx-lm's `TextStateMachine` (the one mlx_lm.server uses) follows the markers: it strips
them and holds back text that may be the start of one, so neither a marker nor a call's
body ever reaches the client as text. A call is parsed with the format's parser as soon as
its end marker arrives; a format whose calls have no end marker (mistral) is parsed when
the output ends.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from mlx_lm.generate import TextStateMachine

from .formats import ToolFormat

log = logging.getLogger(__name__)

NORMAL, REASONING, TOOL = "normal", "reasoning", "tool"


@dataclass(frozen=True)
class ResponseText:
    text: str
    reasoning: bool = False


@dataclass(frozen=True)
class ResponseCall:
    index: int
    id: str
    name: str
    # JSON text of the arguments object.
    arguments: str


ResponsePart = ResponseText | ResponseCall


@dataclass(frozen=True)
class ChatOutput:
    """How one stream's output is split: fixed when the request is prepared; each stream
    splits with its own `ResponseSplitter`."""

    machine: TextStateMachine
    initial_state: str
    tool_format: ToolFormat | None = None
    # The tools as the template saw them (some parsers read the parameter types).
    tools: list[dict[str, Any]] | None = None

    def splitter(self) -> ResponseSplitter:
        return ResponseSplitter(self)


def chat_output(
    tokenizer: Any,
    prompt_tokens: list[int],
    *,
    tool_format: ToolFormat | None,
    tools: list[dict[str, Any]] | None,
    separate_reasoning: bool,
) -> ChatOutput | None:
    """The split of a stream's output; None where there is nothing to split (the text then
    streams exactly as generated)."""
    reasoning = separate_reasoning and getattr(tokenizer, "has_thinking", False)
    if not reasoning and tool_format is None:
        return None
    # As mlx_lm.generate.make_text_state_machine, less what is not asked for: in "inline"
    # mode the reasoning and its markers stay text.
    transitions: dict[str, list[tuple[str, str]]] = {NORMAL: []}
    initial = NORMAL
    if reasoning:
        transitions[NORMAL].append((tokenizer.think_start, REASONING))
        transitions[REASONING] = [(tokenizer.think_end, NORMAL)]
        # A template whose generation prompt opens the reasoning (Qwen3's `<think>`).
        if tokenizer.rfind_think_start(prompt_tokens) > tokenizer.rfind_think_end(prompt_tokens):
            initial = REASONING
    if tool_format is not None:
        transitions[NORMAL].append((tool_format.start, TOOL))
        if reasoning:
            transitions[REASONING].append((tool_format.start, TOOL))
        transitions[TOOL] = [(tool_format.end, NORMAL)] if tool_format.end else []
    return ChatOutput(TextStateMachine(transitions), initial, tool_format, tools)


@dataclass
class ResponseSplitter:
    """One stream's split; fed and finished by the thread that runs the stream."""

    output: ChatOutput
    calls: int = 0
    _machine_state: Any = field(init=False)
    _state: str = field(init=False)
    _call_text: list[str] = field(default_factory=list)
    # Blank text at the end of the text so far, held back: dropped when a call follows or
    # the stream ends with calls, so that text ends where the calls begin and a reply that
    # only calls tools has none.
    _blank: str = ""
    # The blank a call's start dropped, given back if the call turns out to be none.
    _blank_before_call: str = ""

    def __post_init__(self) -> None:
        self._state = self.output.initial_state
        self._machine_state = self.output.machine.make_state(self._state)

    def feed(self, text: str) -> list[ResponsePart]:
        self._machine_state, segments = TextStateMachine.split(self._machine_state, text)
        return self._route(segments)

    def finish(self) -> list[ResponsePart]:
        """The held text, and a call the output ended in (it may have no end marker)."""
        self._machine_state, held, state = TextStateMachine.flush(self._machine_state)
        parts = self._route([(state, held)])
        if self._state == TOOL:
            parts.extend(self._end_call(closed=False))
        if self._blank and not self.calls:
            parts.append(ResponseText(self._blank))
        self._blank = ""
        return parts

    def _route(self, segments: list[tuple[str, str]]) -> list[ResponsePart]:
        parts: list[ResponsePart] = []
        for state, text in segments:
            if self._state == TOOL and state != TOOL:
                parts.extend(self._end_call(closed=True))
            elif state == TOOL and self._state != TOOL:
                self._blank_before_call, self._blank = self._blank, ""
            self._state = state
            if not text:
                continue
            if state == TOOL:
                self._call_text.append(text)
            elif state == REASONING:
                parts.append(ResponseText(text, reasoning=True))
            elif body := text.rstrip():
                parts.append(ResponseText(self._blank + body))
                self._blank = text[len(body) :]
            else:
                self._blank += text
        return parts

    def _end_call(self, *, closed: bool) -> list[ResponsePart]:
        fmt = self.output.tool_format
        assert fmt is not None
        body = "".join(self._call_text)
        self._call_text.clear()
        calls = self._parse(fmt, body)
        if calls is None:
            # Not a call after all (or cut short): the client gets the text as written.
            log.warning("could not parse a tool call; sending it as text: %.200r", body)
            written = fmt.start + body + (fmt.end if closed else "")
            return [ResponseText(self._blank_before_call + written)]
        parts: list[ResponsePart] = []
        for name, arguments, call_id in calls:
            parts.append(ResponseCall(self.calls, call_id, name, arguments))
            self.calls += 1
        return parts

    def _parse(self, fmt: ToolFormat, body: str) -> list[tuple[str, str, str]] | None:
        """(name, arguments JSON text, id) of each call in `body`, or None if it is none."""
        try:
            parsed = fmt.parse(body, self.output.tools)
        except Exception:  # the parsers raise whatever their input provokes
            return None
        calls = []
        for item in parsed if isinstance(parsed, list) else [parsed]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                return None
            arguments = item.get("arguments", item.get("parameters"))
            if isinstance(arguments, str):  # some formats carry the JSON as a string
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    return None
            if arguments is None:
                arguments = {}
            if not isinstance(arguments, dict) or not item["name"]:
                return None
            call_id = item.get("id")
            if not isinstance(call_id, str) or not call_id:
                call_id = f"call_{uuid.uuid4().hex[:24]}"
            calls.append((item["name"], json.dumps(arguments, ensure_ascii=False), call_id))
        return calls or None
