"""What the runtime may hold in memory, and who holds it: the budget (budget.py), the
weights a model costs (weights.py), the KV cache a stream costs (kv.py), the ledger that
admits both against the budget (ledger.py), and the residency of models under it: LRU
eviction, pinning, keep-alive and reloads on demand (residency.py)."""

from .budget import MemoryBudget, effective_settings, memory_budget
from .known import ModelKind
from .ledger import MemoryLedger
from .residency import Residency

__all__ = [
    "MemoryBudget",
    "MemoryLedger",
    "ModelKind",
    "Residency",
    "effective_settings",
    "memory_budget",
]
