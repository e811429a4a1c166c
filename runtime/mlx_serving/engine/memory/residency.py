"""Which models are resident under the memory budget, and which are only remembered.

Every load made through `load` gets room first: idle unpinned models are evicted, least
recently used first, until its estimated weights fit. When they cannot, the load is
refused (MemoryBudgetExceeded names the budget and what holds it) and nothing is evicted.
The parameters of every model loaded stay remembered until unload_model forgets them, so a
request naming an evicted model loads it again (`in_use`, `require`). A watcher thread
evicts models left unused for their keep_alive_s, and gives freed memory back to the
system once the runtime is idle.

A model is idle when no stream holds KV on it, no request is being prepared on it and no
load of it is in flight. Locks: `_lock` is taken before the ledger's; nothing that loads a
model or waits for the engine thread runs under it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import msgspec

from ...config import Settings
from ...protocol.errors import MemoryBudgetExceeded, ModelNotLoaded
from ...protocol.methods import LoadedModelState, LoadModelParams, LoadModelResult, MemoryState
from ...protocol.notifications import LoadStage
from ..loader import LoadedModel
from ..registry import ModelRegistry
from .known import (
    Eviction,
    KnownModel,
    ModelKind,
    memory_state,
    model_state,
    over_budget,
    unmanaged_state,
)
from .kv import kv_bytes
from .ledger import MemoryLedger
from .release import ReleaseDeadlines, release_freed_memory
from .weights import estimate_weight_bytes, measure_weight_bytes

log = logging.getLogger(__name__)

OnStage = Callable[[LoadStage, int, int], None]
Loader = Callable[[LoadModelParams, OnStage | None], LoadModelResult]
# How a remembered model is loaded again: the handlers' full load path (policy, progress,
# events), or `Residency.load` itself where there are no handlers (in-process engines).
Reloader = Callable[[LoadModelParams, ModelKind], object]


class Residency:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        ledger: MemoryLedger,
        loaders: dict[ModelKind, Loader],
        unload: Callable[[str, str], None],
    ) -> None:
        self._config = settings.models
        # The prompt cache a text model's batch may keep (capped to its share of the budget
        # by budget.effective_settings): part of what the model costs.
        self._prompt_cache_bytes = settings.scheduler.prompt_cache_bytes
        self._registry = registry
        self._ledger = ledger
        self._loaders = loaders
        self._unload = unload
        self._reload: Reloader = self.load
        # Gives freed memory back; the engine puts it on its own thread (MLX work belongs
        # there), this default is for a Residency used alone.
        self.release_memory: Callable[[], None] = release_freed_memory
        self._evicted: list[Callable[[Eviction], None]] = []
        self._lock = threading.Condition()
        # Everything below is read and written under _lock.
        self._known: dict[str, KnownModel] = {}
        self._loading: Counter[str] = Counter()  # model ids with a load in flight
        self._evicting: set[str] = set()  # chosen, their unload not done yet
        self._reloading: set[str] = set()  # loaded again on demand right now
        self._release = ReleaseDeadlines(self._config.idle_release_s)
        self._stopping = False
        registry.on_retire(self._retired)
        self._watcher = threading.Thread(target=self._watch, name="residency", daemon=True)
        self._watcher.start()

    def reload_with(self, reload: Reloader) -> None:
        self._reload = reload

    def on_evicted(self, listener: Callable[[Eviction], None]) -> None:
        self._evicted.append(listener)

    # -- loads -----------------------------------------------------------------------------

    def load(
        self, params: LoadModelParams, kind: ModelKind, on_stage: OnStage | None = None
    ) -> LoadModelResult:
        """Load (or replace) a model within the budget, evicting idle models for it."""
        model_id = params.model_id
        estimate = self._cost(kind, estimate_weight_bytes(params) or 0)
        with self._lock:
            while model_id in self._evicting:
                self._lock.wait()
            evictions = self._make_room(estimate, frozenset(), f"loading '{model_id}'")
            if evictions is None:
                raise self._over_budget(model_id, estimate)
            self._loading[model_id] += 1
            ticket = self._ledger.begin_load(estimate)
        try:
            self._evict(evictions)
            result = self._loaders[kind](params, on_stage)
            self._record(params, kind)
        finally:
            self._ledger.end_load(ticket)
            with self._lock:
                self._loading[model_id] -= 1
                if not self._loading[model_id]:
                    del self._loading[model_id]
                self._lock.notify_all()
        return result

    def _record(self, params: LoadModelParams, kind: ModelKind) -> None:
        try:
            loaded = self._registry.get(params.model_id)
        except ModelNotLoaded:
            return  # unloaded the moment it was loaded
        weights = measure_weight_bytes(loaded.model)
        keep_alive = params.keep_alive_s
        if isinstance(keep_alive, msgspec.UnsetType):
            keep_alive = self._config.keep_alive_s
        if keep_alive is not None and keep_alive < 0:
            keep_alive = None  # -1: never
        known = KnownModel(params, kind, weights, keep_alive_s=keep_alive)
        known.touch()
        with self._lock:
            previous = self._known.get(params.model_id)
            if previous is not None:
                # Requests being prepared on the model it replaces still count as its use.
                known.in_use = previous.in_use
            self._known[params.model_id] = known
            self._ledger.set_model(params.model_id, self._cost(kind, weights))
            # Heavier than its headers said: idle models make up the difference.
            evictions = self._make_room(
                0, frozenset({params.model_id}), f"'{params.model_id}' (measured)"
            )
            self._lock.notify_all()
        self._evict(evictions or [])

    def _cost(self, kind: ModelKind, weights: int) -> int:
        return weights + (self._prompt_cache_bytes if kind == "text" else 0)

    def forget(self, model_id: str) -> None:
        """unload_model: the model is no longer loaded again on demand."""
        with self._lock:
            self._known.pop(model_id, None)

    def _retired(self, model: LoadedModel, reason: str) -> None:
        """The registry let go of a model: unless another took its id, it holds nothing."""
        try:
            self._registry.get(model.model_id)
            return  # replaced: the new one's weights are recorded by its load
        except ModelNotLoaded:
            pass
        with self._lock:
            known = self._known.get(model.model_id)
            if known is not None:
                known.resident = False
            self._ledger.drop_model(model.model_id)
            self._trim_soon()

    # -- requests --------------------------------------------------------------------------

    @contextmanager
    def in_use(self, *model_ids: str | None) -> Iterator[None]:
        """The named models stay resident for the block, loaded again first if evicted."""
        held: list[str] = []
        try:
            for model_id in model_ids:
                if model_id is not None:
                    self._acquire(model_id)
                    held.append(model_id)
            yield
        finally:
            with self._lock:
                for model_id in held:
                    known = self._known.get(model_id)
                    if known is not None and known.in_use:
                        known.in_use -= 1
                        known.touch()
                self._lock.notify_all()

    def require(self, model_id: str) -> LoadedModel:
        """The model a request names, loaded again first if it was evicted."""
        with self.in_use(model_id):
            return self._registry.get(model_id)

    def _acquire(self, model_id: str) -> None:
        for _ in range(3):  # a model evicted again while it was reloaded: try again
            with self._lock:
                while model_id in self._evicting or model_id in self._reloading:
                    self._lock.wait()
                known = self._known.get(model_id)
                if known is None:
                    return  # never loaded, or forgotten: the registry answers for it
                if known.resident:
                    known.in_use += 1
                    known.touch()
                    return
                if not self._config.reload_on_demand:
                    raise ModelNotLoaded(
                        f"model '{model_id}' was evicted to free memory; load it again "
                        "(models.reload_on_demand is off)",
                        model_id=model_id,
                    )
                self._reloading.add(model_id)
                params, kind = known.params, known.kind
            log.info("loading evicted model %s again on demand", model_id)
            try:
                self._reload(params, kind)
            finally:
                with self._lock:
                    self._reloading.discard(model_id)
                    self._lock.notify_all()
        raise ModelNotLoaded(
            f"model '{model_id}' was evicted again while it was loaded on demand; retry",
            model_id=model_id,
        )

    def reserve_kv(self, stream_id: str, models: Sequence[LoadedModel], tokens: int) -> None:
        """Hold a stream's KV cache on `models` (its model, then any draft) in the budget
        until `stream_ended`; see MemoryLedger.reserve_kv."""
        nbytes = sum(kv_bytes(model, tokens) for model in models)
        ids = [model.model_id for model in models]
        self._ledger.reserve_kv(stream_id, ids, nbytes, self._room_for_stream)

    def _room_for_stream(self, nbytes: int, protect: frozenset[str]) -> bool:
        with self._lock:
            evictions = self._make_room(nbytes, protect, "a stream's KV cache")
        self._evict(evictions or [])
        return bool(evictions)

    def stream_ended(self, stream_id: str) -> None:
        """A stream let go of its reservation (Scheduler.on_release, any thread)."""
        lease = self._ledger.release_kv(stream_id)
        if lease is None:
            return
        with self._lock:
            for model_id in lease.model_ids:
                known = self._known.get(model_id)
                if known is not None:
                    known.touch()
            self._arm_idle_release()
            self._lock.notify_all()

    def requests_settled(self) -> None:
        """No request is in flight any more (the dispatcher, any thread): what they freed
        (a large frame, a tokenize, an embedding batch) goes back once idle, as a stream's."""
        with self._lock:
            self._arm_idle_release()
            self._lock.notify_all()

    def _arm_idle_release(self) -> None:
        """Unless a stream holds KV, give freed memory back once the runtime has idled.
        The caller holds `_lock`."""
        if not self._ledger.has_streams:
            self._release.after_idle()

    # -- eviction --------------------------------------------------------------------------

    def _make_room(
        self, needed: int, protect: frozenset[str], purpose: str
    ) -> list[Eviction] | None:
        """Choose idle unpinned models, least recently used first, whose eviction lets
        `needed` more bytes fit, and take them off the books; None (nothing chosen) when
        even all of them would not do. The caller holds `_lock` and unloads them after."""
        free = self._ledger.free()
        if free >= needed:
            return []
        busy = self._busy() | protect
        candidates = sorted(
            (k for model_id, k in self._known.items() if self._evictable(model_id, k, busy)),
            key=lambda k: k.idle_since,
        )
        chosen: list[KnownModel] = []
        for known in candidates:
            if free >= needed:
                break
            chosen.append(known)
            free += self._ledger.model_bytes(known.params.model_id)
        if free < needed:
            return None
        detail = f"to make room for {purpose} ({needed} bytes; budget {self._ledger.budget} bytes)"
        return [self._take_off(known, "evicted", detail) for known in chosen]

    def _busy(self) -> set[str]:
        in_use = {model_id for model_id, k in self._known.items() if k.in_use}
        return self._ledger.busy_models() | in_use | set(self._loading) | self._evicting

    @staticmethod
    def _evictable(model_id: str, known: KnownModel, busy: set[str]) -> bool:
        return known.resident and not known.params.pin and model_id not in busy

    def _take_off(
        self, known: KnownModel, reason: Literal["evicted", "expired"], detail: str
    ) -> Eviction:
        model_id = known.params.model_id
        known.resident = False
        self._evicting.add(model_id)
        self._ledger.drop_model(model_id)
        return Eviction(model_id, reason, detail, known.weights)

    def _evict(self, evictions: list[Eviction]) -> None:
        for eviction in evictions:
            log.info("%s model %s: %s", eviction.reason, eviction.model_id, eviction.detail)
            try:
                self._unload(
                    eviction.model_id, f"model '{eviction.model_id}' was {eviction.reason}"
                )
            except Exception:
                log.exception("could not unload %s", eviction.model_id)
            finally:
                with self._lock:
                    self._evicting.discard(eviction.model_id)
                    self._trim_soon()
                    self._lock.notify_all()
            for listener in self._evicted:
                try:
                    listener(eviction)
                except Exception:
                    log.exception("eviction listener failed")

    def _over_budget(self, model_id: str, needed: int) -> MemoryBudgetExceeded:
        pinned = {m for m, known in self._known.items() if known.params.pin}
        return over_budget(model_id, needed, self._ledger.snapshot(), pinned, self._busy())

    # -- the watcher: keep-alive and giving memory back ------------------------------------

    def _watch(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                now = time.monotonic()
                expired, wake = self._expired(now)
                # With streams running the memory is in use again; the last to end asks anew.
                trim = self._release.due(now) and not self._ledger.has_streams
                release_at = self._release.next()
                if release_at is not None:
                    wake = release_at if wake is None else min(wake, release_at)
                if not expired and not trim:
                    self._lock.wait(None if wake is None else max(wake - now, 0.01))
                    continue
            self._evict(expired)
            if trim:
                self.release_memory()

    def _expired(self, now: float) -> tuple[list[Eviction], float | None]:
        """Models unused for their keep_alive_s, taken off the books; and when the next
        one is due."""
        busy = self._busy()
        expired: list[Eviction] = []
        wake: float | None = None
        for model_id, known in list(self._known.items()):
            if known.keep_alive_s is None or not self._evictable(model_id, known, busy):
                continue
            due = known.idle_since + known.keep_alive_s
            if due <= now:
                detail = f"unused for {known.keep_alive_s:g} s (keep_alive_s)"
                expired.append(self._take_off(known, "expired", detail))
            else:
                wake = due if wake is None else min(wake, due)
        return expired, wake

    def _trim_soon(self) -> None:
        self._release.after_unload()
        self._lock.notify_all()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._watcher.join(1.0)

    # -- runtime/state ---------------------------------------------------------------------

    def states(self) -> list[LoadedModelState]:
        with self._lock:
            known = dict(self._known)
            rows = [model_state(model_id, k) for model_id, k in known.items()]
        for loaded in self._registry:  # loaded outside the residency (in-process engines)
            if loaded.model_id not in known:
                rows.append(unmanaged_state(loaded))
        return rows

    def memory(self) -> MemoryState:
        return memory_state(self._ledger.snapshot())
