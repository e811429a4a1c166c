"""The state of one running stream and the notifications it produces: chunks as tokens
are released (and tool calls as they complete), then exactly one `stream.stats` and one
final `stream.event`.

Where nothing on the engine thread reads a stream's text (no stop sequence to find, no
grammar to check), its text is made later, where the notifications are sent: the stream
hands out `TextWork` in their place, in order (`made` does it; emit_thread.py, off the
engine thread). The detokenizer is then no part of the time between two model steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple, cast

import mlx.core as mx
import msgspec

from ..protocol.notifications import (
    FinishReason,
    StreamChunk,
    StreamCompleted,
    StreamFailed,
    StreamStats,
    StreamToolCall,
    TopLogprob,
)
from .chat import ResponseCall, ResponseSplitter, ResponseText
from .detokenize import PendingToken, TextAssembler
from .stream import StreamRequest

Notification = tuple[str, msgspec.Struct]


class TextWork(NamedTuple):
    """Appends the notifications of a stream's text to `out` when run. `ends`: the id of
    the stream whose final event it makes."""

    run: Callable[[list[Outgoing]], None]
    ends: str | None = None


Outgoing = Notification | TextWork


def made(batch: list[Outgoing]) -> list[Notification]:
    """The notifications of a batch, its text work done in order."""
    out: list[Outgoing] = []
    for item in batch:
        if type(item) is TextWork:
            item.run(out)  # appends notifications only: a stream makes its text once
        else:
            out.append(item)
    return cast(list[Notification], out)


@dataclass
class ActiveStream:
    request: StreamRequest
    assembler: TextAssembler
    generated: int = 0
    cached_prompt_tokens: int = 0
    draft_tokens_accepted: int = 0
    first_token_at: float | None = None
    # Made when the scheduler admits the request (stats report the wait as queue_time).
    admitted_at: float = field(default_factory=time.perf_counter)
    # The text as generated (markup of tool calls and reasoning included).
    text: list[str] = field(default_factory=list)
    # The text sent as ordinary chunks, for cumulative_text.
    content: list[str] = field(default_factory=list)
    # Splits text, reasoning and tool calls where the request asked for that.
    response: ResponseSplitter | None = field(init=False)
    last_token_id: int = 0
    # Its text made later (TextWork), off the engine thread: see the module's docstring.
    text_later: bool = field(init=False)

    def __post_init__(self) -> None:
        request = self.request
        output = request.chat_output
        self.response = output.splitter() if output is not None else None
        self.text_later = not request.stop_sequences and request.guidance is None

    @property
    def stream_id(self) -> str:
        return self.request.stream_id

    def add_token(self, token_id: int, logprobs: mx.array, out: list[Outgoing]) -> None:
        """A generated token that belongs to the text (not a stop token)."""
        request = self.request
        pending = PendingToken(token_id=token_id, text="")
        if request.logprobs:  # MLX work: here, on the engine thread
            pending.logprob = cast(float, logprobs[token_id].item())
            if request.top_logprobs:
                pending.top_logprobs = _top_logprobs(logprobs, request.top_logprobs)
        if self.text_later:
            out.append(TextWork(partial(self._add_text, pending)))
        else:
            self._add_text(pending, out)

    def _add_text(self, pending: PendingToken, out: list[Outgoing]) -> None:
        self._emit(self.assembler.add(pending), out)

    def count_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.generated += 1

    def finish(
        self,
        out: list[Outgoing],
        *,
        reason: FinishReason | None = None,
        failure: str | None = None,
    ) -> None:
        """The stream's stats and final event (after its held-back text)."""
        now = time.perf_counter()
        if self.text_later:
            work = partial(self._finish, reason=reason, failure=failure, now=now)
            out.append(TextWork(work, ends=self.stream_id))
        else:
            self._finish(out, reason=reason, failure=failure, now=now)

    def _finish(
        self,
        out: list[Outgoing],
        *,
        reason: FinishReason | None,
        failure: str | None,
        now: float,
    ) -> None:
        request = self.request
        if failure is None and request.guidance is not None:
            # A matcher that gave up forced EOS: the text does not satisfy the request's
            # constraint, so the stream failed, whatever ended it.
            failure = request.guidance.failure
        if failure is None and not self.assembler.stopped:
            self._emit(self.assembler.finish(), out)
            if self.assembler.stopped and reason != "cancelled":
                # The detokenizer held back the text that completed a stop sequence.
                reason = "stop"
        if failure is None and self.response is not None:
            # Text held as a possible marker, and a call the output ended in.
            tail = PendingToken(token_id=self.last_token_id, text="")
            self._emit_parts(tail, self.response.finish(), out)
            if self.response.calls and reason in (None, "stop"):
                reason = "tool_calls"
        guidance_valid = None
        if request.guidance is not None and failure is None:
            guidance_valid = request.guidance.validate("".join(self.text))
        first = self.first_token_at
        decode_time = now - first if first is not None else 0.0
        stats = StreamStats(
            stream_id=request.stream_id,
            tokens_generated=self.generated,
            tokens_per_second=(self.generated - 1) / decode_time
            if self.generated > 1 and decode_time > 0
            else 0.0,
            time_to_first_token=(first - request.submitted_at) if first else 0.0,
            total_time=now - request.submitted_at,
            prompt_tokens=len(request.prompt_tokens),
            cached_prompt_tokens=self.cached_prompt_tokens,
            draft_tokens_accepted=self.draft_tokens_accepted,
            guidance_valid=guidance_valid,
            queue_time=self.admitted_at - request.submitted_at,
        )
        out.append(("stream.stats", stats))
        event: msgspec.Struct
        if failure is not None:
            event = StreamFailed(stream_id=request.stream_id, error=failure)
        else:
            event = StreamCompleted(stream_id=request.stream_id, finish_reason=reason or "stop")
        out.append(("stream.event", event))

    def _emit(self, released: list[PendingToken], out: list[Outgoing]) -> None:
        for token in released:
            self.text.append(token.text)
            self.last_token_id = token.token_id
            if self.response is None:
                out.append(("stream.chunk", self._chunk(token, ResponseText(token.text), True)))
            else:
                self._emit_parts(token, self.response.feed(token.text), out)

    def _emit_parts(
        self,
        token: PendingToken,
        parts: list[ResponseText | ResponseCall],
        out: list[Outgoing],
    ) -> None:
        """What one token's text released once split: a token whose text is markup, a
        call's body or held back sends no chunk; one whose text spans reasoning and answer
        sends two, its log-probs on the first."""
        first = True
        for part in parts:
            if isinstance(part, ResponseCall):
                call = StreamToolCall(
                    stream_id=self.stream_id,
                    index=part.index,
                    id=part.id,
                    name=part.name,
                    arguments=part.arguments,
                )
                out.append(("stream.tool_call", call))
            elif part.text:
                out.append(("stream.chunk", self._chunk(token, part, first)))
                first = False

    def _chunk(self, token: PendingToken, part: ResponseText, with_logprobs: bool) -> StreamChunk:
        request = self.request
        chunk = StreamChunk(stream_id=request.stream_id, token=part.text, token_id=token.token_id)
        if part.reasoning:
            chunk.reasoning = True
        if with_logprobs and token.logprob is not None:
            chunk.logprob = token.logprob
        if with_logprobs and token.top_logprobs is not None:
            decode = request.model.tokenizer.decode
            chunk.top_logprobs = [
                TopLogprob(token_id=tid, token=decode([tid]), logprob=lp)
                for tid, lp in token.top_logprobs
            ]
        if request.include_cumulative_text:
            if not part.reasoning:
                self.content.append(part.text)
            chunk.cumulative_text = "".join(self.content)
        return chunk


def _top_logprobs(logprobs: mx.array, k: int) -> list[tuple[int, float]]:
    top = mx.argpartition(-logprobs, kth=k - 1)[:k]
    values = logprobs[top]
    order = mx.argsort(-values)
    ids = cast(list[int], top[order].tolist())
    lps = cast(list[float], values[order].tolist())
    # Tokens masked out by guidance have -inf, which JSON cannot carry: they are not
    # alternatives at all, so they are left out.
    return [(tid, lp) for tid, lp in zip(ids, lps, strict=True) if lp > -math.inf]


def final_events(
    request: StreamRequest,
    out: list[Outgoing],
    *,
    reason: FinishReason | None = None,
    failure: str | None = None,
    generated: int = 0,
) -> None:
    """The stats and final event of a stream ended from outside its run (never admitted,
    or its engine thread is busy): no text is pending, `generated` tokens were sent."""
    assembler = TextAssembler(request.model.tokenizer.detokenizer, [])
    stream = ActiveStream(request=request, assembler=assembler, generated=generated)
    stream.finish(out, reason=reason, failure=failure)
