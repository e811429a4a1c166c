"""All streams of one model decoded together in one continuous batch.

Built on mlx-lm's `BatchGenerator`: requests join between decode steps and leave when they
finish; each keeps its own sampler, logits processors, token budget and stop tokens. A
long prompt is prefilled in chunks of `prefill_chunk_tokens`, one chunk per step, so the
streams already decoding get a token between chunks instead of waiting for the whole
prompt. Finished streams hand their KV cache to the model's prompt cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, StopSequences

from .prompt_cache import PromptCache
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
    ) -> None:
        self.prompt_cache = prompt_cache
        self._generator = BatchGenerator(
            model,
            completion_batch_size=max_batch_size,
            prefill_batch_size=min(8, max_batch_size),
            prefill_step_size=prefill_chunk_tokens,
        )
        self._stream_of: dict[int, str] = {}
        self._uid_of: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._uid_of)

    def admit(self, request: StreamRequest, eos_token_ids: set[int]) -> int:
        """Queue a stream for prefill; returns how many prompt tokens came from the cache."""
        lookup = self.prompt_cache.fetch(request.prompt_tokens)
        stop_tokens = [[t] for t in sorted(eos_token_ids | set(request.stop_token_ids))]
        (uid,) = self._generator.insert(
            [lookup.remaining],
            max_tokens=[request.max_tokens],
            caches=[lookup.cache] if lookup.cache is not None else None,
            all_tokens=[request.prompt_tokens[: lookup.cached_tokens]],
            samplers=[request.sampler],
            logits_processors=[request.logits_processors],
            stop_sequences=[StopSequences(stop_tokens)],
        )
        self._stream_of[uid] = request.stream_id
        self._uid_of[request.stream_id] = uid
        return lookup.cached_tokens

    def step(self) -> list[LaneToken]:
        """One decode step for every decoding stream, plus one prefill chunk if any wait."""
        _, responses = self._generator.next()
        tokens = []
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

    def remove(self, stream_id: str) -> None:
        """Take a stream out early (cancelled, stopped by text, failed); keep its cache."""
        uid = self._uid_of.get(stream_id)
        if uid is None:
            return
        self._forget(uid)
        caches = self._generator.remove([uid], return_prompt_caches=True)
        cache, tokens = caches.get(uid, (None, None))
        if cache is not None and tokens:
            self.prompt_cache.store(list(tokens), cache)

    def stream_ids(self) -> list[str]:
        return list(self._uid_of)

    def close(self) -> None:
        self._generator.close()

    def _forget(self, uid: int) -> None:
        stream_id = self._stream_of.pop(uid)
        del self._uid_of[stream_id]
