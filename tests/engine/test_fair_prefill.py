"""Prompts that arrive together are prefilled one at a time, oldest first, and a decoding
stream gets a token in every step while they are. Counted in engine steps, not seconds,
so the test holds on any machine; bench/bench_prefill.py measures the times."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mlx_serving.config import SchedulerConfig, Settings
from mlx_serving.engine.batch_lane import BatchLane, LaneToken
from mlx_serving.engine.engine import Engine
from mlx_serving.engine.lockstep import SingleProcess
from mlx_serving.engine.step_budget import StepBudget
from mlx_serving.protocol.methods import GenerateParams, LoadModelParams

BUDGET = 48  # prompt tokens per step
PROMPT = 400


class StepRecorder(SingleProcess):
    """The sink and the scheduler's lockstep: which step each token came out of (counted
    at the lane: the text of a token can reach the sink a step later, when the detokenizer
    held back part of a UTF-8 character)."""

    def __init__(self) -> None:
        self.step = 0
        self.first_token_step: dict[str, int] = {}
        self.token_steps: dict[str, list[int]] = {}
        self.finished: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def emit(self, notifications: list[tuple[str, msgspec.Struct]]) -> None:
        for name, params in notifications:
            body: dict[str, Any] = msgspec.to_builtins(params)
            stream_id = body["stream_id"]
            with self.lock:
                if name == "stream.event":
                    self.finished.setdefault(stream_id, threading.Event()).set()

    def wait(self, stream_id: str) -> None:
        with self.lock:
            event = self.finished.setdefault(stream_id, threading.Event())
        assert event.wait(60)

    def decode(self, lane: BatchLane) -> list[LaneToken]:
        with self.lock:
            self.step += 1
        return self._record(super().decode(lane))

    def prefill(self, lane: BatchLane, prefill_tokens: int) -> list[LaneToken]:
        return self._record(super().prefill(lane, prefill_tokens))

    def _record(self, tokens: list[LaneToken]) -> list[LaneToken]:
        with self.lock:
            for token in tokens:
                self.first_token_step.setdefault(token.stream_id, self.step)
                self.token_steps.setdefault(token.stream_id, []).append(self.step)
        return tokens


@pytest.fixture
def engine(llama_dir: Path) -> Iterator[tuple[Engine, StepRecorder]]:
    recorder = StepRecorder()
    # RAM prompt cache only: blocks left on disk by an earlier run would skip prefill.
    scheduler = SchedulerConfig(prefill_token_budget=BUDGET, prompt_cache_dir="")
    settings = Settings(scheduler=scheduler)
    engine = Engine(settings, recorder, lockstep=recorder)
    engine.load(LoadModelParams(model_id="m", local_path=str(llama_dir)))
    try:
        yield engine, recorder
    finally:
        engine.shutdown()


def _prompt(seed: int) -> list[int]:
    return [(seed * 7919 + i * 104729) % 1000 + 10 for i in range(PROMPT)]


def _params(seed: int, max_tokens: int) -> GenerateParams:
    return GenerateParams(
        model_id="m",
        prompt_tokens=_prompt(seed),
        max_tokens=max_tokens,
        temperature=0,
        logit_bias={2: -100},  # no end-of-sequence: every stream runs its length
    )


def test_prompts_sent_together_are_prefilled_first_come_first_served(
    engine: tuple[Engine, StepRecorder],
) -> None:
    runtime, recorder = engine
    requests = [runtime.prepare_stream(_params(seed, 3)) for seed in range(4)]
    for request in requests:  # one call each, in order, before the engine steps
        runtime.start(request)
    for request in requests:
        recorder.wait(request.stream_id)

    firsts = [recorder.first_token_step[r.stream_id] for r in requests]
    assert firsts == sorted(firsts), firsts
    steps_alone = -(-(PROMPT - 1) // BUDGET)  # chunks of one prompt
    # The first prompt is not held back by the three behind it, and each one after it
    # waits only for those before it: k * steps_alone, plus a step to join the decoders.
    for k, first in enumerate(firsts):
        assert first <= (k + 1) * steps_alone + 2, (k, firsts, steps_alone)


def test_a_decoding_stream_gets_a_token_every_step_while_a_long_prompt_prefills(
    engine: tuple[Engine, StepRecorder],
) -> None:
    runtime, recorder = engine
    decoding = runtime.prepare_stream(_params(0, 60))
    runtime.start(decoding)
    while True:
        with recorder.lock:
            if decoding.stream_id in recorder.first_token_step:
                break
        threading.Event().wait(0.005)
    arriving = runtime.prepare_stream(_params(1, 3))
    runtime.start(arriving)
    recorder.wait(arriving.stream_id)
    recorder.wait(decoding.stream_id)

    steps = recorder.token_steps[decoding.stream_id]
    start = recorder.first_token_step[decoding.stream_id]
    joined = recorder.first_token_step[arriving.stream_id]
    # Every step from the decoding stream's first token to the newcomer's first token
    # (all of its prefill) gave the decoding stream a token; the move from decoding alone
    # into the batch may give two in one step.
    assert joined - start >= -(-(PROMPT - 1) // BUDGET)
    assert set(range(start, joined + 1)) <= set(steps), steps


def test_the_budget_follows_measured_costs() -> None:
    budget = StepBudget(max_step_s=0.050, max_chunk_tokens=2048)
    assert budget.tokens(decoding=True) == 256  # nothing measured yet
    budget.record_prefill(1000, 1.0)  # 1,000 prompt tokens/s
    budget.record_decode(0.010)
    budget.decode_s = 0.010
    assert budget.tokens(decoding=True) == 30  # 0.75 x (50 ms - 10 ms) of prefill
    assert budget.tokens(decoding=False) == 200  # nobody waits: 4 x 50 ms
    budget.decode_s = 0.030  # prefill gets at least what decoding takes
    assert budget.tokens(decoding=True) == 22  # 0.75 x 30 ms
    budget.decode_s = 0.2  # decoding alone overruns the step: prefill still moves
    assert budget.tokens(decoding=True) == 150  # 0.75 x 200 ms
    assert StepBudget(0.05, 2048, fixed_tokens=64).tokens(decoding=True) == 64


def test_more_prompts_waiting_than_streams_decoding_get_a_longer_share() -> None:
    budget = StepBudget(max_step_s=0.050, max_chunk_tokens=2048)
    budget.record_prefill(1000, 1.0)  # 1,000 prompt tokens/s
    budget.decode_s = 0.010
    assert budget.tokens(decoding=True, backlog=1) == 30  # 0.75 x (50 ms - 10 ms)
    assert budget.tokens(decoding=True, backlog=10) == 75  # 0.75 x 10 x 10 ms
    assert budget.tokens(decoding=True, backlog=100) == 150  # 0.75 x an idle step, 200 ms


def test_the_disk_gate_sees_the_fastest_prefill_not_one_slowed_by_compiling() -> None:
    budget = StepBudget(max_step_s=0.050, max_chunk_tokens=2048)
    budget.record_prefill(2000, 0.040)  # 50k tokens/s
    budget.record_prefill(300, 0.300)  # a new chunk shape compiling: 1k tokens/s
    assert budget.prefill_tokens_per_s is not None and budget.prefill_tokens_per_s < 30_000
    assert budget.peak_prefill_tokens_per_s == 50_000
