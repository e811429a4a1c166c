"""Model work other than streams, run on the engine thread between two batch steps.

All MLX work of the runtime happens on that thread; an embedding batch, say, takes its
turn there, so it delays the running streams by one step's worth instead of competing with
them for the device. The queue shares the scheduler's condition: submitting wakes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class BetweenSteps:
    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._work: list[tuple[Callable[[], Any], Future[Any]]] = []  # under _cond

    def submit(self, work: Callable[[], T], timeout: float | None = None) -> T:
        """Queue `work` (the caller must not hold the condition) and wait for its result."""
        done: Future[Any] = Future()
        with self._cond:
            self._work.append((work, done))
            self._cond.notify()
        result: T = done.result(timeout)
        return result

    def pending(self) -> bool:
        """Whether work waits (the caller holds the condition)."""
        return bool(self._work)

    def run(self) -> None:
        """Run everything queued so far, oldest first (on the engine thread)."""
        with self._cond:
            work, self._work = self._work, []
        for task, done in work:
            if not done.set_running_or_notify_cancel():
                continue
            try:
                done.set_result(task())
            except BaseException as exc:  # the caller's error, raised in the caller
                done.set_exception(exc)
