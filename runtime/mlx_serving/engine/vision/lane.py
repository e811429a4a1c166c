"""Runs vision streams on their own thread, beside the text scheduler's engine thread.

Each stream is an `mlx_vlm.stream_generate` iterator, stepped one token at a time. A model
runs one stream at a time, the others of that model wait in arrival order: mlx-vlm keeps
per-sequence state on the model object (Qwen-VL's multimodal RoPE offsets), so two
interleaved streams of one model would corrupt each other. mlx-vlm's continuous
`BatchGenerator` (0.7.10) takes requests while it runs, but draws every row with one
sampler, so per-request temperature, top-p/top-k and seed would be lost; it is not used.
Streams of different vision models take turns token by token. Text streams never wait for
any of this: they run on the engine thread.

Output goes through the same `ActiveStream` as text streams, so chunks, stats and the final
event have the same shapes, and through the same sink. Stream ids, cancels and failures go
through the text scheduler's `PendingStreams`, so a vision stream is claimed, cancelled,
failed and released the same way as a text one.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ...protocol.notifications import FinishReason
from ..detokenize import TextAssembler
from ..loader import LoadedModel
from ..pending_streams import PendingStreams, Verdict
from ..stream import StreamRequest, StreamSink
from ..stream_output import ActiveStream, Outgoing, made
from .inputs import VisionInputs
from .loader import LoadedVisionModel

log = logging.getLogger(__name__)


@dataclass
class _Waiting:
    request: StreamRequest
    inputs: VisionInputs


@dataclass
class _Running:
    stream: ActiveStream
    results: Iterator[Any]  # mlx_vlm GenerationResult


class VisionLane:
    def __init__(self, sink: StreamSink, streams: PendingStreams) -> None:
        self._sink = sink
        # Stream ids and verdicts, shared with the text scheduler. Its lock is taken inside
        # _cond, never the other way round.
        self._streams = streams
        # Under _cond: request threads queue streams, the lane thread moves them on. What a
        # running stream holds is the lane thread's alone.
        self._cond = threading.Condition()
        self._waiting: dict[str, deque[_Waiting]] = {}  # model_id -> arrival order
        self._running: dict[str, _Running] = {}  # model_id -> its one running stream
        self._ids: set[str] = set()  # every stream waiting or running
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- called from request threads -------------------------------------------------------

    def start(self, request: StreamRequest, inputs: VisionInputs) -> None:
        """Queue a stream. One cancelled before it started, or whose model was retired
        since it was prepared, ends before it costs a token."""
        with self._cond:
            queue = self._waiting.setdefault(request.model.model_id, deque())
            queue.append(_Waiting(request, inputs))
            self._ids.add(request.stream_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vision", daemon=True)
                self._thread.start()
            self._cond.notify()

    def fail_model(self, model: LoadedModel, reason: str) -> None:
        """Fail the streams of a retired model. Under _cond, which `start` queues under: a
        stream queued later sees the retirement when the lane admits it."""
        with self._cond:
            waiting = [w.request for w in self._waiting.get(model.model_id, ())]
            running = self._running.get(model.model_id)
            if running is not None:
                waiting.append(running.stream.request)
            for request in waiting:
                if request.runs_on(model):
                    self._streams.fail(request.stream_id, reason)

    def stop(self, timeout: float = 2.0) -> None:
        """Cancel every stream (each still gets its final event), then end the thread."""
        with self._cond:
            self._stopping = True
            thread = self._thread
            self._cond.notify()
        if thread is not None:
            thread.join(timeout)

    # -- the lane thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._running and not self._has_waiting() and not self._stopping:
                    self._cond.wait()
                stopping = self._stopping
                verdicts = self._streams.take_verdicts(self._ids)
                dropped = self._drop_waiting(verdicts, stopping)
                dropped += self._admit()
                running = list(self._running.items())
            out: list[Outgoing] = []
            for waiting, failure in dropped:  # ended before they cost any compute
                stream = self._active_stream(waiting.request)
                stream.finish(out, reason="cancelled", failure=failure)
                self._streams.release(stream.stream_id)
            for model_id, entry in running:
                verdict = verdicts.get(entry.stream.stream_id)
                if verdict is not None or stopping:
                    failure = verdict.failure if verdict is not None else None
                    self._end(model_id, out, reason="cancelled", failure=failure)
                else:
                    self._step(model_id, entry, out)
            if out:
                self._sink.emit(made(out))
            if stopping:
                with self._cond:
                    if not self._running and not self._has_waiting():
                        return

    def _has_waiting(self) -> bool:
        return any(self._waiting.values())

    def _drop_waiting(
        self, verdicts: dict[str, Verdict], stopping: bool
    ) -> list[tuple[_Waiting, str | None]]:
        """Take the waiting streams with a verdict out of their queues (under the lock)."""
        dropped: list[tuple[_Waiting, str | None]] = []
        for queue in self._waiting.values():
            for waiting in list(queue):
                verdict = verdicts.get(waiting.request.stream_id)
                if verdict is None and not stopping:
                    continue
                dropped.append((waiting, verdict.failure if verdict is not None else None))
                queue.remove(waiting)
                self._ids.discard(waiting.request.stream_id)
        return dropped

    def _admit(self) -> list[tuple[_Waiting, str | None]]:
        """Start the next waiting stream of each idle model (under the lock); the ones that
        could not start, with why."""
        failed: list[tuple[_Waiting, str | None]] = []
        for model_id, queue in self._waiting.items():
            if model_id in self._running or not queue:
                continue
            waiting = queue.popleft()
            retired = waiting.request.retired()
            if retired is not None:  # unloaded or replaced since it was prepared
                self._ids.discard(waiting.request.stream_id)
                failed.append((waiting, retired))
                continue
            try:
                stream = self._active_stream(waiting.request)
                results = _results(waiting.request, waiting.inputs)
            except Exception as exc:
                log.exception("starting vision stream %s failed", waiting.request.stream_id)
                self._ids.discard(waiting.request.stream_id)
                failed.append((waiting, f"generation failed: {type(exc).__name__}: {exc}"))
                continue
            self._running[model_id] = _Running(stream, results)
        for model_id in [m for m, q in self._waiting.items() if not q]:
            del self._waiting[model_id]
        return failed

    @staticmethod
    def _active_stream(request: StreamRequest) -> ActiveStream:
        detokenizer = request.model.tokenizer.detokenizer
        return ActiveStream(request, TextAssembler(detokenizer, request.stop_sequences))

    def _step(self, model_id: str, entry: _Running, out: list[Outgoing]) -> None:
        try:
            outcome = self._advance(entry.stream, next(entry.results, None), out)
        except Exception as exc:
            log.exception("vision stream %s failed", entry.stream.stream_id)
            self._end(model_id, out, failure=f"generation failed: {type(exc).__name__}: {exc}")
            return
        if outcome is not None:
            self._end(model_id, out, reason=outcome)

    @staticmethod
    def _advance(stream: ActiveStream, result: Any, out: list[Outgoing]) -> FinishReason | None:
        """Handle one mlx-vlm result; the finish reason when the stream ends with it."""
        if result is None:
            return "length"
        if result.finish_reason is not None:
            # mlx-vlm's closing result: it repeats the last token (already handled), or
            # carries the EOS token it stopped at, which ends the text without being text.
            if result.finish_reason == "stop":
                stream.count_token()
                return "stop"
            return "length"
        token_id = int(result.token)
        stream.count_token()
        if token_id in stream.request.stop_token_ids:
            return "stop"
        stream.add_token(token_id, result.logprobs, out)
        return "stop" if stream.assembler.stopped else None

    def _end(
        self,
        model_id: str,
        out: list[Outgoing],
        *,
        reason: FinishReason | None = None,
        failure: str | None = None,
    ) -> None:
        with self._cond:
            entry = self._running.pop(model_id)
            self._ids.discard(entry.stream.stream_id)
        close = getattr(entry.results, "close", None)
        if close is not None:
            try:
                close()  # leaves mlx-vlm's generation context (wired memory limit)
            except Exception:
                log.exception("closing vision stream %s failed", entry.stream.stream_id)
        entry.stream.finish(out, reason=reason, failure=failure)
        self._streams.release(entry.stream.stream_id)


def _results(request: StreamRequest, inputs: VisionInputs) -> Iterator[Any]:
    """mlx-vlm's own generation loop over the prepared tensors; nothing runs before the
    first `next()`, which prefills (vision tower included) and yields the first token."""
    from mlx_vlm import stream_generate

    model = request.model
    assert isinstance(model, LoadedVisionModel)
    results: Iterator[Any] = stream_generate(
        model.model,
        model.processor,
        inputs.prompt,
        max_tokens=request.max_tokens,
        sampler=request.sampler,
        logits_processors=request.logits_processors,
        **inputs.tensors,
    )
    return results
