"""How many bytes the runtime's models and streams may hold: the configured budget, or a
share of what the machine or accelerator has, and MLX's own limits set from it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ...config import Settings

log = logging.getLogger(__name__)

# A lone model's prompt cache may take this share of the budget at most: beside MLX's own
# buffer cache (the same share) it is what the budget's 10% headroom is for.
PROMPT_CACHE_SHARE = 10
# MLX keeps freed buffers for reuse up to this share of the budget.
MLX_CACHE_SHARE = 10
CGROUP_LIMIT = "cgroup memory limit"


@dataclass(frozen=True)
class MemoryBudget:
    bytes: int
    # Where the figure comes from, for the log and the docs: "models.memory_budget_bytes"
    # or "0.75 of 62.8 GiB RAM".
    source: str
    # A limit the process's resident size must keep to (set by the user, or a container's
    # memory limit), not only a share of the machine's memory.
    strict: bool = False


def memory_budget(settings: Settings) -> MemoryBudget:
    models = settings.models
    if models.memory_budget_bytes is not None:
        return MemoryBudget(models.memory_budget_bytes, "models.memory_budget_bytes", strict=True)
    total, what = device_memory()
    fraction = models.memory_budget_fraction
    return MemoryBudget(
        int(total * fraction),
        f"{fraction} of {total / 2**30:.1f} GiB {what}",
        strict=what == CGROUP_LIMIT,
    )


def device_memory() -> tuple[int, str]:
    """The memory models live in: the recommended working set on Metal (what macOS lets
    the GPU keep resident), device memory on CUDA, RAM on the CPU backend."""
    import mlx.core as mx

    if mx.default_device() == mx.gpu:
        info = mx.device_info()
        for key, what in (
            ("max_recommended_working_set_size", "Metal working set"),
            ("total_memory", "device memory"),
            ("memory_size", "device memory"),
        ):
            value = info.get(key)
            if isinstance(value, int) and value > 0:
                return value, what
    return _ram()


def _ram() -> tuple[int, str]:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    if limit is not None and limit < total:
        return limit, CGROUP_LIMIT
    return total, "RAM"


def _cgroup_limit() -> int | None:
    """A container's memory limit (cgroup v2, then v1); None where there is none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def effective_settings(settings: Settings, budget: MemoryBudget) -> Settings:
    """The settings with each model's prompt cache held to its share of the budget, so that
    the cache the scheduler keeps is the one the budget counts."""
    cap = budget.bytes // PROMPT_CACHE_SHARE
    scheduler = settings.scheduler
    if scheduler.prompt_cache_bytes <= cap:
        return settings
    return msgspec.structs.replace(
        settings, scheduler=msgspec.structs.replace(scheduler, prompt_cache_bytes=cap)
    )


def apply_mlx_limits(budget: MemoryBudget) -> None:
    """MLX frees its buffer cache before it lets active memory pass the budget plus its
    headroom, and keeps at most a tenth of the budget cached. Under a strict budget what it
    frees beyond that goes straight back to the system (glibc_heap.py), at a cost: a batch
    that grows by a stream a step then gets every KV array from fresh pages (32 streams
    sent together decoded 25-30% slower on this CPU). Otherwise, on a CPU, glibc keeps what
    MLX hands back for the next allocation, until the runtime idles (release.py)."""
    import mlx.core as mx

    from ...glibc_heap import arrays_in_host_heap, keep_freed_blocks, map_large_blocks_alone

    cache = budget.bytes // MLX_CACHE_SHARE
    mx.set_memory_limit(budget.bytes + cache)
    mx.set_cache_limit(cache)
    if budget.strict:
        map_large_blocks_alone()
    elif arrays_in_host_heap():
        keep_freed_blocks()
    log.info("memory budget %d bytes (%s)", budget.bytes, budget.source)
