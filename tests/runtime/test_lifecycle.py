"""Process lifecycle: stdout stays clean, EOF and signals end the process promptly."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from mlx_serving.testing import make_model
from mlx_serving.testing.client import RuntimeClient

NOISY_MODULE = """
import os, sys
print("python print from model code")
sys.stdout.write("sys.stdout write\\n")
os.write(1, b"C-level write to fd 1\\n")
from mlx_lm.models.llama import Model, ModelArgs
"""


@pytest.fixture(scope="module")
def noisy_model_dir(model_root: Path) -> Path:
    """A model whose custom architecture file prints to stdout while it is imported."""
    path = make_model(model_root / "noisy", "llama", seed=3)
    config = json.loads((path / "config.json").read_text())
    config["model_file"] = "noisy_model.py"
    (path / "config.json").write_text(json.dumps(config))
    (path / "noisy_model.py").write_text(NOISY_MODULE)
    return path


def test_library_printing_during_load_does_not_corrupt_stdout(noisy_model_dir: Path) -> None:
    # The noise comes from the model's own code, which only runs where the config allows it.
    with RuntimeClient(env={"MLX_SERVING_SECURITY__ALLOW_TRUST_REMOTE_CODE": "true"}) as client:
        refused = client.request(
            "load_model", {"model_id": "n", "local_path": str(noisy_model_dir)}
        )
        assert refused["error"]["code"] == -32001
        assert "trust_remote_code" in refused["error"]["message"]
        client.call(
            "load_model",
            {"model_id": "n", "local_path": str(noisy_model_dir), "trust_remote_code": True},
        )
        result = client.generate(
            {"model_id": "n", "prompt": "hi", "max_tokens": 3, "temperature": 0}
        )
        assert len(result["chunks"]) == 3
    # Every stdout line is a JSON-RPC frame; the noise went to stderr.
    for line in client.stdout_lines:
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert any("C-level write to fd 1" in line for line in client.stderr_lines)
    assert any("python print from model code" in line for line in client.stderr_lines)


def _exit_within(client: RuntimeClient, seconds: float) -> float:
    start = time.monotonic()
    code = client.process.wait(seconds)
    assert code == 0
    return time.monotonic() - start


def test_stdin_eof_exits_zero_within_a_second_and_ends_streams(llama_dir: Path) -> None:
    client = RuntimeClient()
    client.call("load_model", {"model_id": "m", "local_path": str(llama_dir)})
    client.call(
        "generate",
        {"model_id": "m", "prompt": "x", "max_tokens": 4000, "stream_id": "s", "temperature": 0},
    )
    time.sleep(0.1)
    assert client.process.stdin is not None
    client.process.stdin.close()
    assert _exit_within(client, 1.0) < 1.0
    client.close()
    final = [n for n in client.notifications if n["method"] == "stream.event"]
    assert [f["params"]["finish_reason"] for f in final] == ["cancelled"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_shut_down_cleanly(llama_dir: Path, signum: int) -> None:
    client = RuntimeClient()
    client.call("load_model", {"model_id": "m", "local_path": str(llama_dir)})
    client.call(
        "generate",
        {"model_id": "m", "prompt": "x", "max_tokens": 4000, "stream_id": "s", "temperature": 0},
    )
    time.sleep(0.1)
    client.process.send_signal(signum)
    assert _exit_within(client, 1.0) < 1.0
    client.close()
    assert [
        n["params"]["stream_id"] for n in client.notifications if n["method"] == "stream.event"
    ] == ["s"]


def test_shutdown_method_answers_then_exits(llama_dir: Path) -> None:
    client = RuntimeClient()
    assert client.call("shutdown") == {"success": True}
    assert _exit_within(client, 2.0) < 2.0
    client.close()


def test_runs_as_a_script_path_like_compat_clients_spawn_it() -> None:
    import subprocess
    import sys

    import mlx_serving

    script = Path(mlx_serving.__file__).parent / "__main__.py"
    probe = b'{"jsonrpc":"2.0","method":"runtime/info","id":"readiness-probe"}\n'
    done = subprocess.run(
        [sys.executable, str(script)], input=probe, capture_output=True, timeout=60
    )
    assert done.returncode == 0
    frame = json.loads(done.stdout.splitlines()[0])
    assert frame["id"] == "readiness-probe" and "capabilities" in frame["result"]
    assert b"MLX Runtime ready" in done.stderr
