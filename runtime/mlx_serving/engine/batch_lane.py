"""All streams of one model decoded together in one continuous batch.

Built on mlx-lm's `BatchGenerator`: requests join between decode steps and leave when they
finish; each keeps its own sampler, logits processors, token budget and stop tokens. A
long prompt is prefilled in chunks of `prefill_chunk_tokens`, one chunk per step, so the
streams already decoding get a token between chunks instead of waiting for the whole
prompt. Finished streams hand their KV cache to the model's prompt cache. A stream alone
in its lane decodes through `SoloDecoder` and moves into the batch when another arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, StopSequences

from .prompt_cache import PromptCache
from .solo_decoder import SoloDecoder
from .stream import StreamRequest


@dataclass
class LaneToken:
    """One generated token of one stream. `done` is mlx-lm's verdict: "stop" (a stop token,
    not part of the text) or "length" (the budget is spent; this token still counts)."""

    stream_id: str
    token_id: int
    logprobs: mx.array
    done: str | None


class BatchLane:
    def __init__(
        self,
        model: Any,
        prompt_cache: PromptCache,
        *,
        max_batch_size: int,
        prefill_chunk_tokens: int,
        solo: bool = True,
    ) -> None:
        """`solo`: a stream alone decodes through SoloDecoder. A distributed runtime turns
        it off: its sharded models deadlock there (pipeline stages evaluate one step's
        collectives in different orders), and BatchGenerator is mlx-lm's own sharded path."""
        self.prompt_cache = prompt_cache
        self._solo_allowed = solo
        self._model = model
        self._prefill_chunk_tokens = prefill_chunk_tokens
        self._solo: SoloDecoder | None = None
        self._generator = BatchGenerator(
            model,
            completion_batch_size=max_batch_size,
            prefill_batch_size=min(8, max_batch_size),
            prefill_step_size=prefill_chunk_tokens,
        )
        self._stream_of: dict[int, str] = {}
        self._uid_of: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._uid_of) + (self._solo is not None)

    def admit(self, request: StreamRequest, eos_token_ids: set[int]) -> int:
        """Queue a stream for prefill; returns how many prompt tokens came from the cache."""
        lookup = self.prompt_cache.fetch(request.prompt_tokens)
        stop_ids = eos_token_ids | set(request.stop_token_ids)
        if self._solo_allowed and not len(self):
            self._solo = SoloDecoder(
                self._model, request, lookup, stop_ids, self._prefill_chunk_tokens
            )
            return lookup.cached_tokens
        self._insert(
            request,
            stop_ids,
            prompt=lookup.remaining,
            cache=lookup.cache,
            cache_tokens=request.prompt_tokens[: lookup.cached_tokens],
            max_tokens=request.max_tokens,
        )
        return lookup.cached_tokens

    def _insert(
        self,
        request: StreamRequest,
        stop_ids: set[int],
        *,
        prompt: list[int],
        cache: list[Any] | None,
        cache_tokens: list[int],
        max_tokens: int,
    ) -> None:
        (uid,) = self._generator.insert(
            [prompt],
            max_tokens=[max_tokens],
            caches=[cache] if cache is not None else None,
            all_tokens=[list(cache_tokens)],
            samplers=[request.sampler],
            logits_processors=[request.logits_processors],
            stop_sequences=[StopSequences([[t] for t in sorted(stop_ids)])],
        )
        self._stream_of[uid] = request.stream_id
        self._uid_of[request.stream_id] = uid

    def step(self) -> list[LaneToken]:
        """One decode step for every decoding stream, plus one prefill chunk if any wait."""
        tokens: list[LaneToken] = []
        solo = self._solo
        if solo is not None:
            if not self._uid_of:
                token = solo.step()
                if token is not None:
                    tokens.append(LaneToken(solo.stream_id, *token))
                    if token[2] is not None:
                        self._end_solo()
                return tokens
            tokens += self._hand_solo_to_batch(solo)
        _, responses = self._generator.next()
        for response in responses:
            stream_id = self._stream_of[response.uid]
            if response.finish_reason is not None:
                self._forget(response.uid)
                if response.prompt_cache is not None and response.all_tokens:
                    self.prompt_cache.store(response.all_tokens, response.prompt_cache)
            tokens.append(
                LaneToken(stream_id, response.token, response.logprobs, response.finish_reason)
            )
        return tokens

    def _hand_solo_to_batch(self, solo: SoloDecoder) -> list[LaneToken]:
        self._solo = None
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
        return [LaneToken(solo.stream_id, *last)] if last is not None else []

    def _end_solo(self) -> None:
        solo, self._solo = self._solo, None
        if solo is not None and solo.cache_tokens:
            self.prompt_cache.store(solo.cache_tokens, solo.cache)

    def remove(self, stream_id: str) -> None:
        """Take a stream out early (cancelled, stopped by text, failed); keep its cache."""
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
        return solo + list(self._uid_of)

    def close(self) -> None:
        self._generator.close()

    def _forget(self, uid: int) -> None:
        stream_id = self._stream_of.pop(uid)
        del self._uid_of[stream_id]
