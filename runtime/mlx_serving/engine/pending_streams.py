"""The streams a scheduler has promised but may not have admitted yet.

A stream id is claimed before its request is acknowledged (so two requests can never both
be told they own it, and the stream limit holds), and between acknowledgement and
admission a stream can already be cancelled or lose its model: those verdicts wait here
until the engine thread admits it. Everything is under the scheduler's condition.
"""

from __future__ import annotations

import threading

from ..protocol.errors import InvalidParams, Overloaded


class PendingStreams:
    def __init__(self, cond: threading.Condition, max_active: int) -> None:
        self._cond = cond
        self._max_active = max_active
        self._reserved: set[str] = set()
        self._cancel_on_admit: set[str] = set()
        self._fail_on_admit: dict[str, str] = {}

    def reserve(self, stream_id: str) -> None:
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
            self._fail_on_admit.pop(stream_id, None)

    def __len__(self) -> int:
        with self._cond:
            return len(self._reserved)

    def __contains__(self, stream_id: str) -> bool:
        with self._cond:
            return stream_id in self._reserved

    # The caller holds the condition for these.

    def cancel_on_admission(self, stream_id: str) -> None:
        self._cancel_on_admit.add(stream_id)

    def fail_on_admission(self, stream_id: str, reason: str) -> None:
        self._fail_on_admit[stream_id] = reason

    def take_verdicts(self, stream_id: str) -> tuple[bool, str | None]:
        """(cancelled, failure reason) decided before the stream was admitted."""
        cancelled = stream_id in self._cancel_on_admit
        self._cancel_on_admit.discard(stream_id)
        return cancelled, self._fail_on_admit.pop(stream_id, None)
