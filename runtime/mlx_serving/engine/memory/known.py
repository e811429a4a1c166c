"""What the residency remembers of a model, and how runtime/state and a refused load
describe the budget."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from ...protocol.errors import MemoryBudgetExceeded, MemoryHolder
from ...protocol.methods import LoadedModelState, LoadModelParams, MemoryState
from ..loader import LoadedModel
from .ledger import LedgerSnapshot
from .weights import measure_weight_bytes

# embedding: a dedicated encoder (engine/encoders.py); it keeps no prompt cache.
ModelKind = Literal["text", "vision", "embedding"]


@dataclass
class KnownModel:
    params: LoadModelParams  # as admitted by the load policy: the checked real path
    kind: ModelKind
    weights: int  # measured
    keep_alive_s: float | None
    resident: bool = True
    last_used: float = 0.0  # unix time, for runtime/state
    idle_since: float = 0.0  # monotonic, for keep-alive and LRU
    in_use: int = 0  # requests being prepared on it

    def touch(self) -> None:
        self.last_used = time.time()
        self.idle_since = time.monotonic()


@dataclass(frozen=True)
class Eviction:
    model_id: str
    reason: Literal["evicted", "expired"]
    detail: str
    weights: int


def over_budget(
    model_id: str, needed: int, snapshot: LedgerSnapshot, pinned: set[str], busy: set[str]
) -> MemoryBudgetExceeded:
    """The refusal of a load nothing idle and unpinned can make room for."""
    holders = [
        MemoryHolder(
            kind="model",
            model_id=held_id,
            bytes=nbytes,
            pinned=held_id in pinned,
            busy=held_id in busy,
        )
        for held_id, nbytes in sorted(snapshot.models.items())
    ]
    if snapshot.kv_total:
        holders.append(MemoryHolder(kind="kv_cache", bytes=snapshot.kv_total))
    if snapshot.loading:
        holders.append(MemoryHolder(kind="loading", bytes=snapshot.loading))
    named = ", ".join(_describe(holder) for holder in holders) or "nothing"
    return MemoryBudgetExceeded(
        f"model '{model_id}' needs about {needed} bytes, but the memory budget of "
        f"{snapshot.budget} bytes (models.memory_budget_bytes) has "
        f"{snapshot.budget - snapshot.used} free and nothing idle and unpinned to evict; "
        f"held by {named}",
        model_id=model_id,
        budget=snapshot.budget,
        needed=needed,
        holders=holders,
    )


def memory_state(snapshot: LedgerSnapshot) -> MemoryState:
    return MemoryState(
        budget_bytes=snapshot.budget,
        used_bytes=snapshot.used,
        weights_bytes=sum(snapshot.models.values()),
        kv_reserved_bytes=snapshot.kv_total,
        loading_bytes=snapshot.loading,
        streams_waiting=snapshot.waiting,
    )


def model_state(model_id: str, known: KnownModel) -> LoadedModelState:
    return LoadedModelState(
        model_id=model_id,
        state="ready" if known.resident else "evicted",
        type=known.kind,
        resident=known.resident,
        pinned=known.params.pin,
        bytes=known.weights,
        last_used=known.last_used,
        keep_alive_s=known.keep_alive_s,
    )


def unmanaged_state(loaded: LoadedModel) -> LoadedModelState:
    from ..vision import LoadedVisionModel

    return LoadedModelState(
        model_id=loaded.model_id,
        state="ready",
        type="vision" if isinstance(loaded, LoadedVisionModel) else "text",
        resident=True,
        pinned=False,
        bytes=measure_weight_bytes(loaded.model),
        last_used=0.0,
        keep_alive_s=None,
    )


def _describe(holder: MemoryHolder) -> str:
    if holder.kind == "model":
        why = "pinned" if holder.pinned else "busy" if holder.busy else "idle"
        return f"'{holder.model_id}' {holder.bytes} bytes ({why})"
    return f"{holder.kind.replace('_', ' ')} {holder.bytes} bytes"
