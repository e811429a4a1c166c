"""Every request the runtime reads gets exactly one answer, also while it shuts down."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.reliability.stdio import start_runtime

from mlx_serving.dispatch import Deferred, Dispatcher, Method

# Requests that run on the worker pool (tokenize, generate, load), inline ones (state,
# cancel), and ones answered by the dispatcher itself (unknown method, bad params).
MIX = [
    ("tokenize", {"model_id": "m", "text": "hello there"}),
    ("runtime/state", None),
    ("generate", {"model_id": "m", "prompt": "x", "max_tokens": 3, "temperature": 0}),
    ("detokenize", {"model_id": "m", "tokens": [5, 6, 7]}),
    ("no_such_method", {}),
    ("tokenize", {"model_id": "m", "text": 7}),
    ("load_model", {"model_id": "m2", "local_path": "/nonexistent/model"}),
    ("cancel", {"stream_id": "nope"}),
]


def request_lines(prefix: str, count: int) -> tuple[bytes, list[str]]:
    lines = []
    ids = []
    for i in range(count):
        method, params = MIX[i % len(MIX)]
        frame: dict[str, Any] = {"jsonrpc": "2.0", "id": f"{prefix}-{i}", "method": method}
        if params is not None:
            frame["params"] = params
        lines.append(json.dumps(frame).encode())
        ids.append(frame["id"])
    return b"\n".join(lines) + b"\n", ids


def read_to_exit(runtime: subprocess.Popen[bytes], timeout: float = 30) -> list[Any]:
    """Every frame the runtime writes until it exits (0); leaves stdin as it is."""
    assert runtime.stdout is not None
    lines = runtime.stdout.readlines()
    assert runtime.wait(timeout) == 0
    return [json.loads(line) for line in lines]


def answers_by_id(frames: list[Any]) -> Counter[Any]:
    answered: Counter[Any] = Counter()
    for frame in frames:
        for item in frame if isinstance(frame, list) else [frame]:
            if "method" not in item:
                answered[item["id"]] += 1
    return answered


def check_streams_end_once(frames: list[Any]) -> None:
    started = {
        f["result"]["stream_id"]
        for f in frames
        if isinstance(f, dict)
        and isinstance(f.get("result"), dict)
        and "stream_id" in f["result"]
        and "started_at" in f["result"]
    }
    finals = Counter(
        f["params"]["stream_id"]
        for f in frames
        if isinstance(f, dict) and f.get("method") == "stream.event"
    )
    assert set(finals) == started
    assert all(count == 1 for count in finals.values()), finals


@pytest.mark.parametrize("count", [1, 40, 400])
def test_requests_racing_stdin_eof_are_each_answered_once(llama_dir: Path, count: int) -> None:
    runtime = start_runtime(llama_dir)
    assert runtime.stdin is not None
    payload, ids = request_lines("eof", count)
    runtime.stdin.write(payload)
    runtime.stdin.close()  # EOF right behind the requests
    frames = read_to_exit(runtime)
    answered = answers_by_id(frames)
    assert {i: answered[i] for i in ids if answered[i] != 1} == {}
    check_streams_end_once(frames)


@pytest.mark.parametrize("count", [40, 400])
def test_requests_right_after_shutdown_are_each_answered_once(llama_dir: Path, count: int) -> None:
    runtime = start_runtime(llama_dir)
    assert runtime.stdin is not None
    before, before_ids = request_lines("before", count)
    after, after_ids = request_lines("after", count)
    shutdown = b'{"jsonrpc":"2.0","id":"bye","method":"shutdown"}\n'
    # One write: the runtime finds the requests behind `shutdown` already in its stdin.
    runtime.stdin.write(before + shutdown + after)
    runtime.stdin.flush()
    frames = read_to_exit(runtime)  # stdin stays open: the runtime ends on its own
    answered = answers_by_id(frames)
    assert answered["bye"] == 1
    assert {i: answered[i] for i in before_ids + after_ids if answered[i] != 1} == {}
    # Nothing behind `shutdown` runs: it is refused (unknown methods are still named so).
    late = [f for f in frames if isinstance(f, dict) and str(f.get("id")).startswith("after-")]
    codes = Counter(f["error"]["code"] if "error" in f else "result" for f in late)
    assert set(codes) == {-32099, -32601}, codes
    check_streams_end_once(frames)


def test_a_request_written_after_the_runtime_exited_fails_to_send_not_silently(
    llama_dir: Path,
) -> None:
    """Past the exit nothing can answer; the client must see the pipe closed."""
    runtime = start_runtime(llama_dir)
    assert runtime.stdin is not None
    runtime.stdin.write(b'{"jsonrpc":"2.0","id":"bye","method":"shutdown"}\n')
    runtime.stdin.flush()
    runtime.wait(10)
    time.sleep(0.05)
    with pytest.raises(BrokenPipeError):
        runtime.stdin.write(b'{"jsonrpc":"2.0","id":1,"method":"runtime/state"}\n')
        runtime.stdin.flush()


class _NoParams(msgspec.Struct, kw_only=True):
    pass


def test_a_handler_slower_than_the_grace_is_refused_once_and_its_late_result_dropped() -> None:
    release = threading.Event()
    dropped = threading.Event()

    def slow(_: _NoParams) -> Deferred:
        release.wait(10)
        return Deferred("late", after_sent=lambda: None, on_dropped=dropped.set)

    sent: list[bytes] = []
    with ThreadPoolExecutor(2) as pool:
        dispatcher = Dispatcher({"slow": Method(_NoParams, slow)}, sent.append, pool, 8, 1 << 20)
        dispatcher.handle_line(b'{"jsonrpc":"2.0","id":1,"method":"slow"}')
        started = time.monotonic()
        dispatcher.close(grace=0.2)
        assert 0.2 <= time.monotonic() - started < 1
        dispatcher.handle_line(b'{"jsonrpc":"2.0","id":2,"method":"slow"}')
        release.set()
        assert dropped.wait(5)
    answers = [json.loads(frame) for frame in sent]
    assert answers == [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": -32099, "message": "runtime is shutting down"},
        },
        {
            "jsonrpc": "2.0",
            "id": 2,
            "error": {"code": -32099, "message": "runtime is shutting down"},
        },
    ]
