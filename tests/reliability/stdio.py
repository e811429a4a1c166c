"""A runtime process driven over raw pipes, for tests that control every byte and read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import IO, Any


def send(stdin: IO[bytes], request_id: Any, method: str, params: Any = None) -> None:
    frame: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        frame["params"] = params
    stdin.write(json.dumps(frame).encode() + b"\n")
    stdin.flush()


def read_answer(stdout: IO[bytes], request_id: Any) -> dict[str, Any]:
    """Reads up to the answer to `request_id`; notifications before it are skipped."""
    for line in stdout:
        frame = json.loads(line)
        if isinstance(frame, dict) and "method" not in frame and frame["id"] == request_id:
            return frame
    raise AssertionError(f"runtime exited before answering {request_id!r}")


def start_runtime(model_dir: Path, model_id: str = "m") -> subprocess.Popen[bytes]:
    """A runtime with `model_dir` loaded as `model_id`; stderr discarded."""
    runtime = subprocess.Popen(
        [sys.executable, "-m", "mlx_serving"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert runtime.stdin is not None and runtime.stdout is not None
    send(runtime.stdin, "load", "load_model", {"model_id": model_id, "local_path": str(model_dir)})
    assert "result" in read_answer(runtime.stdout, "load")
    return runtime
