"""JSON-RPC 2.0: frames in, method table lookup, frames out (answers, and the streams'
notifications through `NotificationSink`).

Each request is decoded once into its method's params Struct, run on the reader thread
(cheap methods) or on a worker pool, and answered through `send`. Handler exceptions
become JSON-RPC errors; nothing a handler raises can stop the dispatcher. Every request
gets exactly one answer, also when the runtime stops: from then on requests are refused
with -32099, and pool work that does not finish in time is answered the same way. Every
answer line, a batch's included, stays within the output line limit.

dispatch_errors.py words what cannot be served (unusable frames, handler exceptions);
dispatch_answers.py gathers a batch's answers into lines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from . import arrival, json_scan
from .dispatch_answers import BatchAnswer, Outcome
from .dispatch_errors import client_error, encode_error, invalid_request, too_deep
from .protocol.envelope import (
    NULL_ID,
    ErrorFrame,
    NotificationFrame,
    RequestFrame,
    ResultFrame,
    valid_id,
)
from .protocol.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RUNTIME_ERROR,
    ErrorObject,
    InvalidParams,
    Overloaded,
)

if TYPE_CHECKING:
    from .telemetry import Telemetry
    from .transport import FrameWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deferred:
    """A result plus work that must wait until the client has read it (a stream's tokens
    must not overtake the response that tells the client the stream id)."""

    result: Any
    after_sent: Callable[[], None]
    on_dropped: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Method:
    params: type[msgspec.Struct]
    handler: Callable[[Any], Any]
    # Cheap methods are answered on the reader thread, so they never queue behind loads.
    inline: bool = False
    decoder: msgspec.json.Decoder[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", msgspec.json.Decoder(self.params))


class RequestObserver(Protocol):
    """Told of every request that names a method (telemetry): once when it arrives, once
    when its answer is ready, before the answer is sent."""

    def request_received(self) -> None: ...
    def request_answered(self, method: str, error: ErrorObject | None, seconds: float) -> None: ...


_request_decoder = msgspec.json.Decoder(RequestFrame)
_batch_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_encoder = msgspec.json.Encoder()


class Dispatcher:
    def __init__(
        self,
        methods: dict[str, Method],
        send: Callable[[bytes], None],
        executor: Executor,
        max_pending: int,
        max_output_line_bytes: int,
        observer: RequestObserver | None = None,
        on_quiet: Callable[[], None] | None = None,
    ) -> None:
        self._methods = methods
        self._observer = observer
        self._send = send
        self._executor = executor
        self._max_line = max_output_line_bytes
        self._pending = threading.BoundedSemaphore(max_pending)
        self._stopping = False
        self._running: set[_AnswerOnce] = set()
        # Told whenever a line was handled or a request answered and none is in flight.
        self._on_quiet = on_quiet
        self._running_changed = threading.Condition()

    def stop_accepting(self) -> None:
        """Refuse every request from now on (-32099). Safe from signal handlers."""
        self._stopping = True

    def close(self, grace: float) -> None:
        """Stop accepting; give pool work `grace` seconds to answer, then answer what is
        left with -32099 (a handler finishing later is not sent, its work dropped)."""
        self._stopping = True
        deadline = time.monotonic() + grace
        with self._running_changed:
            while self._running and (remaining := deadline - time.monotonic()) > 0:
                self._running_changed.wait(remaining)
            left = list(self._running)
        for answer in left:
            answer.settle(self._refusal(answer.frame))

    def handle_line(self, line: bytes) -> None:
        try:
            self._handle_line(line)
        finally:
            self._quiet_now()

    def _quiet_now(self) -> None:
        if self._on_quiet is None:
            return
        with self._running_changed:
            if self._running:
                return
        self._on_quiet()

    def _handle_line(self, line: bytes) -> None:
        stripped = line.strip()
        if not stripped:
            return
        try:
            # JSON text is UTF-8; ids are echoed byte for byte, so check before decoding.
            stripped.decode("utf-8")
        except UnicodeDecodeError:
            self._send(encode_error(NULL_ID, PARSE_ERROR, "Parse error: invalid UTF-8"))
            return
        if stripped[:1] == b"[":
            self._handle_batch(stripped)
            return
        try:
            frame = _request_decoder.decode(stripped)
        except msgspec.ValidationError:
            self._send(invalid_request(stripped))
            return
        except msgspec.DecodeError:
            self._send(encode_error(NULL_ID, PARSE_ERROR, "Parse error"))
            return
        except RecursionError:
            self._send(too_deep(stripped))
            return
        self._dispatch(frame, self._deliver)

    # -- batches ---------------------------------------------------------------------------

    def _handle_batch(self, line: bytes) -> None:
        entries: Sequence[msgspec.Raw | bytes] | None
        try:
            entries = _batch_decoder.decode(line)
        except msgspec.DecodeError:
            self._send(encode_error(NULL_ID, PARSE_ERROR, "Parse error"))
            return
        except RecursionError:
            # One entry nests too deeply: answer it alone, and the others as usual.
            entries = json_scan.elements(line)
            if entries is None:
                self._send(too_deep(line))
                return
        if not entries:
            self._send(encode_error(NULL_ID, INVALID_REQUEST, "Invalid Request: empty batch"))
            return
        collector = BatchAnswer(len(entries), self._send, self._max_line)
        for entry in entries:
            try:
                frame = _request_decoder.decode(entry)
            except msgspec.DecodeError:
                collector.add(Outcome(frame=invalid_request(bytes(entry))))
                continue
            except RecursionError:
                collector.add(Outcome(frame=too_deep(bytes(entry))))
                continue
            self._dispatch(frame, collector.add)

    # -- single requests -------------------------------------------------------------------

    def _deliver(self, outcome: Outcome) -> None:
        if outcome.frame is not None:
            self._send(outcome.frame)
        if outcome.after_sent is not None:
            outcome.after_sent()

    def _dispatch(self, frame: RequestFrame, done: Callable[[Outcome], None]) -> None:
        request_id = NULL_ID if frame.id is msgspec.UNSET else frame.id
        if not valid_id(request_id):
            done(Outcome(frame=encode_error(NULL_ID, INVALID_REQUEST, "Invalid Request")))
            return
        if frame.jsonrpc != "2.0":
            # The id was readable, so JSON-RPC 2.0 wants it echoed (null only when it is not).
            message = 'Invalid Request: jsonrpc must be "2.0"'
            done(Outcome(frame=encode_error(request_id, INVALID_REQUEST, message)))
            return
        method = self._methods.get(frame.method)
        if self._observer is not None:
            done = self._observed(frame.method if method is not None else "unknown", done)
        if method is None:
            done(self._reply_error(frame, METHOD_NOT_FOUND, f"Method not found: {frame.method}"))
            return
        if self._stopping:
            done(self._refusal(frame))
            return
        if method.inline:
            done(self._run(method, frame))
            return
        if not self._pending.acquire(blocking=False):
            error = Overloaded("too many requests in flight; retry later")
            done(self._reply_error(frame, error.code, error.message, error.data))
            return
        answer = _AnswerOnce(frame, done, self._finished)
        with self._running_changed:
            self._running.add(answer)
        order = arrival.stamp()

        def work() -> None:
            try:
                with arrival.arrived(order):
                    outcome = self._refusal(frame) if self._stopping else self._run(method, frame)
                answer.settle(outcome)
            finally:
                self._pending.release()

        self._executor.submit(work)

    def _observed(self, method: str, done: Callable[[Outcome], None]) -> Callable[[Outcome], None]:
        """`done`, recording the request first: a metrics call made after this answer was
        read already counts it."""
        observer = self._observer
        assert observer is not None
        observer.request_received()
        received = time.perf_counter()

        def answered(outcome: Outcome) -> None:
            observer.request_answered(method, outcome.error, time.perf_counter() - received)
            done(outcome)

        return answered

    def _finished(self, answer: _AnswerOnce) -> None:
        with self._running_changed:
            self._running.discard(answer)
            self._running_changed.notify_all()
        self._quiet_now()

    def _refusal(self, frame: RequestFrame) -> Outcome:
        return self._reply_error(frame, RUNTIME_ERROR, "runtime is shutting down")

    def _run(self, method: Method, frame: RequestFrame) -> Outcome:
        try:
            params = self._decode_params(method, frame.params)
            result = method.handler(params)
        except Exception as exc:
            error = client_error(exc)
            if error is None:
                log.exception("internal error in %s", frame.method)
                return self._reply_error(frame, INTERNAL_ERROR, "Internal error")
            return self._reply_error(frame, error.code, error.message, error.data)
        after_sent = on_dropped = None
        if isinstance(result, Deferred):
            result, after_sent, on_dropped = result.result, result.after_sent, result.on_dropped
        if frame.is_notification:
            return Outcome(after_sent=after_sent, on_dropped=on_dropped)
        assert not isinstance(frame.id, msgspec.UnsetType)
        encoded = _encoder.encode(ResultFrame(id=frame.id, result=result))
        if len(encoded) > self._max_line:
            if on_dropped is not None:
                on_dropped()
            return self._reply_error(
                frame, INTERNAL_ERROR, f"result exceeds the {self._max_line}-byte line limit"
            )
        return Outcome(
            frame=encoded, after_sent=after_sent, on_dropped=on_dropped, request_id=frame.id
        )

    @staticmethod
    def _decode_params(method: Method, raw: msgspec.Raw | msgspec.UnsetType) -> Any:
        if isinstance(raw, msgspec.UnsetType) or bytes(raw) in (b"null", b"[]"):
            raw = msgspec.Raw(b"{}")
        elif bytes(raw)[:1] != b"{":
            raise InvalidParams("params", "must be an object of named parameters")
        return method.decoder.decode(raw)

    @staticmethod
    def _reply_error(frame: RequestFrame, code: int, message: str, data: Any = None) -> Outcome:
        error = ErrorObject(code=code, message=message, data=data)
        if frame.is_notification:
            log.info("error in notification %s: %s", frame.method, message)
            return Outcome(error=error)
        assert not isinstance(frame.id, msgspec.UnsetType)
        return Outcome(frame=_encoder.encode(ErrorFrame(id=frame.id, error=error)), error=error)


class _AnswerOnce:
    """One pool request's answer: the first outcome settled is delivered, a later one (a
    handler finishing after its refusal went out) is dropped."""

    def __init__(
        self,
        frame: RequestFrame,
        done: Callable[[Outcome], None],
        finished: Callable[[_AnswerOnce], None],
    ) -> None:
        self.frame = frame
        self._done = done
        self._finished = finished
        self._lock = threading.Lock()
        self._settled = False

    def settle(self, outcome: Outcome) -> None:
        with self._lock:
            first, self._settled = not self._settled, True
        if not first:
            if outcome.on_dropped is not None:
                outcome.on_dropped()
            return
        try:
            self._done(outcome)
        finally:
            # After `done`: close() waits for this, so the answer is queued by then.
            self._finished(self)


class NotificationSink:
    """Encodes the scheduler's notifications and hands them to the writer as one batch;
    telemetry reads each batch on the way and may add events after it."""

    def __init__(self, writer: FrameWriter, telemetry: Telemetry | None = None) -> None:
        self._writer = writer
        self._encoder = msgspec.json.Encoder()
        self._observe = telemetry.observe if telemetry is not None and telemetry.active else None
        # The engine thread emits, but so do others (a stream that cannot start, a
        # watchdog ending a failed group's streams): one at a time, each batch whole.
        self._lock = threading.Lock()

    def emit(self, notifications: list[tuple[str, msgspec.Struct]]) -> None:
        with self._lock:
            if self._observe is not None:
                try:
                    events = self._observe(notifications)
                except Exception:
                    # Metrics must never cost a client its stream's frames.
                    log.exception("telemetry failed to observe notifications")
                    events = None
                if events:
                    notifications = notifications + events
            encode = self._encoder.encode
            self._writer.send_many(
                [encode(NotificationFrame(method=m, params=p)) for m, p in notifications]
            )
