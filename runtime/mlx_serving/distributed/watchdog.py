"""A bound on how long rank 0 may wait inside a collective.

A rank that dies breaks its connections and the backend raises at once; a rank that
stops answering (stopped, swapping, cut off) leaves the others blocked in the collective
for good, and nothing can interrupt a thread there. The engine thread arms the watchdog
around each collective; when one outlives its bound, the watchdog thread calls
`on_expire` with the token it was armed with; the token stays armed until the engine
thread disarms it, which tells `on_expire` whether that thread is still stuck.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# How often the watchdog looks at the collective under way: a bound is kept to this much.
POLL_S = 0.2


class Watchdog:
    def __init__(self, on_expire: Callable[[int, str], None]) -> None:
        self._on_expire = on_expire
        self._cond = threading.Condition()
        self._token = 0
        self._armed: tuple[int, float, str] | None = None  # token, deadline, what
        self._closed = False
        self._thread = threading.Thread(target=self._watch, name="group-watchdog", daemon=True)
        self._thread.start()

    def arm(self, what: str, timeout: float) -> int:
        # No wake-up: the watchdog looks every POLL_S seconds. Arming twice per decode
        # step must stay cheaper than a thread switch on a busy core.
        with self._cond:
            self._token += 1
            self._armed = (self._token, time.monotonic() + timeout, what)
            return self._token

    def disarm(self, token: int) -> None:
        with self._cond:
            if self._armed is not None and self._armed[0] == token:
                self._armed = None

    def is_armed(self, token: int) -> bool:
        with self._cond:
            return self._armed is not None and self._armed[0] == token

    def expire_now(self) -> None:
        """Give up on the collective under way now (a rank is known to be gone)."""
        with self._cond:
            if self._armed is not None:
                token, _, what = self._armed
                self._armed = (token, 0.0, what)
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _watch(self) -> None:
        fired = 0
        while True:
            with self._cond:
                while not self._closed:
                    if self._armed is None or self._armed[0] == fired:
                        self._cond.wait(POLL_S)
                        continue
                    left = self._armed[1] - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, POLL_S))
                if self._closed:
                    return
                assert self._armed is not None
                # Left armed: on_expire checks, under its own lock, that the engine thread
                # has not come back and disarmed in the meantime.
                fired, deadline, what = self._armed
            reason = f"{what} did not finish in time" if deadline else f"{what} was cut off"
            log.error("distributed group: %s", reason)
            self._on_expire(fired, reason)
