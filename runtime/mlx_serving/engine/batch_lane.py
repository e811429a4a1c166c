"""All streams of one model: prompts prefilled first come, first served, then decoded
together in one continuous batch.

A step decodes one token for every decoding stream, then spends a token budget (the
scheduler sizes it from measured step times) on prefill: the oldest waiting prompt alone
(`Prefill`), or the oldest short ones together (short_prompts.py), then the next if
budget is left. A prompt whose cache is full joins the decoders: alone, it decodes
through `SoloDecoder`; beside others, through mlx-lm's `BatchGenerator`, which it enters
with its cache and its last prompt token, so the batch never prefills anything itself.
Finished streams hand their KV cache to the model's prompt cache.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, StopSequences

from ..config import SchedulerConfig
from ..glibc_heap import arrays_in_host_heap
from .kv_disk import disk_blocks
from .loader import LoadedModel
from .prefill import Prefill
from .prompt_cache import PromptCache
from .shared_prefix import best_leader, sliceable
from .short_prompts import WHOLE_GROUP, feeds_whole, prefill_together, short_group
from .solo_decoder import SoloDecoder
from .step_budget import StepBudget
from .stream import StreamRequest


@dataclass
class LaneToken:
    """One generated token of one stream. `done`: "stop" (a stop token, not part of the
    text) or "length" (the budget is spent; this token still counts)."""

    stream_id: str
    token_id: int
    logprobs: mx.array
    done: Literal["stop", "length"] | None


class BatchLane:
    def __init__(
        self,
        model: Any,
        prompt_cache: PromptCache,
        budget: StepBudget,
        *,
        max_batch_size: int,
        solo: bool = True,
        clear_cache_after_reshapes: bool = False,
    ) -> None:
        """`solo`: a stream alone decodes through SoloDecoder. A distributed runtime turns
        it off: its sharded models deadlock there (pipeline stages evaluate one step's
        collectives in different orders), and BatchGenerator is mlx-lm's own sharded path.
        `clear_cache_after_reshapes`: MLX reuses a cached buffer only for an array of the
        same size, and a batch's KV changes size with every stream that joins or leaves it:
        on a CPU the cache held the old arrays while each new one took fresh pages (a stream
        leaving a batch of 32: 40k page faults, 100-150 ms added to a 45 ms step). Handed to
        glibc, which keeps them (glibc_heap.py), they are reused: no faults, 10-35 ms."""
        self.prompt_cache = prompt_cache
        self.budget = budget  # the scheduler reads it; the steps measured here feed it
        self._solo_allowed = solo
        self._model = model
        self._max_batch = max_batch_size
        self._waiting: deque[Prefill] = deque()  # oldest first
        # Prompts whose prefill ended in the last step: until the next step decodes, a
        # prompt admitted now can still take views of their KV (shared_prefix.py) at no
        # cost to them. Prompts sent together often arrive a step apart.
        self._just_prefilled: list[Prefill] = []
        self._solo: SoloDecoder | None = None
        self._generator = BatchGenerator(model, completion_batch_size=max_batch_size)
        self._stream_of: dict[int, str] = {}
        self._uid_of: dict[str, int] = {}
        self._clear_after_reshapes = clear_cache_after_reshapes
        self._steps_to_clear = 0
        self.last_prefill_tokens = 0  # fed by the last step, for metrics

    def __len__(self) -> int:
        return len(self._waiting) + self.decoding

    @property
    def decoding(self) -> int:
        """Streams that get a token every step."""
        return len(self._uid_of) + (self._solo is not None)

    @property
    def prefilling(self) -> bool:
        return bool(self._waiting)

    def prefill_budget(self) -> int:
        """Prompt tokens the next prefill may feed, as measured so far (step_budget.py)."""
        context = self._waiting[0].context if self._waiting else 0
        backlog = len(self._waiting) / max(1, self.decoding)
        return self.budget.tokens(decoding=self.decoding > 0, context=context, backlog=backlog)

    def admit(self, request: StreamRequest, eos_token_ids: set[int]) -> int:
        """Queue a stream for prefill; returns how many prompt tokens came from the cache."""
        lookup = self.prompt_cache.fetch(request.prompt_tokens)
        stop_ids = eos_token_ids | set(request.stop_token_ids)
        prefill = Prefill(self._model, request, lookup, stop_ids)
        cached = lookup.cached_tokens
        leader = best_leader([*self._just_prefilled, *self._waiting], request.prompt_tokens, cached)
        if leader is not None:
            prefill.follow(*leader)
            cached = prefill.shared_tokens
            if leader[0] in self._just_prefilled:
                prefill.take_shared()
        elif feeds_whole(prefill):
            prefill.let_cache_go()
            cached = 0
        self._waiting.append(prefill)
        return cached

    # A step is decode() then prefill(); the scheduler sends the decoded tokens in between,
    # so no stream's token waits for a chunk of another prompt.

    def decode(self) -> list[LaneToken]:
        """One token for every decoding stream."""
        self._just_prefilled.clear()  # decoding writes past their prompts from here on
        if self._steps_to_clear:
            self._steps_to_clear -= 1
            mx.clear_cache()  # the batch's arrays from before its size changed
        started = time.perf_counter()
        tokens = self._decode()
        if tokens:
            self.budget.record_decode(time.perf_counter() - started)
        return tokens

    def prefill(self, prefill_tokens: int) -> list[LaneToken]:
        """Up to `prefill_tokens` of the waiting prompts, oldest first. Returns the token a
        lone decoding stream had already sampled if it moved into the batch."""
        started = time.perf_counter()
        handed_over, fed, attended = self._prefill(prefill_tokens)
        if fed:
            self.budget.record_prefill(fed, time.perf_counter() - started, attended)
        self.last_prefill_tokens = fed
        return handed_over

    def _decode(self) -> list[LaneToken]:
        solo = self._solo
        if solo is not None:
            token = solo.step()
            if token[2] is not None:
                self._end_solo()
            return [LaneToken(solo.stream_id, *token)]
        if not self._uid_of:
            return []
        tokens = []
        for response in self._generator.next_generated():
            stream_id = self._stream_of[response.uid]
            if response.finish_reason is not None:
                self._forget(response.uid)
                if response.prompt_cache is not None and response.all_tokens:
                    self.prompt_cache.store(response.all_tokens, response.prompt_cache)
            tokens.append(
                LaneToken(stream_id, response.token, response.logprobs, response.finish_reason)
            )
        return tokens

    def _prefill(self, budget: int) -> tuple[list[LaneToken], int, float]:
        """Returns the token a solo stream had already sampled when it moved to the batch,
        how many prompt tokens were fed, and the context they attended to (step_budget)."""
        handed_over: list[LaneToken] = []
        fed = 0
        attended = 0.0
        while self._waiting and self.decoding < self._max_batch:
            # A step's first group is taken whole, past the budget (short_prompts.py).
            room = budget - fed if fed else WHOLE_GROUP
            group = short_group(self._waiting, room, self._max_batch - self.decoding)
            if group:
                computed = prefill_together(self._model, group)
                fed += computed
                # Every padded row attends to half its width on average.
                attended += computed * (computed / len(group)) / 2
                for prefill in group:
                    self._waiting.popleft()
                    handed_over += self._start_decoding(prefill, alone=False)
            else:
                prefill = self._waiting[0]
                count = prefill.run(budget - fed)
                fed += count
                attended += count * (len(prefill.cache_tokens) - count / 2)
                if not prefill.done:
                    break
                self._waiting.popleft()
                handed_over += self._start_decoding(prefill)
            # A stream that just finished its prefill gets its first token next step: go
            # on only with prompts this step can finish too (short ones, arriving together),
            # never delaying that first token by a chunk of somebody else's prompt.
            if self._waiting and len(self._waiting[0].remaining) - 1 > budget - fed:
                break
        return handed_over, fed, attended

    def _start_decoding(self, prefill: Prefill, alone: bool = True) -> list[LaneToken]:
        """`alone`: no other prompt starts decoding beside it this step, so it may decode
        through the SoloDecoder (which a second one would only hand to the batch)."""
        self._hand_prefix_to_followers(prefill)
        if sliceable(prefill.cache):
            self._just_prefilled.append(prefill)
        if self._solo_allowed and alone and not self.decoding:
            self._solo = SoloDecoder(self._model, prefill)
            return []
        solo_token = self._hand_solo_to_batch()
        self._insert(
            prefill.request,
            prefill.stop_ids,
            prompt=prefill.remaining,
            cache=prefill.cache,
            cache_tokens=prefill.cache_tokens,
            max_tokens=prefill.request.max_tokens,
        )
        return solo_token

    def _hand_prefix_to_followers(self, leader: Prefill) -> None:
        """Before `leader`'s cache moves on (to a decoder, or out with its stream), the
        prompts following it take their views of it."""
        for prefill in self._waiting:
            if prefill.leader is leader:
                prefill.take_shared()

    def _hand_solo_to_batch(self) -> list[LaneToken]:
        solo, self._solo = self._solo, None
        if solo is None:
            return []
        last, handoff = solo.handoff()
        if handoff is None:  # the token already sampled ended the stream
            self.prompt_cache.store(solo.cache_tokens, solo.cache)
        else:
            self._insert(
                solo.request,
                solo.stop_ids,
                prompt=handoff.next_prompt,
                cache=handoff.cache,
                cache_tokens=handoff.cache_tokens,
                max_tokens=handoff.remaining_tokens,
            )
        return [LaneToken(solo.stream_id, *last)]

    def _insert(
        self,
        request: StreamRequest,
        stop_ids: set[int],
        *,
        prompt: list[int],
        cache: list[Any],
        cache_tokens: list[int],
        max_tokens: int,
    ) -> None:
        (uid,) = self._generator.insert(
            [prompt],
            max_tokens=[max_tokens],
            caches=[cache],
            all_tokens=[list(cache_tokens)],
            samplers=[request.sampler],
            logits_processors=[request.logits_processors],
            stop_sequences=[StopSequences([[t] for t in sorted(stop_ids)])],
        )
        self._stream_of[uid] = request.stream_id
        self._uid_of[request.stream_id] = uid
        self._reshaped()

    def _end_solo(self) -> None:
        solo, self._solo = self._solo, None
        if solo is not None and solo.cache_tokens:
            self.prompt_cache.store(solo.cache_tokens, solo.cache)

    def remove(self, stream_id: str) -> None:
        """Take a stream out early (cancelled, stopped by text, failed); keep its cache."""
        for prefill in self._waiting:
            if prefill.stream_id == stream_id:
                self._waiting.remove(prefill)
                self._hand_prefix_to_followers(prefill)
                if len(prefill.cache_tokens):
                    self.prompt_cache.store(prefill.cache_tokens, prefill.cache)
                return
        if self._solo is not None and self._solo.stream_id == stream_id:
            self._end_solo()
            return
        uid = self._uid_of.get(stream_id)
        if uid is None:
            return
        self._forget(uid)
        caches = self._generator.remove([uid], return_prompt_caches=True)
        cache, tokens = caches.get(uid, (None, None))
        if cache is not None and tokens:
            self.prompt_cache.store(list(tokens), cache)

    def stream_ids(self) -> list[str]:
        solo = [self._solo.stream_id] if self._solo is not None else []
        return [p.stream_id for p in self._waiting] + solo + list(self._uid_of)

    def close(self) -> None:
        self._generator.close()

    def _forget(self, uid: int) -> None:
        stream_id = self._stream_of.pop(uid)
        del self._uid_of[stream_id]
        self._reshaped()

    def _reshaped(self) -> None:
        """A stream joined or left the batch. A departure copies the batch's KV in the
        next step; a join merges it in the next step and grows it in the one after."""
        if self._clear_after_reshapes:
            self._steps_to_clear = 2


def new_lane(
    model: Any,
    settings: SchedulerConfig,
    *,
    solo: bool = True,
    persist_for: LoadedModel | None = None,
) -> BatchLane:
    """`persist_for`: the loaded model whose identity keys its prompt caches on disk
    (kv_disk); None keeps them in RAM."""
    budget = StepBudget(
        max_step_s=settings.max_step_ms / 1000,
        max_chunk_tokens=settings.prefill_chunk_tokens,
        fixed_tokens=settings.prefill_token_budget,
    )
    disk = None
    if persist_for is not None:
        disk = disk_blocks(persist_for, settings, lambda: budget.peak_prefill_tokens_per_s)
    cache = PromptCache(settings.prompt_cache_bytes, settings.prompt_cache_entries, disk)
    return BatchLane(
        model,
        cache,
        budget,
        max_batch_size=settings.max_batch_size,
        solo=solo,
        clear_cache_after_reshapes=arrays_in_host_heap(),
    )
