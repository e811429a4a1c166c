"""PixelBudget: leases that fit run together, the others wait their turn in arrival order
and are refused -32006 with a retry hint when the wait runs out."""

from __future__ import annotations

import threading
import time

import pytest

from mlx_serving.engine.vision.budget import PixelBudget
from mlx_serving.protocol.errors import OVERLOADED, Overloaded


def test_leases_that_fit_run_together_and_the_rest_wait_their_turn() -> None:
    budget = PixelBudget(capacity=100, wait_s=30)
    order: list[str] = []
    with budget.lease(60, "m"), budget.lease(40, "m"):
        assert budget.in_flight == 100

        def take(name: str, pixels: int) -> None:
            with budget.lease(pixels, "m"):
                order.append(name)

        big = threading.Thread(target=take, args=("big", 90))
        big.start()
        while not budget._waiting:  # the big lease is queued first
            time.sleep(0.001)
        small = threading.Thread(target=take, args=("small", 10))
        small.start()
        time.sleep(0.05)
        assert order == []  # the small one would fit beside the big one, but came later
    big.join(10)
    small.join(10)
    assert order == ["big", "small"]
    assert budget.in_flight == 0


def test_a_full_budget_refuses_after_the_wait_with_a_retry_hint() -> None:
    budget = PixelBudget(capacity=100, wait_s=0.05)
    with budget.lease(100, "m"):
        started = time.monotonic()
        with pytest.raises(Overloaded) as refused:
            with budget.lease(1, "vlm"):
                pass
        assert time.monotonic() - started >= 0.05
    error = refused.value.to_object()
    assert error.code == OVERLOADED and "vision.max_pixels_in_flight" in error.message
    assert error.data.model_id == "vlm" and error.data.retry_after_ms >= 100
    assert budget.in_flight == 0 and not budget._waiting
    with budget.lease(100, "m"):  # nothing was left behind by the refused lease
        pass


def test_a_lease_larger_than_the_budget_runs_alone() -> None:
    budget = PixelBudget(capacity=100, wait_s=0)
    with budget.lease(500, "m"):
        assert budget.in_flight == 500
        with pytest.raises(Overloaded):
            with budget.lease(1, "m"):
                pass
