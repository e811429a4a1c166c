"""Where the memory budget comes from, and whether the process's resident size must keep
to it (engine/memory/budget.py)."""

from __future__ import annotations

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
