"""How fast the runtime reacts: stdin EOF to process exit, cancel to the stream's final
event. Each test prints its figures (run with `-s`; docs/RELIABILITY.md records them)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from tests.reliability.stdio import send, start_runtime

from mlx_serving.testing.client import RuntimeClient

LONG = {"prompt": "x", "max_tokens": 4000, "temperature": 0.8, "logit_bias": {"2": -100}}


def _figures(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (
        f"[timing] {label}: median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms "
        f"over {len(ms)} runs"
    )


def _eof_to_exit(model_dir: Path, streams: int) -> float:
    runtime = start_runtime(model_dir)
    assert runtime.stdin is not None and runtime.stdout is not None
    for i in range(streams):
        send(runtime.stdin, i, "generate", {"model_id": "m", **LONG})
    # Every stream is running (its first token is out) before stdin closes.
    running: set[str] = set()
    while len(running) < streams:
        frame = json.loads(runtime.stdout.readline())
        if frame.get("method") == "stream.chunk":
            running.add(frame["params"]["stream_id"])
    closed = time.monotonic()
    runtime.stdin.close()
    # Read on, as a client does: the exit must not wait on a full stdout pipe.
    finals = sum(1 for line in runtime.stdout if b'"stream.event"' in line)
    code = runtime.wait(10)
    elapsed = time.monotonic() - closed
    assert code == 0
    assert finals == streams
    return elapsed


def test_stdin_eof_to_exit(llama_dir: Path) -> None:
    idle = [_eof_to_exit(llama_dir, streams=0) for _ in range(3)]
    busy = [_eof_to_exit(llama_dir, streams=4) for _ in range(3)]
    print("\n" + _figures("stdin EOF -> exit, idle", idle))
    print(_figures("stdin EOF -> exit, 4 streams generating", busy))
    assert max(idle + busy) < 1.0


def test_cancel_to_final_event(llama_dir: Path) -> None:
    with RuntimeClient() as client:
        client.call("load_model", {"model_id": "m", "local_path": str(llama_dir)})
        alone: list[float] = []
        beside: list[float] = []
        for others in (0, 7):
            background = [
                client.call("generate", {"model_id": "m", **LONG})["stream_id"]
                for _ in range(others)
            ]
            for _ in range(10):
                stream_id = client.call("generate", {"model_id": "m", **LONG})["stream_id"]
                events = client.stream_events(stream_id)
                assert next(events)["method"] == "stream.chunk"
                cancelled = time.monotonic()
                client.send("cancel", {"stream_id": stream_id})
                final = next(f for f in events if f["method"] == "stream.event")
                (beside if others else alone).append(time.monotonic() - cancelled)
                assert final["params"]["finish_reason"] == "cancelled"
            for stream_id in background:
                client.call("cancel", {"stream_id": stream_id})
                assert client.collect(stream_id)["event"]["finish_reason"] == "cancelled"
    print("\n" + _figures("cancel -> final stream.event, stream alone", alone))
    print(_figures("cancel -> final stream.event, beside 7 other streams", beside))
    assert max(alone + beside) < 1.0
