"""The step budget's model of a prefill chunk's cost: fit from chunks of one long prompt,
it sizes late chunks (long context) smaller than early ones for the same time."""

from __future__ import annotations

import pytest

from mlx_serving.engine.prefill_cost import PrefillCost
from mlx_serving.engine.step_budget import StepBudget

A, B = 20e-6, 40e-9  # seconds per token, and per token per attended token


def chunk_seconds(tokens: int, context: int) -> float:
    return tokens * (A + B * (context + tokens / 2))


def fed_one_prompt(cost: PrefillCost, chunk: int, length: int) -> None:
    for context in range(0, length, chunk):
        cost.record(chunk, chunk * (context + chunk / 2), chunk_seconds(chunk, context))


def test_the_fit_recovers_per_token_and_attention_costs() -> None:
    cost = PrefillCost()
    fed_one_prompt(cost, 256, 2048)
    fit = cost.coefficients()
    assert fit is not None
    assert fit[0] == pytest.approx(A, rel=1e-6) and fit[1] == pytest.approx(B, rel=1e-6)


def test_a_chunk_is_sized_for_its_context() -> None:
    cost = PrefillCost()
    fed_one_prompt(cost, 256, 2048)
    early, late = cost.tokens_within(0.030, 0), cost.tokens_within(0.030, 1500)
    assert early is not None and late is not None and late < early
    for tokens, context in ((early, 0), (late, 1500)):
        assert chunk_seconds(tokens, context) <= 0.030 < chunk_seconds(tokens + 1, context)


def test_no_fit_before_the_context_has_varied_or_when_attention_looks_free() -> None:
    cost = PrefillCost()
    cost.record(256, 256 * 128, chunk_seconds(256, 0))
    assert cost.tokens_within(0.030, 0) is None  # one chunk: a and b not told apart
    flat = PrefillCost()
    for context in (0, 256, 512):
        flat.record(256, 256 * (context + 128), 0.01 - context * 1e-6)  # cheaper later: noise
    assert flat.coefficients() is None


def test_the_budget_plans_late_chunks_smaller_than_the_plain_rate_would() -> None:
    budget = StepBudget(max_step_s=0.050, max_chunk_tokens=4096)
    for context in range(0, 2048, 256):
        budget.record_prefill(256, chunk_seconds(256, context), 256 * (context + 128))
    late = budget.tokens(decoding=True, context=1800)
    assert chunk_seconds(late, 1800) <= 0.75 * 0.050  # the margin's share of the step
    assert late < budget.tokens(decoding=True, context=0)
