"""The order in which requests reached the runtime.

Fair prefill serves streams first come, first served, but requests are prepared on a
worker pool (tokenizing, checking options), and of two requests read together the second
may be ready first: the first then waited for the second's whole prefill (bench_prefill,
8 prompts sent together: the worst k-th first token at 1.5-2.1x its bound in one run of
three or four). The dispatcher stamps each request as it reads it; what the request
starts carries the stamp.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_next = itertools.count()
_current: ContextVar[int | None] = ContextVar("request_arrival", default=None)


def stamp() -> int:
    """A new arrival number, taken where requests are read (one thread, in order)."""
    return next(_next)


@contextmanager
def arrived(order: int) -> Iterator[None]:
    """Work done for the request stamped `order` (on a pool thread)."""
    token = _current.set(order)
    try:
        yield
    finally:
        _current.reset(token)


def arrival() -> int:
    """The stamp of the request being handled; outside one (in-process engines), now."""
    order = _current.get()
    return order if order is not None else stamp()
