"""One runtime process: stdio transport → dispatcher → handlers → engine, and its lifecycle.

The process ends on stdin EOF, SIGTERM/SIGINT or the `shutdown` method: every stream is
ended with its final event, queued frames are written, then it exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from .config import Settings, settings_from_environment
from .dispatch import Dispatcher, NotificationSink
from .dispatch_errors import encode_error
from .distributed.engine import DistributedEngine
from .distributed.group import Group, GroupStartError, start_group
from .distributed.hostfile import HostfileError
from .engine import Engine
from .engine.memory import effective_settings, memory_budget
from .glibc_heap import trim_heaps
from .handlers import RuntimeContext, build_methods
from .handlers.context import NativeStatus
from .protocol.envelope import NULL_ID
from .protocol.errors import INTERNAL_ERROR, INVALID_REQUEST
from .telemetry import Telemetry
from .transport import PARENT_PID, FrameWriter, LineReader, OversizeLine

log = logging.getLogger(__name__)

READY_LINE = "MLX Runtime ready"
# How long requests still running at shutdown may take to answer before they are answered
# "shutting down"; short, since the runtime must exit within a second of stdin EOF.
SHUTDOWN_GRACE_S = 0.3
# How long a client that is not reading stdout can hold up the exit: past this, frames
# that do not fit the outbound queue are dropped.
SHUTDOWN_WRITE_S = 3.0


class Runtime:
    def __init__(
        self,
        settings: Settings,
        protocol_fd: int,
        stdin_fd: int = 0,
        native: NativeStatus | None = None,
        group: Group | None = None,
    ) -> None:
        # Before any engine or scheduler reads them: the prompt caches held to their share
        # of the memory budget (runtime/info reports these effective settings).
        settings = effective_settings(settings, memory_budget(settings))
        limits = settings.limits
        self.settings = settings
        self.writer = FrameWriter(protocol_fd, limits.outbound_queue_bytes)
        self.telemetry = Telemetry(settings.telemetry)
        notifications = NotificationSink(self.writer, self.telemetry)
        self.telemetry.attach(notifications.emit)
        self.engine = (
            Engine(settings, notifications)
            if group is None
            else DistributedEngine(settings, notifications, group)
        )
        self.engine.scheduler.on_step = self.telemetry.engine_step
        self.exit_code = 0
        if group is not None:
            group.on_failure(self._exit_after_failure)
        self._wake_read, self._wake_write = os.pipe()
        self._stopping = threading.Event()
        self.context = RuntimeContext(
            engine=self.engine,
            settings=settings,
            request_shutdown=self.request_shutdown,
            notify=notifications.emit,
            native=native or NativeStatus(),
            telemetry=self.telemetry,
            restart_count=_restart_count(os.environ.get("MLX_SERVING_RESTART_COUNT")),
        )
        self.executor = ThreadPoolExecutor(limits.request_workers, thread_name_prefix="request")
        self.dispatcher = Dispatcher(
            build_methods(self.context),
            self.writer.send,
            self.executor,
            max_pending=limits.max_active_streams * 4,
            max_output_line_bytes=limits.max_output_line_bytes,
            observer=self.telemetry if self.telemetry.active else None,
            on_quiet=self.engine.residency.requests_settled,
        )
        self.reader = LineReader(stdin_fd, limits.max_frame_bytes, wake_fd=self._wake_read)

    def request_shutdown(self) -> None:
        """Safe from any thread and from signal handlers."""
        if not self._stopping.is_set():
            self._stopping.set()
            # What the reader still takes from stdin is answered -32099, not run.
            self.dispatcher.stop_accepting()
            os.write(self._wake_write, b"x")

    def _exit_after_failure(self, reason: str) -> None:
        """A group that lost a rank serves nothing more: once the client had time to read
        the errors, exit non-zero so that its supervisor restarts the whole group."""
        delay = self.settings.distributed.exit_after_failure_s
        if delay is not None:
            self.exit_code = 3
            timer = threading.Timer(delay, self.request_shutdown)
            timer.daemon = True
            timer.start()

    def watch_parent(self, interval: float = 0.25) -> None:
        """Shut down when the parent dies. A dead parent usually closes our stdin, but not
        when it passed its pipe on to another process; re-parenting always shows."""
        parent = PARENT_PID

        def watch() -> None:
            while not self._stopping.wait(interval):
                if os.getppid() != parent:
                    log.warning("parent process %d is gone; shutting down", parent)
                    self.request_shutdown()
                    return

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()

    def serve(self) -> int:
        self.watch_parent(self.settings.python_runtime.parent_watch_interval_s)
        print(READY_LINE, file=sys.stderr, flush=True)
        for line in self.reader:
            if isinstance(line, OversizeLine):
                self.writer.send(_oversize_error(line, self.settings.limits.max_frame_bytes))
                # Its first max_frame_bytes were buffered before it was known to be too
                # long; glibc keeps what is freed (glibc_heap.py), so give that back now.
                trim_heaps()
                continue
            try:
                self.dispatcher.handle_line(line)
            except Exception:
                # The dispatcher answers every error itself; should one slip through, the
                # client still gets an answer and the loop goes on.
                log.exception("unexpected dispatcher failure")
                self.writer.send(encode_error(NULL_ID, INTERNAL_ERROR, "Internal error"))
            # A line can be max_frame_bytes; it would stay alive until the next one arrives.
            del line
        self.close()
        return self.exit_code

    def close(self) -> None:
        log.info("shutting down")
        self.writer.set_deadline(SHUTDOWN_WRITE_S)
        self.telemetry.runtime_stopping(self.engine.active_streams(), len(self.engine.models))
        # First every request gets its answer (streams started by `generate` are then
        # known to the scheduler), then the scheduler ends the streams.
        self.dispatcher.close(grace=SHUTDOWN_GRACE_S)
        self.engine.shutdown()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.writer.close()


def _restart_count(value: str | None) -> int:
    """How many times the supervising client restarted the runtime: it sets
    MLX_SERVING_RESTART_COUNT when it spawns one (the TS client does); 0 otherwise."""
    try:
        return max(int(value or 0), 0)
    except ValueError:
        log.warning("ignoring MLX_SERVING_RESTART_COUNT=%r: not a whole number", value)
        return 0


def _oversize_error(line: OversizeLine, limit: int) -> bytes:
    return encode_error(
        NULL_ID, INVALID_REQUEST, f"Invalid Request: frame of {line.size} bytes exceeds {limit}"
    )


def run(
    protocol_fd: int, settings: Settings | None = None, native: NativeStatus | None = None
) -> int:
    settings = settings or settings_from_environment()
    group = None
    if settings.distributed.hostfile:
        try:
            group = start_group(settings)
        except (GroupStartError, HostfileError) as exc:
            print(f"mlx-serving: cannot start the distributed group: {exc}", file=sys.stderr)
            return 2
    runtime = Runtime(settings, protocol_fd, native=native or NativeStatus(), group=group)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runtime.request_shutdown())
    code = runtime.serve()
    sys.stderr.flush()
    # Worker threads may still sit in a long model load; their answers can no longer be
    # read, and waiting for them would keep an orphan alive.
    os._exit(code)
