"""What request threads leave for the engine thread, and what one pass takes of it.

Request threads write here under the scheduler's condition (a started stream, a retired
model, the stop, a wake-up); the engine thread reads it under the same condition, once
per pass, in the critical section where it waited. Most passes of a decoding stream find
nothing, and then cost no more than the check.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Container
from typing import NamedTuple

from .between_steps import BetweenSteps
from .loader import LoadedModel
from .pending_streams import PendingStreams, Verdict
from .stream import StreamRequest


class Taken(NamedTuple):
    admitted: list[StreamRequest]  # oldest arrival first
    stopping: bool
    retired: list[LoadedModel]
    verdicts: dict[str, Verdict]  # on streams the engine thread runs


NOTHING_TAKEN = Taken([], False, [], {})  # shared: a pass only reads an empty one


class Intake:
    def __init__(self, pending: PendingStreams, between_steps: BetweenSteps) -> None:
        self._pending = pending
        self._between_steps = between_steps
        self.admitted: list[StreamRequest] = []  # started, not taken by a pass yet
        # Taken for admission but not admitted yet: unload must still see them.
        self.admitting: deque[StreamRequest] = deque()
        self.retired: list[LoadedModel] = []  # models whose batch is still to drop
        self.stopping = False
        self.woken = False  # a pass now even with nothing to do
        self.ended: Verdict | None = None  # set when the engine thread serves no more

    def has_work(self, running: Collection[str]) -> bool:
        # A retired model wakes the thread too: its batch holds the weights until dropped.
        return bool(
            self.admitted
            or running
            or self.stopping
            or self.retired
            or self.woken
            or self._between_steps.pending()
        )

    def unstarted(self) -> list[StreamRequest]:
        """Streams started but not admitted yet, oldest taken first."""
        return [*self.admitting, *self.admitted]

    def take(self, running: Container[str]) -> Taken:
        """What this pass must handle; `running`, the ids of the streams it runs."""
        if not (self.admitted or self.retired or self.stopping or self._pending.judged()):
            return NOTHING_TAKEN
        admitted, self.admitted = self.admitted, []
        # Prepared on a pool, requests read together may start in either order.
        admitted.sort(key=lambda request: request.arrival)
        self.admitting.extend(admitted)
        retired, self.retired = self.retired, []
        verdicts = self._pending.take_verdicts(running)
        return Taken(admitted, self.stopping, retired, verdicts)
