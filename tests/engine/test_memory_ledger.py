"""KV admission against the memory budget, with the timing placed exactly: arrival order,
the wait bound and its retry hint, room made by evicting, and requests that never fit."""

from __future__ import annotations

import threading
import time

import pytest

from mlx_serving.engine.memory.ledger import MemoryLedger
from mlx_serving.protocol.errors import InvalidParams, Overloaded


def _no_room(nbytes: int, protect: frozenset[str]) -> bool:
    return False


def _reserve_in_thread(
    ledger: MemoryLedger, stream_id: str, nbytes: int, order: list[str]
) -> threading.Thread:
    def reserve() -> None:
        ledger.reserve_kv(stream_id, ["m"], nbytes, _no_room)
        order.append(stream_id)

    thread = threading.Thread(target=reserve)
    thread.start()
    return thread


def _wait_for_waiters(ledger: MemoryLedger, count: int) -> None:
    deadline = time.monotonic() + 5
    while ledger.snapshot().waiting < count:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_streams_that_do_not_fit_are_admitted_first_come_first_served() -> None:
    ledger = MemoryLedger(budget=100, admission_timeout_s=10)
    ledger.reserve_kv("first", ["m"], 60, _no_room)
    order: list[str] = []
    large = _reserve_in_thread(ledger, "large", 50, order)
    _wait_for_waiters(ledger, 1)
    # Would fit now, but a larger stream came first: it waits its turn.
    small = _reserve_in_thread(ledger, "small", 10, order)
    _wait_for_waiters(ledger, 2)
    assert order == []

    ledger.release_kv("first")
    large.join(5)
    small.join(5)
    assert order == ["large", "small"]
    snapshot = ledger.snapshot()
    assert snapshot.kv_total == 60 and snapshot.kv == {"m": 60} and snapshot.waiting == 0


def test_a_stream_waits_the_admission_timeout_then_is_refused_with_a_retry_hint() -> None:
    ledger = MemoryLedger(budget=100, admission_timeout_s=0.2)
    ledger.reserve_kv("holder", ["m"], 90, _no_room)
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        ledger.reserve_kv("late", ["m"], 50, _no_room)
    waited = time.monotonic() - started
    assert 0.2 <= waited < 0.5
    data = refused.value.data
    assert refused.value.code == -32006
    assert data.retry_after_ms >= 100 and data.model_id == "m" and data.stream_id == "late"
    assert "memory budget is full" in refused.value.message
    assert ledger.snapshot().waiting == 0

    # The hint follows how long streams hold their KV.
    time.sleep(0.3)
    ledger.release_kv("holder")
    ledger.reserve_kv("holder2", ["m"], 90, _no_room)
    with pytest.raises(Overloaded) as again:
        ledger.reserve_kv("late2", ["m"], 50, _no_room)
    assert again.value.data.retry_after_ms < data.retry_after_ms


def test_a_stream_too_large_for_the_budget_beside_its_model_is_refused_at_once() -> None:
    ledger = MemoryLedger(budget=100, admission_timeout_s=10)
    ledger.set_model("m", 80)
    started = time.monotonic()
    with pytest.raises(InvalidParams) as refused:
        ledger.reserve_kv("s", ["m"], 30, _no_room)
    assert time.monotonic() - started < 0.1
    assert refused.value.field == "max_tokens"


def test_idle_models_make_room_before_a_stream_waits() -> None:
    ledger = MemoryLedger(budget=100, admission_timeout_s=10)
    ledger.set_model("m", 40)
    ledger.set_model("idle", 40)
    asked: list[tuple[int, frozenset[str]]] = []

    def make_room(nbytes: int, protect: frozenset[str]) -> bool:
        asked.append((nbytes, protect))
        ledger.drop_model("idle")
        return True

    started = time.monotonic()
    ledger.reserve_kv("s", ["m"], 50, make_room)
    assert time.monotonic() - started < 0.1
    assert asked == [(50, frozenset({"m"}))]
    assert ledger.snapshot().used == 90
