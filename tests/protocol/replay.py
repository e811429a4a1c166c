"""Replays the transcripts of protocol/fixtures against a runtime process."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mlx_serving.testing.client import RuntimeClient

FIXTURES = Path(__file__).resolve().parents[2] / "protocol" / "fixtures"

PLACEHOLDERS = {
    "<any>": lambda v: True,
    "<int>": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "<number>": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "<string>": lambda v: isinstance(v, str),
    "<bool>": lambda v: isinstance(v, bool),
}


def matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str) and expected in PLACEHOLDERS:
        return PLACEHOLDERS[expected](actual)
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(v, actual[k]) for k, v in expected.items())
        )
    if isinstance(expected, list):
        # A batch answer may list its entries in any order.
        if not isinstance(actual, list) or len(expected) != len(actual):
            return False
        remaining = list(actual)
        for item in expected:
            hit = next((i for i, a in enumerate(remaining) if matches(item, a)), None)
            if hit is None:
                return False
            remaining.pop(hit)
        return True
    return bool(type(expected) is type(actual) and expected == actual)


def substitute(value: Any, variables: dict[str, str]) -> Any:
    text = json.dumps(value)
    for name, replacement in variables.items():
        text = text.replace(name, replacement)
    return json.loads(text)


def replay(client: RuntimeClient, name: str, variables: dict[str, str], timeout: float = 30) -> int:
    """Run every step; returns the number of steps. Frames must match the step's expected
    frames one to one, in order for frames of the same stream."""
    steps = [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]
    for number, step in enumerate(steps):
        sent = substitute(step["send"], variables)
        line = sent if isinstance(sent, str) else json.dumps(sent)
        start = len(client.stdout_lines)
        client.send_raw(line.encode() + b"\n")
        # A probe after every step proves that nothing beyond `expect` came back.
        probe_id = f"probe-{number}"
        client.send("runtime/state", request_id=probe_id)
        expected = list(step["expect"])
        deadline = time.monotonic() + timeout
        while True:
            frames = [json.loads(raw) for raw in client.stdout_lines[start:]]
            if any(isinstance(f, dict) and f.get("id") == probe_id for f in frames):
                if len(frames) >= len(expected) + 1:
                    break
            assert time.monotonic() < deadline, f"step {number} of {name}: timed out, got {frames}"
            time.sleep(0.02)
        frames = [f for f in frames if not (isinstance(f, dict) and f.get("id") == probe_id)]
        for frame in frames:
            hit = next((i for i, e in enumerate(expected) if matches(e, frame)), None)
            assert hit is not None, (
                f"step {number} of {name}: unexpected {frame}; wanted {expected}"
            )
            expected.pop(hit)
        assert not expected, f"step {number} of {name}: missing {expected}"
        # Clear what the client filed away, so later steps start clean.
        client.responses.clear()
        client.batches.clear()
    return len(steps)
