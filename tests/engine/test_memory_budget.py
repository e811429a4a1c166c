"""Where the memory budget comes from, and whether the process's resident size must keep
to it (engine/memory/budget.py)."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from mlx_serving.config import Settings
from mlx_serving.engine.memory import budget as budget_module
from mlx_serving.engine.memory.budget import CGROUP_LIMIT, memory_budget


def with_budget(limit: int | None) -> Settings:
    settings = Settings()
    models = msgspec.structs.replace(settings.models, memory_budget_bytes=limit)
    return msgspec.structs.replace(settings, models=models)


def test_a_budget_the_user_sets_is_strict() -> None:
    budget = memory_budget(with_budget(64 << 20))
    assert budget.bytes == 64 << 20 and budget.strict


def test_a_share_of_ram_is_not_strict_and_a_container_limit_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(budget_module, "device_memory", lambda: (8 << 30, "RAM"))
    loose = memory_budget(with_budget(None))
    assert not loose.strict and loose.bytes == int(
        8 * 2**30 * Settings().models.memory_budget_fraction
    )
    monkeypatch.setattr(budget_module, "device_memory", lambda: (2 << 30, CGROUP_LIMIT))
    assert memory_budget(with_budget(None)).strict


SHRINKING_BATCH = """
import resource, sys
import mlx.core as mx
from mlx_serving.engine.memory.budget import MemoryBudget, apply_mlx_limits
from mlx_serving.glibc_heap import arrays_in_host_heap
applied = sys.argv[1] == "applied"
if applied:
    apply_mlx_limits(MemoryBudget(8 << 30, "RAM"))
    assert arrays_in_host_heap()  # on a CPU
# A batch's KV (8 arrays of 16 MiB at 32 streams) copied as streams leave one by one,
# MLX's cache handed to the allocator after each, as BatchLane does.
kv = [mx.ones((32, 8, 256, 64)) for _ in range(8)]
mx.eval(kv)
faults = []
for streams in range(31, 20, -1):
    if applied:
        mx.clear_cache()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    kv = [layer[:streams] * 1 for layer in kv]
    mx.eval(kv)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[2:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_on_a_cpu_a_shrinking_batch_reuses_freed_memory() -> None:
    """Without a strict budget, KV arrays that change size as streams leave come from
    memory freed before, not from fresh pages (a page fault each 4 KiB): MLX's cache,
    which reuses only same-sized buffers, is handed to glibc, and glibc keeps it."""

    def faults(mode: str) -> int:
        run = [sys.executable, "-c", SHRINKING_BATCH, mode]
        return int(subprocess.run(run, check=True, capture_output=True).stdout)

    default, applied = faults("default"), faults("applied")
    assert default > 50_000  # what the test would see if nothing were done
    assert applied < default / 20, (applied, default)
