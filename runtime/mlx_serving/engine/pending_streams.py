"""The streams this runtime has promised, text and vision alike, and the verdicts that reach
them from request threads.

A stream id is claimed before its request is acknowledged (so two requests can never both
be told they own it, and the stream limit holds), and released once its final event is
out. Meanwhile a request thread can cancel the stream or fail it (its model was unloaded or
replaced), whether it runs yet or not: the verdict waits here until the thread that runs
the stream (the scheduler's engine thread, or the vision lane's) takes it. That thread is
then the only one that acts on a stream: nothing outside it writes a running stream's
state.

Everything here is under the scheduler's condition (a re-entrant lock); the vision lane
takes it inside its own lock, never the other way round.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Container
from dataclasses import dataclass

from ..protocol.errors import InvalidParams, Overloaded


@dataclass(frozen=True)
class Verdict:
    """Why a stream must end now: `failure` when its model is gone, else it was cancelled."""

    failure: str | None = None


class PendingStreams:
    def __init__(self, cond: threading.Condition, max_active: int) -> None:
        self._cond = cond
        self._max_active = max_active
        self._reserved: set[str] = set()  # under _cond
        self._verdicts: dict[str, Verdict] = {}  # under _cond; only for reserved ids
        # Told each stream id released, from any thread, outside the lock (the memory
        # ledger frees its KV). Set once while the engine is built, before any stream.
        self.on_release: Callable[[str], None] | None = None

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
            self._verdicts.pop(stream_id, None)
        if self.on_release is not None:
            self.on_release(stream_id)

    def __len__(self) -> int:
        with self._cond:
            return len(self._reserved)

    def __contains__(self, stream_id: str) -> bool:
        with self._cond:
            return stream_id in self._reserved

    def cancel(self, stream_id: str) -> bool:
        """False when no such stream is active. A failure already decided stays."""
        with self._cond:
            if stream_id not in self._reserved:
                return False
            self._verdicts.setdefault(stream_id, Verdict())
            self._cond.notify()
            return True

    def fail(self, stream_id: str, reason: str) -> None:
        with self._cond:
            if stream_id in self._reserved:
                self._verdicts[stream_id] = Verdict(failure=reason)
                self._cond.notify()

    def judged(self) -> bool:
        """Whether any stream has a verdict (the caller holds the condition)."""
        return bool(self._verdicts)

    def take_verdict(self, stream_id: str) -> Verdict | None:
        with self._cond:
            return self._verdicts.pop(stream_id, None)

    def take_verdicts(self, stream_ids: Container[str]) -> dict[str, Verdict]:
        """The verdicts on any of `stream_ids` (the streams the calling thread runs)."""
        with self._cond:
            if not self._verdicts:
                return {}
            taken = {s: v for s, v in self._verdicts.items() if s in stream_ids}
            for stream_id in taken:
                del self._verdicts[stream_id]
            return taken
