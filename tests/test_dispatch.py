"""The dispatcher alone, with fake methods: ids of frames it cannot serve, and batch answers
against the line limit."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest

from mlx_serving.arrival import arrival
from mlx_serving.dispatch import Deferred, Dispatcher, Method


class _Echo(msgspec.Struct, kw_only=True):
    text: str = ""


class Harness:
    def __init__(self, max_line: int) -> None:
        self.sent: list[bytes] = []
        self.started: list[str] = []
        self.dropped: list[str] = []
        self._pool = ThreadPoolExecutor(2)

        def echo(params: _Echo) -> dict[str, str]:
            return {"text": params.text}

        def start(params: _Echo) -> Deferred:
            return Deferred(
                {"text": params.text},
                after_sent=lambda: self.started.append(params.text),
                on_dropped=lambda: self.dropped.append(params.text),
            )

        methods = {"echo": Method(_Echo, echo, inline=True), "start": Method(_Echo, start)}
        self.dispatcher = Dispatcher(methods, self.sent.append, self._pool, 64, max_line)

    def answers(self, line: bytes) -> list[Any]:
        self.dispatcher.handle_line(line)
        deadline = time.monotonic() + 10
        while not self.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        return [json.loads(frame) for frame in self.sent]

    def close(self) -> None:
        self._pool.shutdown()


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(max_line=4096)
    yield h
    h.close()


DEEP = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize(
    "line",
    [
        b'{"jsonrpc":"2.0","method":"echo","id":"r1","ignored":' + DEEP + b"}",
        b'{"jsonrpc":"2.0","method":"echo","params":{"text":"x","extra":' + DEEP + b'},"id":"r1"}',
        b'{"deep":' + DEEP + b',"jsonrpc":"2.0","method":"echo","id":"r1"}',
        b'{"jsonrpc":"2.0","method":"echo","id":"r1","x":'
        + b'{"a":' * 5000
        + b"1"
        + b"}" * 5000
        + b"}",
    ],
)
def test_a_frame_nested_too_deeply_is_answered_with_its_id(harness: Harness, line: bytes) -> None:
    [answer] = harness.answers(line)
    assert answer["id"] == "r1"
    assert answer["error"]["code"] == -32600
    assert "nested too deeply" in answer["error"]["message"]


def test_a_deep_frame_without_a_readable_id_is_answered_with_null(harness: Harness) -> None:
    [answer] = harness.answers(b'{"jsonrpc":"2.0","method":"echo","id":' + DEEP + b"}")
    assert answer["id"] is None
    assert answer["error"]["code"] == -32600


def test_a_deep_entry_costs_a_batch_only_its_own_answer(harness: Harness) -> None:
    line = (
        b'[{"jsonrpc":"2.0","method":"echo","id":1,"params":{"text":"a"}},'
        b'{"jsonrpc":"2.0","method":"echo","id":2,"x":' + DEEP + b"},"
        b'{"jsonrpc":"2.0","method":"echo","params":{"text":"n"}},' + DEEP + b"]"
    )
    [batch] = harness.answers(line)
    by_id = {json.dumps(a["id"]): a for a in batch}
    assert len(batch) == 3  # the notification gets none
    assert by_id["1"]["result"] == {"text": "a"}
    assert by_id["2"]["error"]["code"] == -32600
    assert by_id["null"]["error"]["code"] == -32600


def test_a_batch_answer_too_long_for_one_line_refuses_its_largest_results(
    harness: Harness,
) -> None:
    # Six results of ~1 KB each: each fits the 4 KiB line alone, the six together do not.
    entries = [
        {"jsonrpc": "2.0", "method": "start", "id": i, "params": {"text": str(i) * (900 + i)}}
        for i in range(6)
    ]
    [batch] = harness.answers(json.dumps(entries).encode())
    assert len(harness.sent[0]) <= 4096
    answers = {a["id"]: a for a in batch}
    assert sorted(answers) == list(range(6))
    refused = sorted(i for i, a in answers.items() if "error" in a)
    # The largest go first, only as many as needed; their work is dropped, not started.
    assert refused == [4, 5]
    for i in refused:
        assert answers[i]["error"]["code"] == -32603
        assert "line limit" in answers[i]["error"]["message"]
    assert sorted(harness.started) == [str(i) * (900 + i) for i in range(4)]
    assert sorted(harness.dropped) == [str(i) * (900 + i) for i in refused]


def test_a_batch_whose_errors_alone_overflow_a_line_is_answered_in_several_arrays(
    harness: Harness,
) -> None:
    harness.dispatcher.handle_line(b"[" + b",".join([b"1"] * 200) + b"]")
    lines = harness.sent
    assert len(lines) > 1
    assert all(len(line) <= 4096 for line in lines)
    answers = [a for line in lines for a in json.loads(line)]
    assert len(answers) == 200
    assert all(a["error"]["code"] == -32600 for a in answers)


def test_pool_methods_see_the_order_their_requests_were_read_in() -> None:
    """The first of two requests read together may finish preparing last; it still
    carries the earlier arrival (engine/scheduler.py admits by it)."""
    seen: dict[str, int] = {}
    release_first = threading.Event()

    def record(params: _Echo) -> dict[str, str]:
        if params.text == "first":
            assert release_first.wait(10)
        seen[params.text] = arrival()
        if params.text == "second":
            release_first.set()
        return {"text": params.text}

    sent: list[bytes] = []
    with ThreadPoolExecutor(2) as pool:
        dispatcher = Dispatcher({"record": Method(_Echo, record)}, sent.append, pool, 64, 4096)
        for request_id, text in enumerate(("first", "second")):
            frame = {"jsonrpc": "2.0", "method": "record", "params": {"text": text}}
            dispatcher.handle_line(json.dumps({**frame, "id": request_id}).encode())
        deadline = time.monotonic() + 10
        while len(sent) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [json.loads(frame)["result"]["text"] for frame in sent] == ["second", "first"]
    assert seen["first"] < seen["second"]


def test_on_quiet_is_told_once_nothing_is_in_flight() -> None:
    """The runtime gives freed memory back once idle (engine/memory/release.py); the
    dispatcher says when no request is in flight, after bad lines as after answers."""
    quiet: list[int] = []
    release = threading.Event()
    sent: list[bytes] = []

    def slow(params: _Echo) -> dict[str, str]:
        release.wait(10)
        return {"text": params.text}

    pool = ThreadPoolExecutor(2)
    dispatcher = Dispatcher(
        {"slow": Method(_Echo, slow)},
        sent.append,
        pool,
        64,
        4096,
        on_quiet=lambda: quiet.append(len(sent)),
    )
    try:
        dispatcher.handle_line(b"{not json")
        assert quiet == [1]  # answered inline, then quiet
        dispatcher.handle_line(b'{"jsonrpc":"2.0","method":"slow","id":1}')
        time.sleep(0.05)
        assert quiet == [1]  # in flight: not quiet
        release.set()
        deadline = time.monotonic() + 10
        while len(quiet) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert quiet == [1, 2]  # quiet once its answer was sent
    finally:
        release.set()
        pool.shutdown()
