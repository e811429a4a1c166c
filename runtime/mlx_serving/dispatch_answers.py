"""Answers on their way out: one request's outcome, and a batch's outcomes gathered from
the threads that ran them into answer lines within the output line limit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from .dispatch_errors import encode_error
from .protocol.errors import INTERNAL_ERROR, ErrorObject


@dataclass
class Outcome:
    frame: bytes | None = None
    after_sent: Callable[[], None] | None = None
    on_dropped: Callable[[], None] | None = None
    error: ErrorObject | None = None
    # Set on results only: the id a result too big for its batch's answer is refused with.
    request_id: msgspec.Raw | None = None


class BatchAnswer:
    """Gathers the outcomes of one batch's entries, which finish on different threads, and
    sends them once the last is in; then runs the work that waited for them."""

    def __init__(self, size: int, send: Callable[[bytes], None], max_line: int) -> None:
        self._remaining = size
        self._outcomes: list[Outcome] = []
        self._send = send
        self._max_line = max_line
        self._lock = threading.Lock()

    def add(self, outcome: Outcome) -> None:
        with self._lock:
            self._outcomes.append(outcome)
            self._remaining -= 1
            complete = self._remaining == 0
        if complete:
            self._deliver(self._outcomes)

    def _deliver(self, outcomes: list[Outcome]) -> None:
        answered = [o for o in outcomes if o.frame is not None]
        self._fit_line(answered)
        for line in _batch_lines([o.frame for o in answered if o.frame], self._max_line):
            self._send(line)
        for outcome in outcomes:
            if outcome.after_sent is not None:
                outcome.after_sent()

    def _fit_line(self, answered: list[Outcome]) -> None:
        """Each answer was checked against the line limit alone, but a batch is answered
        on one line: while the joined line is too long, the largest result gives way to
        an error, so that every request still gets exactly one answer, in one array."""
        size = 1 + sum(len(o.frame) + 1 for o in answered if o.frame)
        results = [o for o in answered if o.request_id is not None and o.frame]
        results.sort(key=lambda o: len(o.frame or b""), reverse=True)
        message = (
            f"result does not fit the batch answer's {self._max_line}-byte line limit; "
            "send this request on its own"
        )
        for outcome in results:
            if size <= self._max_line:
                return
            assert outcome.frame is not None and outcome.request_id is not None
            error = encode_error(outcome.request_id, INTERNAL_ERROR, message)
            size += len(error) - len(outcome.frame)
            outcome.frame = error
            if outcome.on_dropped is not None:
                outcome.on_dropped()
            outcome.after_sent = outcome.on_dropped = None


def _batch_lines(frames: list[bytes], max_line: int) -> list[bytes]:
    """A batch answer as one array, or as several when even its errors overflow one line
    (a batch of very many entries, or of very long ids): clients match answers by id, and
    each line they get is a JSON-RPC batch answer they can parse."""
    lines: list[bytes] = []
    part: list[bytes] = []
    size = 1  # "[" and, per frame, the frame and the "," or "]" after it
    for frame in frames:
        if part and size + len(frame) + 1 > max_line:
            lines.append(b"[" + b",".join(part) + b"]")
            part, size = [], 1
        part.append(frame)
        size += len(frame) + 1
    if part:
        lines.append(b"[" + b",".join(part) + b"]")
    return lines
