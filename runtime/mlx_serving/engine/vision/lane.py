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
event have the same shapes, and through the same sink.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ...protocol.notifications import FinishReason
from ..detokenize import TextAssembler
from ..stream import StreamRequest, StreamSink
from ..stream_output import ActiveStream, Notification
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
    def __init__(self, sink: StreamSink, release: Callable[[str], None]) -> None:
        self._sink = sink
        self._release = release  # frees the stream id in the shared stream-id registry
        self._cond = threading.Condition()
        self._waiting: dict[str, deque[_Waiting]] = {}  # model_id -> arrival order
        self._running: dict[str, _Running] = {}  # model_id -> its one running stream
        # Set from request threads, acted on by the lane thread: stream_id -> reason.
        self._cancelled: set[str] = set()
        self._failed: dict[str, str] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- called from request threads -------------------------------------------------------

    def start(
        self,
        request: StreamRequest,
        inputs: VisionInputs,
        *,
        cancelled: bool = False,
        failure: str | None = None,
    ) -> None:
        """Queue a stream; one cancelled or failed before it started is flagged in the same
        step, so the lane ends it before it costs a token."""
        with self._cond:
            queue = self._waiting.setdefault(request.model.model_id, deque())
            queue.append(_Waiting(request, inputs))
            if failure is not None:
                self._failed[request.stream_id] = failure
            elif cancelled:
                self._cancelled.add(request.stream_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vision", daemon=True)
                self._thread.start()
            self._cond.notify()

    def cancel(self, stream_id: str) -> bool:
        with self._cond:
            if stream_id not in self._stream_ids():
                return False
            self._cancelled.add(stream_id)
            self._cond.notify()
            return True

    def fail_model(self, model_id: str, reason: str) -> None:
        with self._cond:
            running = self._running.get(model_id)
            ids = [w.request.stream_id for w in self._waiting.get(model_id, ())]
            if running is not None:
                ids.append(running.stream.stream_id)
            for stream_id in ids:
                self._failed[stream_id] = reason
            self._cond.notify()

    def stop(self, timeout: float = 2.0) -> None:
        """Cancel every stream (each still gets its final event), then end the thread."""
        with self._cond:
            self._stopping = True
            thread = self._thread
            self._cond.notify()
        if thread is not None:
            thread.join(timeout)

    def _stream_ids(self) -> set[str]:
        ids = {w.request.stream_id for queue in self._waiting.values() for w in queue}
        return ids | {r.stream.stream_id for r in self._running.values()}

    # -- the lane thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._running and not self._has_waiting() and not self._stopping:
                    self._cond.wait()
                stopping = self._stopping
                cancelled, self._cancelled = self._cancelled, set()
                failed, self._failed = self._failed, {}
                dropped = self._drop_waiting(cancelled, failed, stopping)
                dropped += self._admit()
                running = list(self._running.items())
            out: list[Notification] = []
            for waiting, failure in dropped:  # ended before they cost any compute
                stream = self._active_stream(waiting.request)
                stream.finish(out, reason="cancelled", failure=failure)
                self._release(stream.stream_id)
            for model_id, entry in running:
                stream_id = entry.stream.stream_id
                if stream_id in failed:
                    self._end(model_id, out, failure=failed[stream_id])
                elif stream_id in cancelled or stopping:
                    self._end(model_id, out, reason="cancelled")
                else:
                    self._step(model_id, entry, out)
            if out:
                self._sink.emit(out)
            if stopping:
                with self._cond:
                    if not self._running and not self._has_waiting():
                        return

    def _has_waiting(self) -> bool:
        return any(self._waiting.values())

    def _drop_waiting(
        self, cancelled: set[str], failed: dict[str, str], stopping: bool
    ) -> list[tuple[_Waiting, str | None]]:
        """Take the flagged waiting streams out of their queues (under the lock)."""
        dropped: list[tuple[_Waiting, str | None]] = []
        for queue in self._waiting.values():
            for waiting in list(queue):
                stream_id = waiting.request.stream_id
                if stream_id in failed:
                    dropped.append((waiting, failed[stream_id]))
                elif stream_id in cancelled or stopping:
                    dropped.append((waiting, None))
                else:
                    continue
                queue.remove(waiting)
        return dropped

    def _admit(self) -> list[tuple[_Waiting, str | None]]:
        """Start the next waiting stream of each idle model (under the lock); the ones that
        could not start, with why."""
        failed: list[tuple[_Waiting, str | None]] = []
        for model_id, queue in self._waiting.items():
            if model_id in self._running or not queue:
                continue
            waiting = queue.popleft()
            try:
                stream = self._active_stream(waiting.request)
                results = _results(waiting.request, waiting.inputs)
            except Exception as exc:
                log.exception("starting vision stream %s failed", waiting.request.stream_id)
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

    def _step(self, model_id: str, entry: _Running, out: list[Notification]) -> None:
        try:
            outcome = self._advance(entry.stream, next(entry.results, None), out)
        except Exception as exc:
            log.exception("vision stream %s failed", entry.stream.stream_id)
            self._end(model_id, out, failure=f"generation failed: {type(exc).__name__}: {exc}")
            return
        if outcome is not None:
            self._end(model_id, out, reason=outcome)

    @staticmethod
    def _advance(stream: ActiveStream, result: Any, out: list[Notification]) -> FinishReason | None:
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
        out: list[Notification],
        *,
        reason: FinishReason | None = None,
        failure: str | None = None,
    ) -> None:
        with self._cond:
            entry = self._running.pop(model_id)
        close = getattr(entry.results, "close", None)
        if close is not None:
            try:
                close()  # leaves mlx-vlm's generation context (wired memory limit)
            except Exception:
                log.exception("closing vision stream %s failed", entry.stream.stream_id)
        entry.stream.finish(out, reason=reason, failure=failure)
        self._release(entry.stream.stream_id)


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
