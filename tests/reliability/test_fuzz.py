"""Arbitrary frames never crash the runtime, never go unanswered, never corrupt stdout."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from tests.reliability.fuzzing import (
    Fuzzer,
    deeply_nested_requests,
    envelope_variants,
    out_of_vocabulary_ids,
    oversize_tokenizer_requests,
    raw_lines,
    wrong_typed_requests,
)

from mlx_serving.testing.client import RuntimeClient

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def fuzzer(llama_dir: Path) -> Iterator[Fuzzer]:
    with RuntimeClient() as client:
        client.call("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
        fuzzer = Fuzzer(client)
        yield fuzzer
        # Whatever streams the fuzz started, each ends with exactly one final event.
        for stream_id in list(fuzzer.acknowledged_streams):
            client.call("cancel", {"stream_id": stream_id})
        finals: dict[str, int] = {}
        for stream_id in fuzzer.acknowledged_streams:
            try:
                for frame in client.stream_events(stream_id, timeout=120):
                    if frame["method"] == "stream.event":
                        finals[stream_id] = finals.get(stream_id, 0) + 1
            except queue.Empty:
                log = "\n".join(client.stderr_lines[-60:])
                pytest.fail(f"stream {stream_id} never ended; runtime log:\n{log}")
        assert all(count == 1 for count in finals.values())
        assert set(finals) == fuzzer.acknowledged_streams
        for line in client.stdout_lines:
            json.loads(line)


@FUZZ
@given(frame=wrong_typed_requests())
def test_wrong_typed_params_for_every_method(fuzzer: Fuzzer, frame: dict[str, Any]) -> None:
    answers = fuzzer.exchange(json.dumps(frame).encode(), expect_reply_to=frame["id"])
    mine = [a for a in answers if isinstance(a, dict) and a.get("id") == frame["id"]]
    assert len(mine) == 1
    if "error" in mine[0]:
        code = mine[0]["error"]["code"]
        assert code in (-32602, -32001, -32003, -32005, -32006, -32099), mine[0]
        if code == -32602:
            assert mine[0]["error"]["data"]["type"] == "ValidationError"


@FUZZ
@given(frame=envelope_variants())
def test_arbitrary_envelopes(fuzzer: Fuzzer, frame: Any) -> None:
    answers = fuzzer.exchange(json.dumps(frame).encode())
    if isinstance(frame, list):
        assert len(answers) <= 1
    else:
        assert len(answers) <= 1
        if answers and "error" in answers[0]:
            assert answers[0]["error"]["code"] != -32603, answers[0]


@FUZZ
@given(line=raw_lines)
def test_random_bytes_truncated_lines_and_invalid_utf8(fuzzer: Fuzzer, line: bytes) -> None:
    answers = fuzzer.exchange(line)
    assert len(answers) <= 1
    for answer in answers:
        items = answer if isinstance(answer, list) else [answer]
        for item in items:
            if "error" in item:
                assert item["error"]["code"] != -32603, item


@settings(FUZZ, max_examples=40)
@given(case=deeply_nested_requests())
def test_deep_nesting_is_answered_with_the_readable_id(
    fuzzer: Fuzzer, case: tuple[Any, bytes]
) -> None:
    request_id, line = case
    answers = fuzzer.exchange(line, expect_reply_to=request_id)
    assert len(answers) == 1
    assert answers[0]["id"] == request_id
    assert answers[0]["error"]["code"] == -32600, answers[0]


@settings(FUZZ, max_examples=24)
@given(case=oversize_tokenizer_requests())
def test_oversize_tokenizer_input_is_refused_naming_the_field(
    fuzzer: Fuzzer, case: tuple[str, dict[str, Any], str]
) -> None:
    method, params, field = case
    request_id = f"oversize-{fuzzer.frames_sent}"
    frame = {"jsonrpc": "2.0", "method": method, "id": request_id, "params": params}
    [answer] = fuzzer.exchange(json.dumps(frame).encode(), expect_reply_to=request_id)
    if method == "batch_tokenize":
        [item] = answer["result"]["results"]
        assert item["error_code"] == -32602 and item["error_data"]["field"] == field, item
    else:
        assert answer["error"]["code"] == -32602, answer
        assert answer["error"]["data"]["field"] == field


@settings(FUZZ, max_examples=60)
@given(case=out_of_vocabulary_ids())
def test_token_ids_outside_the_vocabulary_are_refused_in_every_field(
    fuzzer: Fuzzer, case: tuple[str, dict[str, Any], str]
) -> None:
    """MLX indexes without bounds checks: one unchecked id could crash the process."""
    method, params, field = case
    request_id = f"vocab-{fuzzer.frames_sent}"
    frame = {"jsonrpc": "2.0", "method": method, "id": request_id, "params": params}
    [answer] = fuzzer.exchange(json.dumps(frame).encode(), expect_reply_to=request_id)
    assert answer["error"]["code"] == -32602, answer
    assert answer["error"]["data"]["field"].startswith(field), answer


@pytest.mark.parametrize(
    "line",
    [
        b'{"jsonrpc":"2.0","method":"tokenize","id":1,"params":{"a":'
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"jsonrpc":"2.0","method":"runtime/info","id":1e400}',
        b'{"jsonrpc":"2.0","method":"generate","id":7,"params":{"model_id":"llama","max_tokens":1e400}}',
        b'{"jsonrpc":"2.0","method":"runtime/info","id":"\xff\xfe"}',
        b"\xff\xfe\xfd",
        b'{"jsonrpc":"2.0","method":"runtime/info","id":123456789012345678901234567890}',
    ],
)
def test_edge_frames_get_one_answer(fuzzer: Fuzzer, line: bytes) -> None:
    answers = fuzzer.exchange(line)
    assert len(answers) == 1


def test_report_frames_tried(fuzzer: Fuzzer, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n[fuzz] {fuzzer.frames_sent} frames tried against one runtime process")
    assert fuzzer.frames_sent >= 400
