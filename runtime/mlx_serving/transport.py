"""Lines and bytes: the stdin line reader, the single stdout writer and the stdout guard.

Nothing here knows JSON-RPC; it moves newline-terminated frames in and out.
"""

from __future__ import annotations

import logging
import os
import select
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

# The process at the other end of stdio, taken when this module is first imported: before
# the slow imports (mlx), so a parent that dies while the runtime starts up still counts
# as gone (a watch started later would take the reaper it was re-parented to for it).
PARENT_PID = os.getppid()


def claim_stdout() -> int:
    """Reserve the real stdout for protocol frames and point everything else at stderr.

    Returns a private duplicate of fd 1; fd 1 itself (what C libraries write to) and
    `sys.stdout` (what Python code prints to) are redirected to stderr, so a chatty
    library can never corrupt the stream.
    """
    protocol_fd = os.dup(1)
    os.set_inheritable(protocol_fd, False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol_fd


@dataclass(frozen=True)
class OversizeLine:
    """A line longer than the limit; only its size is kept."""

    size: int


class LineReader:
    """Reads newline-delimited frames from an fd, never buffering more than `max_bytes`
    of one line: an oversize line is skipped to its newline and reported by size.

    When `wake_fd` becomes readable the reader stops, but first takes what the client had
    already written (up to `drain_bytes`, without waiting for more), so that the requests
    in it are still read and answered rather than lost in the pipe."""

    def __init__(
        self, fd: int, max_bytes: int, wake_fd: int | None = None, drain_bytes: int = 1 << 22
    ) -> None:
        self._fd = fd
        self._max = max_bytes
        self._wake_fd = wake_fd
        self._drain_left: int | None = None  # set once woken
        self._drain_bytes = drain_bytes

    def __iter__(self) -> Iterator[bytes | OversizeLine]:
        buffer = bytearray()
        discarding = 0  # bytes of an oversize line seen so far, 0 when not discarding
        while True:
            chunk = self._read()
            if not chunk:
                if buffer and not discarding:
                    yield bytes(buffer)
                elif discarding:
                    yield OversizeLine(discarding)
                return
            start = 0
            while True:
                newline = chunk.find(b"\n", start)
                piece = chunk[start:] if newline < 0 else chunk[start:newline]
                if discarding:
                    discarding += len(piece)
                elif len(buffer) + len(piece) > self._max:
                    discarding = len(buffer) + len(piece)
                    buffer.clear()
                else:
                    buffer += piece
                if newline < 0:
                    break
                if discarding:
                    yield OversizeLine(discarding)
                    discarding = 0
                else:
                    yield bytes(buffer)
                    buffer.clear()
                start = newline + 1

    def _read(self) -> bytes:
        if self._wake_fd is not None and self._drain_left is None:
            ready, _, _ = select.select([self._fd, self._wake_fd], [], [])
            if self._wake_fd in ready:
                self._drain_left = self._drain_bytes
        if self._drain_left is not None:
            ready, _, _ = select.select([self._fd], [], [], 0)
            if not ready or self._drain_left <= 0:
                return b""
        try:
            chunk = os.read(self._fd, 1 << 16)
        except OSError:
            return b""
        if self._drain_left is not None:
            self._drain_left -= len(chunk)
        return chunk


class FrameWriter:
    """The only writer of protocol frames. Frames queue up to `max_queued_bytes` (so a
    client that stops reading applies backpressure to the producers instead of growing
    memory) and one thread writes them, joining what is queued into writes of at most
    `burst_bytes`.

    When nothing is queued and the pipe has room, a sender writes its frames itself: a
    decoding stream sends one small frame per token, and handing each to the writer
    thread costs two thread wake-ups and two GIL hand-offs per token, which on fast
    hardware is a large part of a token's time. Only writes that cannot block go that way
    (at most PIPE_BUF bytes into a pipe that polls writable); the rest queue as before."""

    def __init__(self, fd: int, max_queued_bytes: int, burst_bytes: int = 32 * 1024) -> None:
        self._fd = fd
        self._frames: deque[bytes | None] = deque()
        self._queued_bytes = 0
        self._max_bytes = max_queued_bytes
        self._burst = burst_bytes
        self._cond = threading.Condition()
        self._broken = False
        # True while the writer thread writes what it took off the queue: a sender may not
        # write past it then, or its frames would overtake the queued ones.
        self._writing = False
        self._writable = _writability_probe(fd)
        # Once set (shutting down), no send waits past this monotonic time for a client
        # that does not read: what does not fit by then is dropped.
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._run, name="stdout-writer", daemon=True)
        self._thread.start()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def send(self, frame: bytes) -> None:
        """Queue one frame (without its newline); blocks while the queue is full."""
        self.send_many([frame])

    def send_many(self, frames: list[bytes]) -> None:
        """Queue frames that belong together (one scheduler step) in one go."""
        if not frames:
            return  # joined, nothing would still be a line: a blank one
        size = sum(len(f) + 1 for f in frames)
        with self._cond:
            # A batch larger than the whole budget still goes through once the queue is
            # empty; otherwise it could never be written.
            while self._queued_bytes and self._queued_bytes + size > self._max_bytes:
                if self._broken:
                    return
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    log.warning("client not reading at shutdown: dropped %d frames", len(frames))
                    return
                self._cond.wait(0.5 if self._deadline is None else 0.05)
            if self._broken:
                return
            if not self._frames and not self._writing:
                data = b"\n".join(frames) + b"\n"
                written = self._write_now(data)
                if written == len(data):
                    return
                self._frames.append(data[written:])
                self._queued_bytes += len(data) - written
            else:
                self._frames.extend(f + b"\n" for f in frames)
                self._queued_bytes += size
            self._cond.notify_all()

    def _write_now(self, data: bytes) -> int:
        """Writes what can be written without blocking (called under the lock, queue
        empty); returns the bytes written."""
        if self._writable is None or not self._writable():
            return 0
        try:
            return os.write(self._fd, data[:PIPE_BUF])
        except OSError:
            return 0  # the writer thread meets the error again and reports it

    def set_deadline(self, seconds: float) -> None:
        """From now on, give a client that does not read at most `seconds` more: senders
        blocked on the full queue give up then, so shutdown never waits on the client."""
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._cond.notify_all()

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (until the deadline, if one is set), then stop."""
        with self._cond:
            self._frames.append(None)
            self._cond.notify_all()
            if self._deadline is not None:
                timeout = max(self._deadline - time.monotonic(), 0.0)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._frames:
                    self._cond.wait()
                parts: list[bytes] = []
                size = 0
                closing = False
                while self._frames and size < self._burst:
                    frame = self._frames.popleft()
                    if frame is None:
                        closing = True
                        break
                    parts.append(frame)
                    size += len(frame)
                self._writing = bool(parts)
            if parts:
                self._write(b"".join(parts))
            with self._cond:
                self._writing = False
                self._queued_bytes -= size
                self._cond.notify_all()
            if closing:
                return

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._broken:
            try:
                written = os.write(self._fd, view)
            except OSError:
                # The reader is gone (EPIPE); stdin EOF follows and shuts the runtime down.
                with self._cond:
                    self._broken = True
                    self._cond.notify_all()
                log.warning("stdout closed by the client")
                return
            view = view[written:]


# POSIX: a write of at most this many bytes to a pipe with room is never split or blocked.
PIPE_BUF = 4096


def _writability_probe(fd: int) -> Callable[[], bool] | None:
    """A zero-timeout check that `fd` (a pipe or socket) takes PIPE_BUF bytes without
    blocking; None for anything else (a terminal can block a write however small)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) or not hasattr(select, "poll"):
        return None
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    blocked = select.POLLERR | select.POLLHUP | select.POLLNVAL

    def writable() -> bool:
        events = poller.poll(0)
        return bool(events) and not events[0][1] & blocked

    return writable
