"""Faults in one model or stream never take down the runtime or the other streams."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.reliability.stdio import send, start_runtime

from mlx_serving.testing.client import RuntimeClient


def corrupt_copies(source: Path, root: Path) -> dict[str, Path]:
    variants = {}
    for name in ("truncated", "bad_config", "unknown_type", "no_weights", "bad_json"):
        target = root / name
        if not target.exists():
            shutil.copytree(source, target)
        variants[name] = target
    weights = variants["truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    config = json.loads((source / "config.json").read_text())
    (variants["bad_config"] / "config.json").write_text(
        json.dumps({**config, "hidden_size": "wide"})
    )
    (variants["unknown_type"] / "config.json").write_text(
        json.dumps({**config, "model_type": "no_such_arch"})
    )
    (variants["no_weights"] / "model.safetensors").unlink(missing_ok=True)
    (variants["bad_json"] / "config.json").write_text("{not json")
    return variants


def test_broken_models_fail_to_load_and_the_rest_keeps_working(
    llama_dir: Path, tmp_path: Path
) -> None:
    broken = corrupt_copies(llama_dir, tmp_path)
    with RuntimeClient() as client:
        client.call("load_model", {"model_id": "good", "local_path": str(llama_dir)})
        stream = client.call(
            "generate",
            {"model_id": "good", "prompt": "x", "max_tokens": 300, "temperature": 0},
        )["stream_id"]
        for name, path in broken.items():
            frame = client.request("load_model", {"model_id": name, "local_path": str(path)})
            assert frame["error"]["code"] == -32001, (name, frame)
            assert frame["error"]["data"]["model_id"] == name
            assert "Internal" not in frame["error"]["message"]
        result = client.collect(stream)
        assert result["event"]["finish_reason"] == "length"
        assert len(result["chunks"]) == 300
        state = client.call("runtime/state")
        assert [m["model_id"] for m in state["loaded_models"]] == ["good"]


def test_unloading_a_model_ends_its_streams_with_an_error_only(
    llama_dir: Path, qwen2_dir: Path
) -> None:
    with RuntimeClient() as client:
        client.call("load_model", {"model_id": "a", "local_path": str(llama_dir)})
        client.call("load_model", {"model_id": "b", "local_path": str(qwen2_dir)})
        params = {"prompt": "x", "max_tokens": 3000, "temperature": 0}
        doomed = client.call("generate", {"model_id": "a", **params})["stream_id"]
        kept = client.call("generate", {"model_id": "b", **params, "max_tokens": 200})["stream_id"]
        time.sleep(0.05)
        assert client.call("unload_model", {"model_id": "a"}) == {"success": True}
        assert client.call("unload_model", {"model_id": "a"}) == {"success": True}
        ended = client.collect(doomed)
        assert ended["event"]["event"] == "error"
        assert "unloaded" in ended["event"]["error"]
        assert ended["stats"] is not None
        assert client.collect(kept)["event"]["finish_reason"] == "length"


def test_too_many_streams_are_refused_with_overloaded(llama_dir: Path) -> None:
    with RuntimeClient() as client:
        client.call("load_model", {"model_id": "m", "local_path": str(llama_dir)})
        limit = client.call("runtime/info")["limits"]["max_active_streams"]
        params = {"model_id": "m", "prompt": "x", "max_tokens": 4000, "temperature": 0}
        ids = [client.call("generate", {**params})["stream_id"] for _ in range(limit)]
        refused = client.request("generate", params)
        assert refused["error"]["code"] == -32006
        for stream_id in ids:
            client.call("cancel", {"stream_id": stream_id})
        for stream_id in ids:
            assert client.collect(stream_id)["event"]["finish_reason"] == "cancelled"
        assert client.call("generate", {**params, "max_tokens": 2})["stream_id"]


def test_oversize_frame_is_rejected_without_buffering_and_serving_goes_on() -> None:
    with RuntimeClient() as client:
        limit = client.call("runtime/info")["limits"]["max_frame_bytes"]
        huge = (
            b'{"jsonrpc":"2.0","method":"tokenize","id":1,"params":{"text":"'
            + b"a" * (limit + 10)
            + b'"}}\n'
        )
        before = _rss(client.process.pid)
        client.send_raw(huge)
        info = client.call("runtime/info")
        frames = [json.loads(line) for line in client.stdout_lines]
        oversize = [f for f in frames if f.get("error", {}).get("code") == -32600]
        assert len(oversize) == 1 and oversize[0]["id"] is None
        assert "exceeds" in oversize[0]["error"]["message"]
        # The line was skipped in pieces: memory did not grow by the frame's size.
        assert info["memory"]["rss"] - before < limit // 2


def test_tokenize_beyond_what_an_answer_holds_is_refused_before_the_work(
    llama_dir: Path,
) -> None:
    """Tokenizing costs ~280 bytes of memory per byte of text: a 15 MiB text took 34 s and
    3.2 GiB only to fail on its answer's size. Refused up front, memory stays flat."""
    with RuntimeClient() as client:
        client.call("load_model", {"model_id": "m", "local_path": str(llama_dir)})
        text = "The quick brown fox jumps over the lazy dog. " * (15 * 2**20 // 45)
        before = _rss(client.process.pid)
        started = time.monotonic()
        frame = client.request("tokenize", {"model_id": "m", "text": text}, timeout=120)
        seconds = time.monotonic() - started
        peak = _peak_rss(client.process.pid)
        assert frame["error"]["code"] == -32602, frame["error"]
        assert frame["error"]["data"]["field"] == "text"
        # The frame itself is read and decoded (~2x its size); nothing is tokenized.
        assert peak - before < 128 * 2**20, (before, peak)
        assert seconds < 10
        print(
            f"\n[tokenize 15 MiB] refused in {seconds:.2f} s, peak RSS +{(peak - before) >> 20} MiB"
        )


def test_memory_a_large_request_freed_goes_back_once_the_runtime_idles(
    llama_dir: Path,
) -> None:
    """glibc keeps what is freed for reuse until the runtime idles (release.py). A request
    that runs no stream (here a 15 MiB tokenize, refused) must arm that idle release as a
    stream's end does: its 60 MB stayed resident until some later stream ended. What may
    stay is the decoded text in the request thread's own heap, whose top malloc_trim does
    not reach (glibc_heap.py): about the text's size."""
    env = {"MLX_SERVING_MODELS__IDLE_RELEASE_S": "0.5"}
    with RuntimeClient(env=env) as client:
        client.call("load_model", {"model_id": "m", "local_path": str(llama_dir)})
        text = "The quick brown fox jumps over the lazy dog. " * (15 * 2**20 // 45)
        before = _rss(client.process.pid)
        frame = client.request("tokenize", {"model_id": "m", "text": text}, timeout=120)
        assert frame["error"]["code"] == -32602, frame["error"]
        held = _rss(client.process.pid)
        deadline = time.monotonic() + 10
        while (after := _rss(client.process.pid)) - before > len(text) + 8 * 2**20:
            assert time.monotonic() < deadline, (before >> 20, held >> 20, after >> 20)
            time.sleep(0.1)
        print(
            f"\n[idle release] RSS +{(held - before) >> 20} MiB after the request, "
            f"+{(after - before) >> 20} MiB once idle"
        )


def test_a_batch_answer_stays_within_the_output_line_limit(llama_dir: Path) -> None:
    """Six tokenize answers that each fit the line limit, in one batch that would not:
    the largest give way to errors, and every id is still answered exactly once."""
    line_limit = 1 << 20
    env = {"MLX_SERVING_JSON_RPC__MAX_OUTPUT_LINE_BYTES": str(line_limit)}
    with RuntimeClient(env=env) as client:
        client.call("load_model", {"model_id": "m", "local_path": str(llama_dir)})
        text = ("The quick brown fox jumps over the lazy dog. " * 1400)[:60_000]
        batch = [
            {
                "jsonrpc": "2.0",
                "method": "tokenize",
                "id": f"t{i}",
                "params": {"model_id": "m", "text": text},
            }
            for i in range(6)
        ]
        client.send_raw(json.dumps(batch).encode() + b"\n")
        answers = client.next_batch(timeout=60)
        line = next(raw for raw in client.stdout_lines if raw.startswith(b"["))
        assert len(line) <= line_limit
        by_id = {answer["id"]: answer for answer in answers}
        assert sorted(by_id) == [f"t{i}" for i in range(6)] and len(answers) == 6
        results = [a for a in answers if "result" in a]
        errors = [a for a in answers if "error" in a]
        # Each answer alone is ~300 KB: three fit the 1 MiB line.
        assert len(results) == 3, [len(json.dumps(a)) for a in answers]
        for error in errors:
            assert error["error"]["code"] == -32603
            assert "send this request on its own" in error["error"]["message"]
        # The refused ones do succeed on their own.
        assert client.call("tokenize", {"model_id": "m", "text": text})["tokens"]


def _rss(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def _peak_rss(pid: int) -> int:
    return _rss(pid, "VmHWM")


STREAMS = 4


def test_a_client_that_stops_reading_does_not_grow_runtime_memory(llama_dir: Path) -> None:
    runtime = start_runtime(llama_dir)
    assert runtime.stdin is not None and runtime.stdout is not None
    baseline = _rss(runtime.pid)
    # cumulative text makes frames grow with the stream: O(n^2) bytes, here ~125 MiB in all,
    # every byte of which the runtime would hold if nothing pushed back.
    params = {
        "model_id": "m",
        "prompt": "x",
        "max_tokens": 4000,
        "temperature": 0,
        "include_cumulative_text": True,
        # No end-of-sequence (id 2 in the test tokenizer): every stream runs its full length.
        "logit_bias": {"2": -100},
    }
    for i in range(STREAMS):
        send(runtime.stdin, i + 1, "generate", {**params, "stream_id": f"bp{i}"})
    # The client reads nothing meanwhile: generation must pause, memory must level off.
    time.sleep(6)
    paused = _rss(runtime.pid)
    time.sleep(2)
    stalled = _rss(runtime.pid)
    total_bytes = 0
    finals = 0
    for line in runtime.stdout:
        total_bytes += len(line)
        if b'"stream.event"' in line:
            finals += 1
            if finals == STREAMS:
                break
    runtime.stdin.close()
    assert runtime.wait(10) == 0
    assert finals == STREAMS
    # The streams wrote far more than the runtime let itself hold while nobody read (its
    # growth is the streams' KV caches and working memory plus the 8 MiB outbound queue).
    assert total_bytes > 100 * 2**20
    assert stalled - paused < 4 * 2**20, (paused, stalled)
    assert stalled - baseline < 48 * 2**20, (baseline, stalled, total_bytes)
    print(
        f"\n[backpressure] {STREAMS} streams, reader stalled 8 s: RSS grew "
        f"{(stalled - baseline) / 2**20:.1f} MiB ({(stalled - paused) / 2**20:+.1f} MiB over "
        f"the last 2 s); {total_bytes / 2**20:.0f} MiB written once the reader read again"
    )


@pytest.mark.parametrize("when", ["serving", "starting"])
def test_runtime_exits_when_its_parent_dies(when: str, tmp_path: Path) -> None:
    """The parent is SIGKILLed while our stdin stays open (the pipe's other end lives on
    in this test process): the runtime still notices and exits, leaving no orphan. Killed
    while the runtime is still starting (importing mlx), the parent must count as gone
    too: a watch that took its parent only once started would watch its new reaper."""
    log = tmp_path / "runtime.log"
    launcher = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-m', 'mlx_serving'],"
        f" stdout=subprocess.DEVNULL, stderr=open({str(log)!r}, 'wb'))\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", launcher], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert parent.stdout is not None
    runtime_pid = int(parent.stdout.readline())
    # "starting": the runtime has claimed stdio and logged its BLAS choice, and is now
    # importing mlx (about a second); "serving": it has said it is ready.
    marker = b"MLX Runtime ready" if when == "serving" else b"BLAS bridge"
    deadline = time.monotonic() + 60
    while marker not in log.read_bytes():
        assert time.monotonic() < deadline, "runtime did not start"
        time.sleep(0.005)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    killed = time.monotonic()
    # Serving, it notices within its watch interval (0.25 s); starting, once started.
    deadline = killed + (2 if when == "serving" else 30)
    try:
        while time.monotonic() < deadline:
            if _gone(runtime_pid):
                print(
                    f"\n[timing] parent SIGKILL -> runtime exit ({when}): "
                    f"{(time.monotonic() - killed) * 1000:.0f} ms"
                )
                return
            time.sleep(0.01)
        os.kill(runtime_pid, signal.SIGKILL)
        raise AssertionError("runtime outlived its parent")
    finally:
        assert parent.stdin is not None
        parent.stdin.close()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.startswith("State:") and "Z" in line for line in status)
    except FileNotFoundError:
        return True
