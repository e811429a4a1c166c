"""A small synchronous client of the runtime process, for the demo, tests and benchmarks.

It speaks the real stdio protocol to a spawned `python -m mlx_serving`; nothing is mocked.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any


class RemoteError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code: int = error.get("code", 0)
        self.error = error


class RuntimeClient:
    def __init__(
        self,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
    ) -> None:
        command = [sys.executable, "-m", "mlx_serving", *(args or [])]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Offline unless asked otherwise: a fuzzed download_model must never reach the
            # real Hub (tests serve their own, see testing/fake_hub.py).
            env={"HF_HUB_OFFLINE": "1", **os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.stdout_lines: list[bytes] = []
        self.stderr_lines: list[str] = []
        self.responses: dict[Any, Any] = {}
        self.batches: list[list[Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self._streams: dict[str, queue.Queue[dict[str, Any]]] = defaultdict(queue.Queue)
        self._cond = threading.Condition()
        # Far from the small ids tests and fuzzers send by hand, so answers never collide.
        self._ids = itertools.count(1_000_000_001)
        self._ready = threading.Event()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if wait_ready and not self._ready.wait(60):
            raise TimeoutError("runtime did not become ready:\n" + "\n".join(self.stderr_lines))

    # -- reading ---------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout_lines.append(line)
            frame = json.loads(line)
            with self._cond:
                if isinstance(frame, list):
                    self.batches.append(frame)
                elif "method" in frame:
                    self.notifications.append(frame)
                    stream_id = frame["params"].get("stream_id")
                    # runtime.event names streams too, but is no part of their output.
                    if stream_id is not None and frame["method"].startswith("stream."):
                        self._streams[stream_id].put(frame)
                else:
                    self.responses[json.dumps(frame["id"])] = frame
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stderr_lines.append(line)
            if line == "MLX Runtime ready":
                self._ready.set()

    # -- requests --------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, method: str, params: Any = None, request_id: Any = None) -> Any:
        request_id = next(self._ids) if request_id is None else request_id
        frame: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
        if params is not None:
            frame["params"] = params
        self.send_raw(json.dumps(frame).encode() + b"\n")
        return request_id

    def response(self, request_id: Any, timeout: float = 60) -> dict[str, Any]:
        key = json.dumps(request_id)
        deadline = time.monotonic() + timeout
        with self._cond:
            while key not in self.responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no response to {request_id!r}")
                if not self._threads[0].is_alive():
                    raise ConnectionError(f"runtime exited before answering {request_id!r}")
                self._cond.wait(min(remaining, 0.5))
            frame: dict[str, Any] = self.responses.pop(key)
            return frame

    def request(self, method: str, params: Any = None, timeout: float = 60) -> dict[str, Any]:
        return self.response(self.send(method, params), timeout)

    def call(self, method: str, params: Any = None, timeout: float = 60) -> Any:
        frame = self.request(method, params, timeout)
        if "error" in frame:
            raise RemoteError(frame["error"])
        return frame["result"]

    def next_batch(self, timeout: float = 30) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.batches:
                if time.monotonic() > deadline:
                    raise TimeoutError("no batch response")
                self._cond.wait(0.2)
            return self.batches.pop(0)

    # -- streams ---------------------------------------------------------------------------

    def stream_events(self, stream_id: str, timeout: float = 120) -> Iterator[dict[str, Any]]:
        """The notifications of one stream up to and including its final event."""
        deadline = time.monotonic() + timeout
        # Under the lock: the reader thread may be creating this stream's queue right now,
        # and two threads both missing the key would each make one (a frame then lost).
        with self._cond:
            events = self._streams[stream_id]
        while True:
            frame = events.get(timeout=max(deadline - time.monotonic(), 0.01))
            yield frame
            if frame["method"] == "stream.event":
                return

    def generate(self, params: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        """Run one stream to its end; returns its chunks, stats, final event and text."""
        stream_id = self.call("generate", params)["stream_id"]
        return self.collect(stream_id, timeout)

    def collect(self, stream_id: str, timeout: float = 120) -> dict[str, Any]:
        chunks: list[dict[str, Any]] = []
        tool_calls: list[dict[str, Any]] = []
        stats: dict[str, Any] | None = None
        event: dict[str, Any] = {}
        for frame in self.stream_events(stream_id, timeout):
            params = frame["params"]
            if frame["method"] == "stream.chunk":
                chunks.extend(params["tokens"] if params.get("is_batch") else [params])
            elif frame["method"] == "stream.tool_call":
                tool_calls.append(params)
            elif frame["method"] == "stream.stats":
                stats = params
            else:
                event = params
        return {
            "stream_id": stream_id,
            "chunks": chunks,
            "tokens": [c["token_id"] for c in chunks],
            # The answer; reasoning sent apart (`reasoning: "separate"`) is under "reasoning".
            "text": "".join(c["token"] for c in chunks if not c.get("reasoning")),
            "reasoning": "".join(c["token"] for c in chunks if c.get("reasoning")),
            "tool_calls": tool_calls,
            "stats": stats,
            "event": event,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def close(self, timeout: float = 10) -> int:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for thread in self._threads:
            thread.join(2)
        return self.process.returncode

    def __enter__(self) -> RuntimeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
