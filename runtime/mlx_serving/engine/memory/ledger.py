"""The memory budget's accounts: the weights of resident models, the estimates of loads in
flight and the KV caches streams reserved, and the first-come-first-served admission of
streams against what is left.

A stream reserves its KV estimate before it is acknowledged and holds it until it ends.
One that does not fit may first have idle models evicted for it (`make_room`, the
residency's), then waits its turn in arrival order (a long stream is not starved by a run
of short ones) for at most `admission_timeout_s`, and is then refused -32006 with a hint of
when to retry. Waiting happens on the request's worker thread, as the vision pixel budget
does, so the acknowledgement itself is what a client waits for.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...protocol.errors import InvalidParams, Overloaded

# How fast the retry hint follows the time streams hold their KV.
_HOLD_SMOOTHING = 0.3

# Asked to let a stream of `nbytes` fit now, leaving the models it runs on alone; True when
# it evicted something.
MakeRoom = Callable[[int, frozenset[str]], bool]


@dataclass(frozen=True)
class KvLease:
    model_ids: frozenset[str]
    nbytes: int
    taken: float  # monotonic


@dataclass(frozen=True)
class LedgerSnapshot:
    budget: int
    models: dict[str, int]
    loading: int
    kv: dict[str, int]  # by model id
    kv_total: int
    waiting: int

    @property
    def used(self) -> int:
        return sum(self.models.values()) + self.loading + self.kv_total


class MemoryLedger:
    def __init__(self, budget: int, admission_timeout_s: float) -> None:
        self.budget = budget
        self._timeout = admission_timeout_s
        self._cond = threading.Condition()
        # Everything below is read and written under _cond.
        self._models: dict[str, int] = {}  # resident model_id -> its bytes
        self._loading: dict[object, int] = {}  # load ticket -> estimated bytes
        self._kv: dict[str, KvLease] = {}  # stream_id -> its reservation
        self._waiting: deque[object] = deque()  # one ticket per waiting stream, in order
        # Running mean of how long a stream holds its KV: the retry hint. A guess until
        # measured.
        self._hold_s = 1.0

    # -- models (the residency decides; these only keep the books) ------------------------

    def set_model(self, model_id: str, nbytes: int) -> None:
        with self._cond:
            self._models[model_id] = nbytes

    def drop_model(self, model_id: str) -> int:
        with self._cond:
            dropped = self._models.pop(model_id, 0)
            self._cond.notify_all()  # waiting streams may fit now
            return dropped

    def model_bytes(self, model_id: str) -> int:
        with self._cond:
            return self._models.get(model_id, 0)

    def begin_load(self, nbytes: int) -> object:
        ticket = object()
        with self._cond:
            self._loading[ticket] = nbytes
        return ticket

    def end_load(self, ticket: object) -> None:
        with self._cond:
            self._loading.pop(ticket, None)
            self._cond.notify_all()

    def free(self) -> int:
        with self._cond:
            return self.budget - self._used()

    def busy_models(self) -> set[str]:
        """Models that streams hold KV on."""
        with self._cond:
            return {model_id for lease in self._kv.values() for model_id in lease.model_ids}

    @property
    def has_streams(self) -> bool:
        with self._cond:
            return bool(self._kv or self._waiting)

    def snapshot(self) -> LedgerSnapshot:
        with self._cond:
            kv: dict[str, int] = {}
            for lease in self._kv.values():
                for model_id in lease.model_ids:
                    kv[model_id] = kv.get(model_id, 0) + lease.nbytes // len(lease.model_ids)
            return LedgerSnapshot(
                budget=self.budget,
                models=dict(self._models),
                loading=sum(self._loading.values()),
                kv=kv,
                kv_total=sum(lease.nbytes for lease in self._kv.values()),
                waiting=len(self._waiting),
            )

    def _used(self) -> int:
        kv = sum(lease.nbytes for lease in self._kv.values())
        return sum(self._models.values()) + sum(self._loading.values()) + kv

    # -- streams ---------------------------------------------------------------------------

    def reserve_kv(
        self, stream_id: str, model_ids: Sequence[str], nbytes: int, make_room: MakeRoom
    ) -> None:
        """Hold `nbytes` for the stream on `model_ids` (its model, then any draft) until
        `release_kv`, waiting for room in arrival order; Overloaded (-32006, retry_after_ms)
        after admission_timeout_s, InvalidParams when the stream could not fit beside its
        own models even alone."""
        models = frozenset(model_ids)
        ticket = object()
        deadline = time.monotonic() + self._timeout
        asked_for_room = False
        with self._cond:
            own = sum(self._models.get(model_id, 0) for model_id in models)
            if own + nbytes > self.budget:
                raise InvalidParams(
                    "max_tokens",
                    f"the stream's KV cache needs {nbytes} bytes (prompt + max_tokens); "
                    f"the memory budget of {self.budget} bytes leaves {self.budget - own} "
                    "beside the model's weights (models.memory_budget_bytes)",
                    "out_of_range",
                )
            self._waiting.append(ticket)
            try:
                while True:
                    first = self._waiting[0] is ticket
                    if first and self._used() + nbytes <= self.budget:
                        break
                    if first and not asked_for_room:
                        # Idle models give way to a stream before it waits on others.
                        asked_for_room = True
                        self._cond.release()
                        try:
                            make_room(nbytes, models)
                        finally:
                            self._cond.acquire()
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._overloaded(stream_id, model_ids[0], nbytes)
                    self._cond.wait(remaining)
                self._kv[stream_id] = KvLease(models, nbytes, time.monotonic())
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()  # the next in line may go now

    def release_kv(self, stream_id: str) -> KvLease | None:
        with self._cond:
            lease = self._kv.pop(stream_id, None)
            if lease is not None:
                held = time.monotonic() - lease.taken
                self._hold_s += _HOLD_SMOOTHING * (held - self._hold_s)
                self._cond.notify_all()
            return lease

    def _overloaded(self, stream_id: str, model_id: str, nbytes: int) -> Overloaded:
        kv = sum(lease.nbytes for lease in self._kv.values())
        weights = sum(self._models.values())
        return Overloaded(
            f"the memory budget is full: {self._used()} of {self.budget} bytes held "
            f"(weights {weights}, KV caches of {len(self._kv)} streams {kv}); this stream "
            f"needs {nbytes} bytes of KV cache and waited {self._timeout:g} s "
            "(scheduler.admission_timeout_s); retry later",
            model_id=model_id,
            stream_id=stream_id,
            retry_after_ms=max(100, round(self._hold_s * 1000)),
        )
