"""When freed memory goes back to the system: soon after an unload, only after a quiet
spell once the last stream has ended (engine/memory/release.py)."""

from __future__ import annotations

import time

from mlx_serving.engine.memory.release import UNLOAD_RELEASE_S, ReleaseDeadlines
from mlx_serving.settings import ModelsConfig

IDLE_RELEASE_S = ModelsConfig().idle_release_s


def test_nothing_is_due_until_something_was_freed() -> None:
    deadlines = ReleaseDeadlines(IDLE_RELEASE_S)
    assert deadlines.next() is None
    assert not deadlines.due(time.monotonic() + 1e6)


def test_an_unload_is_released_soon_and_the_idle_wait_is_cleared_with_it() -> None:
    deadlines = ReleaseDeadlines(IDLE_RELEASE_S)
    now = time.monotonic()
    deadlines.after_idle()
    deadlines.after_unload()
    at = deadlines.next()
    assert at is not None and at <= now + UNLOAD_RELEASE_S + 1
    assert not deadlines.due(now)
    assert deadlines.due(at)
    assert deadlines.next() is None  # one release gives back both


def test_a_later_stream_end_postpones_the_idle_release() -> None:
    deadlines = ReleaseDeadlines(IDLE_RELEASE_S)
    deadlines.after_idle()
    first = deadlines.next()
    time.sleep(0.01)
    deadlines.after_idle()
    second = deadlines.next()
    assert first is not None and second is not None and second > first
    assert second - time.monotonic() > IDLE_RELEASE_S - 1
    assert not deadlines.due(first)


def test_a_second_unload_does_not_postpone_the_first() -> None:
    deadlines = ReleaseDeadlines(IDLE_RELEASE_S)
    deadlines.after_unload()
    first = deadlines.next()
    time.sleep(0.01)
    deadlines.after_unload()
    assert deadlines.next() == first
