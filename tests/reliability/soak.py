"""Pipelined fuzzing of one runtime process, for soak runs of 10^5 frames and more.

The hypothesis tests (test_fuzz.py) send one frame at a time and wait for its answer; that
is thorough but slow. Here the frames of soak_frames.py go out in windows of 500, and each
frame knows what it must get back, so the check is exact:

- a request with an id the runtime can read is answered exactly once, with that id;
- a request with a broken envelope is answered once, with its id or with null;
- a line that is no request (garbage) is answered once with null; a blank line or a
  notification is not answered;
- every stream a `generate` started ends with exactly one final `stream.event`.

Within a window the reader thread answers garbage before it reads the window's closing
probe (an inline `runtime/state`), so once the probe's answer is in, the window's null
answers are all there to be counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.soak_frames import FrameSource


class RuntimeProcess:
    """A runtime process whose stdout lines are kept raw (parsing is the caller's) and
    whose stderr keeps only a tail: cheap enough for 10^5 frames."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlx_serving"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # A fuzzed download_model must never reach the real Hub.
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[bytes] = []
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._ready = threading.Event()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._ready.wait(60):
            raise TimeoutError("runtime did not start:\n" + "\n".join(self.stderr_tail))

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stderr_tail.append(line)
            if line == "MLX Runtime ready":
                self._ready.set()

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def call(self, method: str, params: Any, request_id: str, timeout: float = 60) -> Any:
        start = len(self.lines)
        frame = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        self.send(json.dumps(frame).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for raw in self.lines[start:]:
                item = json.loads(raw)
                if isinstance(item, dict) and item.get("id") == request_id:
                    assert "result" in item, item
                    return item["result"]
            time.sleep(0.01)
        raise TimeoutError(f"no answer to {method}")

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(30)

    @property
    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


@dataclass
class SoakReport:
    frames: int = 0
    requests: int = 0
    answers: int = 0
    null_answers: int = 0
    streams: int = 0
    unanswered: int = 0
    answered_twice: int = 0
    rss_start: int = 0
    rss_max: int = 0
    seconds: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    rss_samples: list[int] = field(default_factory=list)  # after each window

    def _tenth(self, k: int) -> list[int]:
        n = len(self.rss_samples)
        return sorted(self.rss_samples[n * k // 10 : max(n * (k + 1) // 10, n * k // 10 + 1)])

    @property
    def rss_warm(self) -> int:
        """Median RSS over the second tenth of the run: caches and pools have filled."""
        tenth = self._tenth(1)
        return tenth[len(tenth) // 2]

    @property
    def rss_growth(self) -> int:
        """Peak RSS after the first tenth, above the warm level: spikes included."""
        return max(self.rss_samples[len(self.rss_samples) // 10 :]) - self.rss_warm

    @property
    def rss_trend(self) -> int:
        """Median of the last tenth minus median of the second: what grows with frames."""
        tenth = self._tenth(9)
        return tenth[len(tenth) // 2] - self.rss_warm

    def summary(self) -> str:
        mib = 2**20
        return (
            f"[soak] {self.frames} frames in {self.seconds:.0f} s "
            f"({self.frames / max(self.seconds, 1e-9):.0f}/s; {dict(self.kinds)}): "
            f"{self.requests} requests, {self.answers} answered by id, {self.null_answers} "
            f"null answers, {self.streams} streams; unanswered {self.unanswered}, answered "
            f"twice {self.answered_twice}; RSS start {self.rss_start / mib:.0f} MiB, warm "
            f"{self.rss_warm / mib:.0f} MiB, max {self.rss_max / mib:.0f} MiB "
            f"(peak above warm {self.rss_growth / mib:.1f} MiB, trend "
            f"{self.rss_trend / mib:+.1f} MiB); by tenths: "
            + " ".join(
                f"{self.rss_samples[len(self.rss_samples) * k // 10] / mib:.0f}" for k in range(10)
            )
            + f" {self.rss_samples[-1] / mib:.0f} MiB"
        )


def soak(
    runtime: RuntimeProcess,
    frames: int,
    model_id: str,
    seed: int = 0,
    window: int = 500,
    window_timeout: float = 120,
) -> SoakReport:
    """Push `frames` frames through one runtime; raises AssertionError at the first window
    whose answers are wrong, or when the runtime dies."""
    source = FrameSource(seed, model_id)
    report = SoakReport(rss_start=runtime.rss, rss_max=runtime.rss)
    answered: Counter[str] = Counter()
    every_must: set[str] = set()
    finals: dict[str, int] = {}  # stream id -> final events seen
    cursor = len(runtime.lines)
    started = time.monotonic()
    window_number = 0

    def read() -> tuple[int, set[str]]:
        """Consumes new stdout lines: (null answers, probe ids) among them."""
        nonlocal cursor
        lines = runtime.lines[cursor:]
        cursor += len(lines)
        nulls = 0
        probes: set[str] = set()
        for raw in lines:
            item = json.loads(raw)
            if isinstance(item, dict) and "method" in item:
                if item["method"] == "stream.event":
                    stream_id = item["params"]["stream_id"]
                    finals[stream_id] = finals.get(stream_id, 0) + 1
                continue
            entries = item if isinstance(item, list) else [item]
            ids = [e["id"] for e in entries if isinstance(e.get("id"), str)]
            if not ids:
                nulls += 1
            for entry in entries:
                answer_id = entry.get("id")
                if not isinstance(answer_id, str):
                    continue
                if answer_id.startswith("probe-"):
                    probes.add(answer_id)
                    continue
                answered[answer_id] += 1
                result = entry.get("result")
                if isinstance(result, dict) and "started_at" in result:
                    finals.setdefault(result["stream_id"], 0)
                    source.started_streams.append(result["stream_id"])
        return nulls, probes

    while report.frames < frames:
        batch = [source.next() for _ in range(min(window, frames - report.frames))]
        report.frames += len(batch)
        for frame in batch:
            report.kinds[frame.kind] += 1
            report.requests += len(frame.ids) + len(frame.id_or_null)
        must = {i for f in batch for i in f.ids}
        every_must |= must
        either = {i for f in batch for i in f.id_or_null}
        nulls_expected = sum(f.nulls for f in batch)
        probe = f"probe-{window_number}"
        window_number += 1
        probe_line = json.dumps({"jsonrpc": "2.0", "id": probe, "method": "runtime/state"})
        runtime.send(b"\n".join(f.line for f in batch) + b"\n" + probe_line.encode() + b"\n")
        deadline = time.monotonic() + window_timeout
        nulls = 0
        probed = False
        while True:
            new_nulls, probes = read()
            nulls += new_nulls
            probed = probed or probe in probes
            if probed and all(answered[i] for i in must):
                break
            if runtime.process.poll() is not None:
                raise AssertionError("runtime died:\n" + "\n".join(runtime.stderr_tail))
            missing = sorted(i for i in must if not answered[i])
            assert time.monotonic() < deadline, (
                f"window {window_number}: no answer to {missing[:10]}"
            )
            time.sleep(0.002)
        by_id = sum(1 for i in either if answered[i])
        assert nulls == nulls_expected + len(either) - by_id, (
            f"window {window_number}: {nulls} null answers, expected "
            f"{nulls_expected} + {len(either) - by_id}"
        )
        report.null_answers += nulls
        report.rss_samples.append(runtime.rss)
        report.rss_max = max(report.rss_max, report.rss_samples[-1])
        del source.started_streams[:-50]

    # Streams still running are cancelled; then every stream has ended exactly once.
    for stream_id in [s for s, seen in finals.items() if not seen]:
        runtime.send(
            json.dumps(
                {"jsonrpc": "2.0", "method": "cancel", "params": {"stream_id": stream_id}}
            ).encode()
            + b"\n"
        )
    deadline = time.monotonic() + window_timeout
    while not all(finals.values()) and time.monotonic() < deadline:
        read()
        if runtime.process.poll() is not None:
            raise AssertionError("runtime died:\n" + "\n".join(runtime.stderr_tail))
        time.sleep(0.01)
    report.seconds = time.monotonic() - started
    report.streams = len(finals)
    report.answers = sum(answered.values())
    report.unanswered = sum(1 for i in every_must if not answered[i])
    report.answered_twice = sum(1 for count in answered.values() if count > 1)
    assert all(seen == 1 for seen in finals.values()), {s: n for s, n in finals.items() if n != 1}
    return report
