"""Model work other than streams, run on the engine thread between two batch steps.

All MLX work of the runtime happens on that thread; an embedding batch, say, takes its
turn there, so it delays the running streams by one step's worth instead of competing with
them for the device. A distributed runtime's loads and unloads take the same turn. The
queue shares the scheduler's condition: posting wakes the engine thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class EngineStopped(RuntimeError):
    """The engine thread takes no more work: the runtime is shutting down, or a failed
    distributed group made it give up."""


class EngineAbandoned(BaseException):
    """Raised on the engine thread once another thread has taken its streams over (a
    distributed group given up while the thread was stuck inside a collective): the thread
    leaves at once, touching nothing. A BaseException, so that no handler of model errors
    on the way stops it."""


_Work = tuple[Callable[[], Any], "Future[Any]"]


class BetweenSteps:
    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._queued: list[_Work] = []  # under _cond
        self._running: list[_Work] = []  # under _cond: the batch the engine thread runs

    def post(self, work: Callable[[], T]) -> Future[T]:
        """Queue `work` (the caller holds the condition and has checked that the engine
        thread still takes work); wait on the future outside the condition."""
        done: Future[T] = Future()
        self._queued.append((work, done))
        self._cond.notify()
        return done

    def pending(self) -> bool:
        """Whether work waits (the caller holds the condition)."""
        return bool(self._queued)

    def run(self) -> None:
        """Run everything queued so far, oldest first (on the engine thread)."""
        if not self._queued:
            # Read without the lock, every pass: work posted meanwhile waits one pass (the
            # engine thread sees it under the lock before it sleeps).
            return
        with self._cond:
            if not self._queued:
                return
            work, self._queued = self._queued, []
            self._running = work
        try:
            for task, done in work:
                if done.done() or not done.set_running_or_notify_cancel():
                    continue  # failed by `fail_all` meanwhile
                try:
                    result = task()
                except BaseException as exc:  # the caller's error, raised in the caller
                    _settle(done, exc)
                    if isinstance(exc, EngineAbandoned):
                        raise
                else:
                    _settle(done, None, result)
        finally:
            with self._cond:
                self._running = []

    def fail_all(self, error: Exception) -> None:
        """Fail whatever is queued or running (the engine thread is given up; the caller
        holds the condition)."""
        for _, done in self._queued + self._running:
            _settle(done, error)
        self._queued = []


def _settle(done: Future[Any], error: BaseException | None, result: Any = None) -> None:
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)
