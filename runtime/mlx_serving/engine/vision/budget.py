"""How many decoded pixels the image work of all requests may hold at once.

Decoding a request's images and running the model's processor over them holds about 9
bytes per pixel at the peak (Qwen2-VL's processor): eight images at the pixel limit took a
request to 2.2 GB, and request workers run such requests side by side. So each request
leases its images' pixels, counted from their headers, for the decode and the processor.
One that does not fit waits its turn in arrival order (a large request is not starved by
a run of small ones) for at most `wait_s`, so a request worker is never held long, and is
then refused -32006 with a hint of when to retry. A request larger than the whole budget
runs when no other image work is in flight.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from ...protocol.errors import Overloaded

# How fast the retry hint follows the time leases are held.
_HOLD_SMOOTHING = 0.3


class PixelBudget:
    def __init__(self, capacity: int, wait_s: float) -> None:
        self._capacity = capacity
        self._wait_s = wait_s
        self._cond = threading.Condition()
        # All read and written under _cond.
        self._in_flight = 0  # pixels leased now
        self._waiting: deque[object] = deque()  # one ticket per waiting lease, in order
        # Running mean of how long a lease is held: the retry hint. A guess until measured.
        self._hold_s = 1.0

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    @contextmanager
    def lease(self, pixels: int, model_id: str) -> Iterator[None]:
        """Hold `pixels` of the budget for the duration of the block."""
        self._acquire(pixels, model_id)
        started = time.monotonic()
        try:
            yield
        finally:
            self._release(pixels, time.monotonic() - started)

    def _acquire(self, pixels: int, model_id: str) -> None:
        ticket = object()
        deadline = time.monotonic() + self._wait_s
        with self._cond:
            self._waiting.append(ticket)
            try:
                while self._waiting[0] is not ticket or not self._fits(pixels):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise Overloaded(
                            f"image work in flight is at its limit: {self._in_flight} of "
                            f"{self._capacity} decoded pixels (vision.max_pixels_in_flight), "
                            f"this request needs {pixels}; retry later",
                            model_id=model_id,
                            retry_after_ms=max(100, round(self._hold_s * 1000)),
                        )
                    self._cond.wait(remaining)
                self._in_flight += pixels
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()  # the next in line may go now

    def _fits(self, pixels: int) -> bool:
        return self._in_flight == 0 or self._in_flight + pixels <= self._capacity

    def _release(self, pixels: int, held_s: float) -> None:
        with self._cond:
            self._in_flight -= pixels
            self._hold_s += _HOLD_SMOOTHING * (held_s - self._hold_s)
            self._cond.notify_all()
