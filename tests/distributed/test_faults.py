"""A rank that dies or stops answering never hangs rank 0: every live stream ends with an
error event within seconds, every later request is answered with a clear error, and rank 0
exits (status 3) so that a supervisor restarts the group."""

from __future__ import annotations

import os
import queue
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from tests.distributed.group import start_group

from mlx_serving.testing.client import RemoteError, RuntimeClient

EXIT_AFTER_FAILURE_S = 3.0


def failing_group(hostfile: Path, qwen_dir: Path, strategy: str) -> tuple[RuntimeClient, int]:
    """A loaded group with a short step bound; returns it and rank 1's pid."""
    client = start_group(
        hostfile, step_timeout_s="2", exit_after_failure_s=str(EXIT_AFTER_FAILURE_S)
    )
    client.call(
        "load_model",
        {"model_id": "q", "local_path": str(qwen_dir), "distributed": {"strategy": strategy}},
        timeout=120,
    )
    ranks = client.call("runtime/info")["distributed"]["ranks"]
    return client, int(ranks[1]["pid"])


def long_stream(i: int) -> dict[str, Any]:
    return {"model_id": "q", "prompt": f"stream {i}", "max_tokens": 4000, "temperature": 0}


def assert_fails_cleanly(client: RuntimeClient, stream_ids: list[str], since: float) -> None:
    for stream_id in stream_ids:
        try:
            result = client.collect(stream_id, timeout=15)
        except queue.Empty:
            log = "\n".join(client.stderr_lines[-60:])
            pytest.fail(f"stream {stream_id} of {stream_ids} never ended; runtime log:\n{log}")
        assert result["event"]["event"] == "error", result["event"]
        assert "distributed group failed" in result["event"]["error"]
        assert result["stats"] is not None  # stats, then the final event, as always
    assert time.monotonic() - since < 5.0, "streams took too long to end"
    with pytest.raises(RemoteError, match="distributed group failed") as later:
        client.call("generate", long_stream(99))
    assert later.value.code == -32099
    with pytest.raises(RemoteError, match="restarted"):
        client.call("load_model", {"model_id": "q2", "local_path": "/nowhere"})
    state = client.call("runtime/state")["distributed"]
    assert state["state"] == "failed" and state["error"]
    # Then rank 0 exits non-zero, for its supervisor to restart the whole group.
    assert client.process.wait(EXIT_AFTER_FAILURE_S + 10) == 3


@pytest.mark.parametrize("strategy", ["pipeline", "tensor"])
def test_killing_rank_1_mid_stream_ends_every_stream_with_an_error(
    hostfile: Path, qwen_dir: Path, strategy: str
) -> None:
    client, rank1 = failing_group(hostfile, qwen_dir, strategy)
    try:
        ids = [client.call("generate", long_stream(i))["stream_id"] for i in range(3)]
        next(client.stream_events(ids[0]))  # decoding
        killed_at = time.monotonic()
        os.kill(rank1, signal.SIGKILL)
        # A request racing the failure is answered too: acknowledged and then ended, or
        # refused; never left without an answer.
        racing = client.request("generate", long_stream(50), timeout=15)
        if "result" in racing:
            ids.append(racing["result"]["stream_id"])
        else:
            assert racing["error"]["code"] == -32099
        assert_fails_cleanly(client, ids, killed_at)
    finally:
        client.close()


def test_a_stuck_rank_is_given_up_after_the_step_bound(hostfile: Path, qwen_dir: Path) -> None:
    client, rank1 = failing_group(hostfile, qwen_dir, "pipeline")
    try:
        ids = [client.call("generate", long_stream(i))["stream_id"] for i in range(2)]
        next(client.stream_events(ids[0]))
        stopped_at = time.monotonic()
        os.kill(rank1, signal.SIGSTOP)  # alive, connected, silent
        assert_fails_cleanly(client, ids, stopped_at)
        # Rank 0 ended it when it gave the group up.
        deadline = time.monotonic() + 5
        while _alive(rank1) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(rank1)
    finally:
        if _alive(rank1):
            os.kill(rank1, signal.SIGKILL)
        client.close()


def test_a_rank_that_cannot_start_fails_the_start(hostfile: Path) -> None:
    client = RuntimeClient(
        args=["--hostfile", str(hostfile)],
        env={"MLX_SERVING_DISTRIBUTED__PYTHON": "/nonexistent/python"},
        wait_ready=False,
    )
    assert client.process.wait(60) == 2
    client.close()
    assert any("cannot start rank 1" in line for line in client.stderr_lines)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
