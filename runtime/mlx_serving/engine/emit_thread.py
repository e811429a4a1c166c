"""The engine thread's notifications, handed to the sink on a thread of their own.

Telemetry, JSON encoding and the pipe write of a token's chunk are Python work that the
engine thread would otherwise do between two model steps, where every microsecond adds
to the token's time (on a fast GPU the step is bound by the CPU that builds and launches
it). MLX releases the GIL while it launches and waits for a step, so this thread does
that work meanwhile. Batches keep their order; at most `max_batches` wait, after which
the engine thread waits too (a client that stops reading still slows the engine down).
"""

from __future__ import annotations

import logging
import threading
from queue import SimpleQueue

from .stream import StreamSink
from .stream_output import Outgoing, made

log = logging.getLogger(__name__)


class EmitThread:
    def __init__(self, sink: StreamSink, max_batches: int = 256) -> None:
        self._sink = sink
        self._max_batches = max_batches
        self._queue: SimpleQueue[list[Outgoing] | None] = SimpleQueue()
        # Posted is written by posters (one at a time: the caller serializes them), emitted
        # by this thread; their difference is what waits.
        self._posted = 0
        self._emitted = 0
        self._room = threading.Condition()
        self._waiting = False  # a poster waits for room
        # What the sink raised, raised again to the next poster: the engine thread then
        # ends its streams with the error, as when it called the sink itself.
        self._failure: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="stream-emit", daemon=True)
        self._thread.start()

    def post(self, notifications: list[Outgoing]) -> None:
        """Queue a batch (copied: the caller reuses its list). One caller at a time.
        Raises what the sink raised on an earlier batch, once, after queueing this one."""
        self._posted += 1
        self._queue.put(list(notifications))
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if self._posted - self._emitted > self._max_batches:
            with self._room:
                self._waiting = True
                while self._posted - self._emitted > self._max_batches:
                    if not self._thread.is_alive():
                        break
                    self._room.wait(0.1)
                self._waiting = False

    def close(self, timeout: float) -> None:
        """Emit what is queued (for at most `timeout` seconds), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while self._emit_queued():
            pass

    def _emit_queued(self) -> bool:
        """Wait for a batch and emit it with those queued behind it; False once closed.
        (Its own frame: nothing emitted stays referenced while the thread waits, so a
        model whose last stream ended here can go.)"""
        batch = self._queue.get()
        if batch is None:
            return False
        taken = 1
        # Batches that queued up meanwhile go out as one (one write), still in order.
        while not self._queue.empty():
            more = self._queue.get()
            if more is None:
                self._emit(batch, taken)
                return False
            batch.extend(more)
            taken += 1
        self._emit(batch, taken)
        return True

    def _emit(self, batch: list[Outgoing], taken: int) -> None:
        try:
            self._sink.emit(made(batch))
        except Exception as exc:
            log.exception("could not emit %d notifications", len(batch))
            self._failure = exc
        self._emitted += taken
        if self._waiting:
            with self._room:
                self._room.notify_all()
