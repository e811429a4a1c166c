"""The one way a scheduler's notifications reach the sink, and the book of which started
streams still owe their final event.

Every started stream gets exactly one final `stream.event`. Normally the engine thread
sends it; when the thread is stuck inside a long step at shutdown, `end_unfinished` sends
the rest from the stopping thread, and from then on the engine thread's output is dropped,
so that no chunk ever follows a stream's final event.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from ..protocol.notifications import StreamCompleted, StreamFailed
from .emit_thread import EmitThread
from .stream import StreamRequest, StreamSink
from .stream_output import Outgoing, TextWork, final_events, made


class StreamOutbox:
    def __init__(self, sink: StreamSink, on_thread: bool = False) -> None:
        """`on_thread`: hand the batches to the sink on a thread of their own
        (emit_thread.py), in the same order."""
        self._thread = EmitThread(sink) if on_thread else None
        self._sink = sink
        # Orders emits against end_unfinished; `_closed` is written under it.
        self._emit_lock = threading.Lock()
        self._closed = False
        # Started streams whose final event has not reached the sink (under _book_lock,
        # which is only ever taken inside _emit_lock or alone).
        self._book_lock = threading.Lock()
        self._unfinished: dict[str, StreamRequest] = {}

    def track(self, request: StreamRequest) -> None:
        """A stream was started: it owes a final event from now on."""
        with self._book_lock:
            self._unfinished[request.stream_id] = request

    def emit(self, out: list[Outgoing]) -> None:
        with self._emit_lock:
            if self._closed:
                return
            self._send(out)
            ended = [stream_id for stream_id in map(_ends, out) if stream_id is not None]
            if ended:
                with self._book_lock:
                    for stream_id in ended:
                        self._unfinished.pop(stream_id, None)

    def end_unfinished(self, generated: Mapping[str, int]) -> None:
        """End every stream still owing its final event (completed, cancelled), and drop
        whatever is emitted after this. `generated`: tokens each stream already sent."""
        with self._emit_lock:
            self._closed = True
            with self._book_lock:
                requests, self._unfinished = list(self._unfinished.values()), {}
            out: list[Outgoing] = []
            for request in requests:
                count = generated.get(request.stream_id, 0)
                final_events(request, out, reason="cancelled", generated=count)
            self._send(out)

    def _send(self, out: list[Outgoing]) -> None:
        if self._thread is not None:
            self._thread.post(out)
        else:
            self._sink.emit(made(out))

    def close(self, timeout: float = 2.0) -> None:
        """Let what was emitted reach the sink (for at most `timeout` seconds). What is
        emitted later (a stream started after the scheduler stopped still gets its final
        event) goes to the sink at once."""
        with self._emit_lock:
            if self._thread is not None:
                self._thread.close(timeout)
                self._thread = None


def _ends(item: Outgoing) -> str | None:
    """The stream whose final event `item` is or makes."""
    if type(item) is TextWork:
        return item.ends
    params = item[1]
    return params.stream_id if isinstance(params, StreamCompleted | StreamFailed) else None
