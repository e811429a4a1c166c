"""The one book of promised stream ids and the verdicts waiting for the threads that run
them: a failure outranks a cancel, a verdict dies with its stream id, each runner takes
only its own streams' verdicts, and the release listener runs outside the lock."""

from __future__ import annotations

import threading

import pytest

from mlx_serving.engine.pending_streams import PendingStreams, Verdict
from mlx_serving.protocol.errors import InvalidParams, Overloaded


def test_ids_are_claimed_once_and_up_to_the_limit() -> None:
    streams = PendingStreams(threading.Condition(), max_active=2)
    streams.reserve("a")
    with pytest.raises(InvalidParams, match="already active"):
        streams.reserve("a")
    streams.reserve("b")
    with pytest.raises(Overloaded, match="limit 2"):
        streams.reserve("c")
    streams.release("a")
    streams.reserve("c")
    assert len(streams) == 2 and "c" in streams and "a" not in streams


def test_a_failure_outranks_a_cancel_whichever_comes_first() -> None:
    streams = PendingStreams(threading.Condition(), max_active=4)
    for stream_id in ("a", "b"):
        streams.reserve(stream_id)
    assert streams.cancel("a")
    streams.fail("a", "unloaded")
    streams.fail("b", "unloaded")
    assert streams.cancel("b")
    assert streams.take_verdicts({"a", "b"}) == {
        "a": Verdict(failure="unloaded"),
        "b": Verdict(failure="unloaded"),
    }


def test_verdicts_need_a_claimed_id_and_die_with_it() -> None:
    streams = PendingStreams(threading.Condition(), max_active=4)
    assert not streams.cancel("unknown")
    streams.fail("unknown", "unloaded")
    streams.reserve("a")
    assert streams.cancel("a")
    streams.release("a")
    streams.reserve("a")  # the id used again: the old verdict is gone
    assert streams.take_verdict("a") is None


def test_each_runner_takes_only_the_verdicts_of_its_own_streams() -> None:
    streams = PendingStreams(threading.Condition(), max_active=4)
    for stream_id in ("text", "vision"):
        streams.reserve(stream_id)
        streams.cancel(stream_id)
    assert streams.take_verdicts({"text"}) == {"text": Verdict()}
    assert streams.take_verdicts({"text"}) == {}
    assert streams.take_verdict("vision") == Verdict()


def test_the_release_listener_runs_outside_the_lock() -> None:
    cond = threading.Condition()
    streams = PendingStreams(cond, max_active=4)
    seen: list[tuple[str, bool]] = []

    def listener(stream_id: str) -> None:
        # Another thread must be able to take the lock meanwhile (the memory ledger can
        # unload a model from here, which takes the scheduler's lock on its thread).
        took: list[bool] = []

        def take() -> None:
            took.append(cond.acquire(timeout=1))
            if took[0]:
                cond.release()

        thread = threading.Thread(target=take)
        thread.start()
        thread.join()
        seen.append((stream_id, took[0]))

    streams.on_release = listener
    streams.reserve("a")
    streams.release("a")
    assert seen == [("a", True)]
