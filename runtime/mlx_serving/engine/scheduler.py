"""Runs every active stream on one engine thread, a token per stream per round.

Streams are stepped through mlx-lm's own `generate_step`, so a single stream produces
exactly what `mlx_lm.stream_generate` produces. All notifications of a round go to the
sink together, so the writer can flush them as one batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

import mlx.core as mx
import msgspec
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import make_prompt_cache

from ..protocol.errors import InvalidParams, Overloaded
from ..protocol.notifications import (
    FinishReason,
    StreamChunk,
    StreamCompleted,
    StreamFailed,
    StreamStats,
    TopLogprob,
)
from .detokenize import PendingToken, TextAssembler
from .stream import StreamRequest, StreamSink

log = logging.getLogger(__name__)

Notification = tuple[str, msgspec.Struct]


@dataclass
class ActiveStream:
    request: StreamRequest
    tokens: Iterator[tuple[int, mx.array]]
    assembler: TextAssembler
    generated: int = 0
    first_token_at: float | None = None
    text: list[str] = field(default_factory=list)
    cancel_reason: str | None = None
    failure: str | None = None


class Scheduler:
    def __init__(self, sink: StreamSink, max_active_streams: int) -> None:
        self._sink = sink
        self._max_active = max_active_streams
        self._streams: dict[str, ActiveStream] = {}
        self._admitted: list[StreamRequest] = []
        self._reserved: set[str] = set()
        self._cond = threading.Condition()
        self._stopping = False
        # Requests acknowledged but not yet picked up by the engine thread can already be
        # cancelled or lose their model; these remember it until admission.
        self._cancel_on_admit: set[str] = set()
        self._fail_on_admit: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    # -- called from request threads -------------------------------------------------------

    def reserve(self, stream_id: str) -> None:
        """Claim a stream id before the request is acknowledged, so two requests can never
        both be told they own it, and refuse when the stream limit is reached."""
        with self._cond:
            if stream_id in self._reserved:
                raise InvalidParams("stream_id", f"stream '{stream_id}' is already active")
            if len(self._reserved) >= self._max_active:
                raise Overloaded(
                    f"too many active streams (limit {self._max_active})", stream_id=stream_id
                )
            self._reserved.add(stream_id)

    def release(self, stream_id: str) -> None:
        with self._cond:
            self._reserved.discard(stream_id)
            self._cancel_on_admit.discard(stream_id)

    def start(self, request: StreamRequest) -> None:
        with self._cond:
            self._admitted.append(request)
            self._cond.notify()

    def cancel(self, stream_id: str, reason: str = "cancelled") -> bool:
        with self._cond:
            if stream_id not in self._reserved:
                return False
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.cancel_reason = reason
            else:
                self._cancel_on_admit.add(stream_id)
            self._cond.notify()
            return True

    def fail_model(self, model_id: str, reason: str) -> None:
        """End every stream of a model with an error (the model is being unloaded)."""
        with self._cond:
            for stream in self._streams.values():
                if stream.request.model.model_id == model_id:
                    stream.failure = reason
            for request in self._admitted:
                if request.model.model_id == model_id:
                    self._fail_on_admit[request.stream_id] = reason
            self._cond.notify()

    @property
    def active_count(self) -> int:
        with self._cond:
            return len(self._reserved)

    def stop(self, timeout: float = 2.0) -> None:
        """Cancel every stream (each still gets its final event), then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    # -- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._admitted and not self._streams and not self._stopping:
                    self._cond.wait()
                admitted, self._admitted = self._admitted, []
                stopping = self._stopping
            out: list[Notification] = []
            for request in admitted:
                self._admit(request, out)
            for stream in list(self._streams.values()):
                if stopping and stream.cancel_reason is None and stream.failure is None:
                    stream.cancel_reason = "cancelled"
                self._step(stream, out)
            if out:
                self._sink.emit(out)
            if stopping and not self._streams:
                with self._cond:
                    if not self._admitted:
                        return

    def _admit(self, request: StreamRequest, out: list[Notification]) -> None:
        model = request.model
        tokens = generate_step(
            mx.array(request.prompt_tokens),
            model.model,
            max_tokens=request.max_tokens,
            sampler=request.sampler,
            logits_processors=request.logits_processors or None,
            prompt_cache=make_prompt_cache(model.model),
        )
        assembler = TextAssembler(model.tokenizer.detokenizer, request.stop_sequences)
        stream = ActiveStream(request=request, tokens=tokens, assembler=assembler)
        with self._cond:
            if request.stream_id in self._cancel_on_admit:
                self._cancel_on_admit.discard(request.stream_id)
                stream.cancel_reason = "cancelled"
            stream.failure = self._fail_on_admit.pop(request.stream_id, None)
        self._streams[request.stream_id] = stream

    def _step(self, stream: ActiveStream, out: list[Notification]) -> None:
        if stream.failure is not None:
            self._finish(stream, out, failure=stream.failure)
            return
        if stream.cancel_reason is not None:
            self._finish(stream, out, reason="cancelled")
            return
        request = stream.request
        try:
            token_id, logprobs = next(stream.tokens)
        except StopIteration:
            self._finish(stream, out, reason="length")
            return
        except Exception as exc:
            log.exception("generation failed for stream %s", request.stream_id)
            self._finish(stream, out, failure=f"generation failed: {type(exc).__name__}: {exc}")
            return
        if stream.first_token_at is None:
            stream.first_token_at = time.perf_counter()
        stream.generated += 1
        tokenizer = request.model.tokenizer
        if token_id in tokenizer.eos_token_ids or token_id in request.stop_token_ids:
            self._finish(stream, out, reason="stop")
            return
        pending = PendingToken(token_id=token_id, text="")
        if request.logprobs:
            pending.logprob = cast(float, logprobs[token_id].item())
            if request.top_logprobs:
                pending.top_logprobs = _top_logprobs(logprobs, request.top_logprobs)
        self._emit_chunks(stream, stream.assembler.add(pending), out)
        if stream.assembler.stopped:
            self._finish(stream, out, reason="stop")
        elif stream.generated >= request.max_tokens:
            self._finish(stream, out, reason="length")

    def _emit_chunks(
        self, stream: ActiveStream, released: list[PendingToken], out: list[Notification]
    ) -> None:
        request = stream.request
        tokenizer = request.model.tokenizer
        for token in released:
            stream.text.append(token.text)
            chunk = StreamChunk(
                stream_id=request.stream_id, token=token.text, token_id=token.token_id
            )
            if token.logprob is not None:
                chunk.logprob = token.logprob
            if token.top_logprobs is not None:
                chunk.top_logprobs = [
                    TopLogprob(token_id=tid, token=tokenizer.decode([tid]), logprob=lp)
                    for tid, lp in token.top_logprobs
                ]
            if request.include_cumulative_text:
                chunk.cumulative_text = "".join(stream.text)
            out.append(("stream.chunk", chunk))

    def _finish(
        self,
        stream: ActiveStream,
        out: list[Notification],
        *,
        reason: FinishReason | None = None,
        failure: str | None = None,
    ) -> None:
        request = stream.request
        if failure is None and not stream.assembler.stopped:
            self._emit_chunks(stream, stream.assembler.finish(), out)
        del self._streams[request.stream_id]
        now = time.perf_counter()
        first = stream.first_token_at
        decode_time = now - first if first is not None else 0.0
        out.append(
            (
                "stream.stats",
                StreamStats(
                    stream_id=request.stream_id,
                    tokens_generated=stream.generated,
                    tokens_per_second=(stream.generated - 1) / decode_time
                    if stream.generated > 1 and decode_time > 0
                    else 0.0,
                    time_to_first_token=(first - request.submitted_at) if first else 0.0,
                    total_time=now - request.submitted_at,
                    prompt_tokens=len(request.prompt_tokens),
                ),
            )
        )
        event: msgspec.Struct
        if failure is not None:
            event = StreamFailed(stream_id=request.stream_id, error=failure)
        else:
            event = StreamCompleted(stream_id=request.stream_id, finish_reason=reason or "stop")
        out.append(("stream.event", event))
        self.release(request.stream_id)


def _top_logprobs(logprobs: mx.array, k: int) -> list[tuple[int, float]]:
    top = mx.argpartition(-logprobs, kth=k - 1)[:k]
    values = logprobs[top]
    order = mx.argsort(-values)
    ids = cast(list[int], top[order].tolist())
    lps = cast(list[float], values[order].tolist())
    return list(zip(ids, lps, strict=True))
