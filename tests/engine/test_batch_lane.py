"""One model's batch, stepped the way the engine thread steps it (decode, then prefill),
with streams joining and leaving at every stage: waiting for prefill, mid-prefill, decoding
alone, decoding in the batch. A tiny generated model, greedy, so each stream's tokens can
be held against mlx-lm's `generate_step`."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.generate import generate_step
from mlx_lm.sample_utils import greedy_sampler

from mlx_serving.config import SchedulerConfig
from mlx_serving.engine.batch_lane import BatchLane, LaneToken, new_lane
from mlx_serving.engine.loader import LoadedModel, load_model
from mlx_serving.engine.short_prompts import short_group
from mlx_serving.engine.stream import StreamRequest


@pytest.fixture(scope="module")
def loaded(llama_dir: Path) -> LoadedModel:
    return load_model("m", llama_dir, context_length=None, trust_remote_code=False, draft=False)


def lane(loaded: LoadedModel, *, max_batch_size: int = 8, budget: int = 512) -> BatchLane:
    settings = SchedulerConfig(
        prompt_cache_dir="", max_batch_size=max_batch_size, prefill_token_budget=budget
    )
    return new_lane(loaded.model, settings)


def prompt(seed: int, length: int = 12) -> list[int]:
    return [(seed * 7919 + i * 104729) % 900 + 10 for i in range(length)]


def request(
    loaded: LoadedModel, stream_id: str, tokens: list[int], max_tokens: int
) -> StreamRequest:
    def no_eos(context: mx.array, logits: mx.array) -> mx.array:
        return logits + mx.array([-100.0 if i == 2 else 0.0 for i in range(logits.shape[-1])])

    return StreamRequest(
        stream_id=stream_id,
        model=loaded,
        prompt_tokens=tokens,
        max_tokens=max_tokens,
        sampler=greedy_sampler,
        logits_processors=[no_eos],
        stop_sequences=[],
        stop_token_ids=frozenset(),
    )


def alone(loaded: LoadedModel, tokens: list[int], max_tokens: int) -> list[int]:
    processors = request(loaded, "x", tokens, max_tokens).logits_processors
    steps = generate_step(
        mx.array(tokens),
        loaded.model,
        max_tokens=max_tokens,
        sampler=greedy_sampler,
        logits_processors=processors,
    )
    return [int(token) for token, _ in steps]


class Stepper:
    """Steps a lane as the scheduler does and files each token under its stream."""

    def __init__(self, batch: BatchLane) -> None:
        self.lane = batch
        self.tokens: dict[str, list[int]] = {}
        self.done: dict[str, str] = {}

    def step(self) -> list[LaneToken]:
        out = self.lane.decode()
        out += self.lane.prefill(self.lane.prefill_budget())
        for token in out:
            assert token.stream_id not in self.done, token  # nothing after the end
            self.tokens.setdefault(token.stream_id, []).append(token.token_id)
            if token.done is not None:
                self.done[token.stream_id] = token.done
        return out

    def until_done(self, *stream_ids: str, limit: int = 500) -> None:
        for _ in range(limit):
            if all(s in self.done for s in stream_ids):
                return
            self.step()
        raise AssertionError(f"not done: {set(stream_ids) - set(self.done)}")


def test_a_stream_alone_gives_generate_steps_tokens(loaded: LoadedModel) -> None:
    stepper = Stepper(lane(loaded))
    stepper.lane.admit(request(loaded, "a", prompt(1), 16), set())
    stepper.until_done("a")
    assert stepper.tokens["a"] == alone(loaded, prompt(1), 16)
    assert stepper.done["a"] == "length"
    assert len(stepper.lane) == 0


def test_a_stream_that_gets_company_mid_way_keeps_its_tokens(loaded: LoadedModel) -> None:
    stepper = Stepper(lane(loaded))
    stepper.lane.admit(request(loaded, "a", prompt(1), 24), set())
    for _ in range(6):
        stepper.step()
    assert stepper.lane.decoding == 1
    stepper.lane.admit(request(loaded, "b", prompt(2), 12), set())  # a moves into the batch
    stepper.until_done("a", "b")
    assert stepper.tokens["a"] == alone(loaded, prompt(1), 24)
    assert stepper.tokens["b"] == alone(loaded, prompt(2), 12)


def test_streams_leave_at_every_stage_and_the_rest_go_on(loaded: LoadedModel) -> None:
    stepper = Stepper(lane(loaded, budget=16))
    batch = stepper.lane
    batch.admit(request(loaded, "solo", prompt(1), 200), set())
    stepper.step()
    assert batch.decoding == 1
    batch.admit(request(loaded, "long", prompt(2, 200), 200), set())  # prefills 16 a step
    batch.admit(request(loaded, "next", prompt(3), 200), set())  # waits behind it
    stepper.step()
    assert batch.prefilling and batch.stream_ids() == ["long", "next", "solo"]
    cached = len(batch.prompt_cache)

    batch.remove("long")  # mid-prefill: its partial cache is kept for later
    assert len(batch.prompt_cache) == cached + 1
    assert batch.stream_ids() == ["next", "solo"]
    for _ in range(3):
        stepper.step()
    assert batch.decoding == 2 and "long" not in stepper.tokens
    batch.remove("solo")  # in the batch now
    batch.remove("never-admitted")  # nothing to do
    for _ in range(3):
        stepper.step()
    assert batch.stream_ids() == ["next"]
    solo_tokens = len(stepper.tokens["solo"])
    stepper.step()
    assert len(stepper.tokens["solo"]) == solo_tokens  # nothing after it left
    batch.remove("next")
    assert len(batch) == 0 and batch.stream_ids() == []


def test_the_batch_size_holds_later_streams_in_prefill(loaded: LoadedModel) -> None:
    stepper = Stepper(lane(loaded, max_batch_size=2))
    for index, stream_id in enumerate(("a", "b", "c")):
        stepper.lane.admit(request(loaded, stream_id, prompt(index), 4 + 4 * index), set())
    for _ in range(3):
        stepper.step()
    assert stepper.lane.decoding == 2 and stepper.lane.prefilling
    assert "c" not in stepper.tokens
    stepper.until_done("a", "b", "c")
    assert stepper.tokens["c"] == alone(loaded, prompt(2), 12)


def test_a_prefill_feeds_at_most_its_budget(loaded: LoadedModel) -> None:
    batch = lane(loaded, budget=16)
    batch.admit(request(loaded, "a", prompt(1, 100), 4), set())
    chunks = []
    while not batch.decoding:
        assert not batch.decode()
        batch.prefill(16)
        chunks.append(batch.last_prefill_tokens)
    # 99 tokens go through prefill (the last is the decoder's to feed), 16 at most a step.
    assert chunks == [16] * 6 + [3]


def test_a_finished_streams_cache_serves_the_next_prompt_that_shares_it(
    loaded: LoadedModel,
) -> None:
    stepper = Stepper(lane(loaded))
    stepper.lane.admit(request(loaded, "a", prompt(1, 40), 4), set())
    stepper.until_done("a")
    cached = stepper.lane.admit(request(loaded, "b", prompt(1, 40) + [5, 6, 7], 4), set())
    assert cached >= 40
    stepper.until_done("b")
    assert stepper.tokens["b"] == alone(loaded, prompt(1, 40) + [5, 6, 7], 4)


def test_a_stop_token_ends_a_stream_in_the_batch_and_not_its_neighbour(
    loaded: LoadedModel,
) -> None:
    want = alone(loaded, prompt(1), 16)
    stop = want[8]
    stepper = Stepper(lane(loaded))
    stepper.lane.admit(request(loaded, "a", prompt(1), 16), {stop})
    stepper.lane.admit(request(loaded, "b", prompt(2), 16), set())
    stepper.until_done("a", "b")
    assert stepper.done == {"a": "stop", "b": "length"}
    assert stepper.tokens["a"] == want[: want.index(stop) + 1]


def shared_prompts(count: int, prefix: int = 200, suffix: int = 10) -> list[list[int]]:
    head = prompt(7, prefix)
    return [head + prompt(20 + i, suffix) for i in range(count)]


def fed(stepper: Stepper, *stream_ids: str) -> int:
    """Prompt tokens the lane fed until the streams ended."""
    total = 0
    for _ in range(500):
        if all(s in stepper.done for s in stream_ids):
            return total
        stepper.step()
        total += stepper.lane.last_prefill_tokens
    raise AssertionError("not done")


def test_prompts_that_arrive_together_with_one_prefix_prefill_it_once(
    loaded: LoadedModel,
) -> None:
    stepper = Stepper(lane(loaded, budget=64))
    prompts = shared_prompts(3)
    cached = [
        stepper.lane.admit(request(loaded, f"s{i}", tokens, 8), set())
        for i, tokens in enumerate(prompts)
    ]
    assert cached == [0, 200, 200]  # told at admission, as stream.stats reports it
    # The first prompt all but its last token; the others their own suffix only.
    assert fed(stepper, "s0", "s1", "s2") == 209 + 2 * 9
    for i, tokens in enumerate(prompts):
        assert stepper.tokens[f"s{i}"] == alone(loaded, tokens, 8)


def test_a_prompt_follows_the_longest_shared_prefix_and_a_chain_holds(
    loaded: LoadedModel,
) -> None:
    stepper = Stepper(lane(loaded, budget=64))
    head = prompt(7, 200)
    first = head + prompt(30, 100)  # 300 tokens
    second = first + prompt(31, 10)  # shares all 299 the first one prefills
    third = head + prompt(32, 10)  # shares 200 with both: follows the first
    assert stepper.lane.admit(request(loaded, "a", first, 6), set()) == 0
    assert stepper.lane.admit(request(loaded, "b", second, 6), set()) == 299
    assert stepper.lane.admit(request(loaded, "c", third, 6), set()) == 200
    assert fed(stepper, "a", "b", "c") == 299 + 10 + 9
    assert stepper.tokens["b"] == alone(loaded, second, 6)
    assert stepper.tokens["c"] == alone(loaded, third, 6)


def test_a_follower_whose_leader_leaves_mid_prefill_prefills_the_rest_itself(
    loaded: LoadedModel,
) -> None:
    stepper = Stepper(lane(loaded, budget=64))
    prompts = shared_prompts(2)
    stepper.lane.admit(request(loaded, "leader", prompts[0], 8), set())
    stepper.lane.admit(request(loaded, "follower", prompts[1], 8), set())
    stepper.step()  # the leader has fed 64 of the 200 shared tokens
    stepper.lane.remove("leader")
    stepper.until_done("follower")
    assert stepper.tokens["follower"] == alone(loaded, prompts[1], 8)


def test_short_shared_prefixes_are_not_worth_following(loaded: LoadedModel) -> None:
    stepper = Stepper(lane(loaded, budget=64))
    prompts = shared_prompts(2, prefix=40)
    stepper.lane.admit(request(loaded, "a", prompts[0], 4), set())
    assert stepper.lane.admit(request(loaded, "b", prompts[1], 4), set()) == 0


@pytest.mark.parametrize("company", [False, True], ids=["leader decodes alone", "in the batch"])
def test_a_prompt_arriving_a_step_after_its_prefix_was_prefilled_takes_it(
    loaded: LoadedModel, company: bool
) -> None:
    stepper = Stepper(lane(loaded, budget=512))
    prompts = shared_prompts(2)
    if company:
        stepper.lane.admit(request(loaded, "other", prompt(3), 40), set())
        stepper.step()
    stepper.lane.admit(request(loaded, "a", prompts[0], 8), set())
    stepper.step()  # a's whole prompt in one step: it decodes from the next one
    assert stepper.lane.admit(request(loaded, "b", prompts[1], 8), set()) == 200
    assert fed(stepper, "a", "b") == 9
    assert stepper.tokens["a"] == alone(loaded, prompts[0], 8)
    assert stepper.tokens["b"] == alone(loaded, prompts[1], 8)
    if company:
        stepper.until_done("other")
        assert stepper.tokens["other"] == alone(loaded, prompt(3), 40)


def test_short_prompts_sent_together_prefill_in_one_pass_with_their_own_tokens(
    loaded: LoadedModel,
) -> None:
    stepper = Stepper(lane(loaded, max_batch_size=8))
    lengths = [12, 5, 30, 9, 17, 2]  # padded to 30 in one batch
    for index, length in enumerate(lengths):
        stepper.lane.admit(request(loaded, f"s{index}", prompt(index, length), 10), set())
    stepper.step()
    assert stepper.lane.decoding == len(lengths) and not stepper.lane.prefilling
    assert stepper.lane.last_prefill_tokens == 29 * len(lengths)  # the last token is left
    stepper.until_done(*(f"s{index}" for index in range(len(lengths))))
    for index, length in enumerate(lengths):
        assert stepper.tokens[f"s{index}"] == alone(loaded, prompt(index, length), 10)


def test_short_prompts_are_grouped_oldest_first_within_the_budget(loaded: LoadedModel) -> None:
    batch = lane(loaded, max_batch_size=8, budget=64)
    batch.admit(request(loaded, "long", prompt(2, 200), 4), set())  # alone, in chunks
    for index, stream_id in enumerate("abcd"):
        batch.admit(request(loaded, stream_id, prompt(3 + index, 20), 4), set())
    fed = []
    while batch.prefilling:
        batch.decode()
        batch.prefill(64)
        fed.append(batch.last_prefill_tokens)
    # The long prompt's 199 tokens in budget-sized chunks; the step that ends it has 57
    # tokens left, three short prompts padded to 19; the fourth goes next step.
    assert fed == [64, 64, 64, 7 + 3 * 19, 19]


def test_a_prompt_with_a_cached_prefix_is_not_grouped(loaded: LoadedModel) -> None:
    stepper = Stepper(lane(loaded))
    stepper.lane.admit(request(loaded, "first", prompt(4, 20), 4), set())
    stepper.until_done("first")  # its cache now serves prompt(4, 20)
    batch = stepper.lane
    batch.admit(request(loaded, "a", prompt(3, 20), 4), set())
    batch.admit(request(loaded, "b", prompt(4, 20) + [7, 8], 4), set())
    batch.admit(request(loaded, "c", prompt(5, 20), 4), set())
    assert short_group(batch._waiting, 512, 8) == []  # "a" alone is no group
    stepper.until_done("a", "b", "c")
    assert stepper.tokens["b"] == alone(loaded, prompt(4, 20) + [7, 8], 4)
    assert stepper.tokens["c"] == alone(loaded, prompt(5, 20), 4)


def test_a_short_prompt_lets_a_small_cache_hit_go_to_join_a_group(loaded: LoadedModel) -> None:
    stepper = Stepper(lane(loaded))
    stepper.lane.admit(request(loaded, "first", prompt(1, 20), 4), set())
    stepper.until_done("first")
    shares_three = prompt(1, 3) + prompt(7, 17)  # the cache holds 3 of its 20 tokens
    assert stepper.lane.admit(request(loaded, "a", shares_three, 6), set()) == 0
    assert stepper.lane.admit(request(loaded, "b", prompt(8, 20), 6), set()) == 0
    stepper.step()
    assert stepper.lane.decoding == 2 and stepper.lane.last_prefill_tokens == 2 * 19
    stepper.until_done("a", "b")
    assert stepper.tokens["a"] == alone(loaded, shares_three, 6)
    assert stepper.tokens["b"] == alone(loaded, prompt(8, 20), 6)


def test_short_prompts_waiting_together_join_a_whole_group_a_step(loaded: LoadedModel) -> None:
    """Past the budget, but one group a step: prompts admitted one by one each cost a pass
    over the weights and a copy of the batch's KV to join it (and another to leave)."""
    stepper = Stepper(lane(loaded, max_batch_size=16, budget=32))
    stepper.lane.admit(request(loaded, "decoding", prompt(1, 20), 30), set())
    stepper.step()
    for index in range(10):
        stepper.lane.admit(request(loaded, f"s{index}", prompt(10 + index, 20), 6), set())
    stepper.step()
    assert stepper.lane.last_prefill_tokens == 8 * 19  # a group is at most eight
    stepper.step()
    assert stepper.lane.last_prefill_tokens == 2 * 19
    assert stepper.lane.decoding == 11 and not stepper.lane.prefilling
    stepper.until_done("decoding", *(f"s{index}" for index in range(10)))
    assert stepper.tokens["decoding"] == alone(loaded, prompt(1, 20), 30)
    for index in range(10):
        assert stepper.tokens[f"s{index}"] == alone(loaded, prompt(10 + index, 20), 6)
