"""One stream decoded alone, the way `mlx_lm.generate_step` does it, in a form that can be
handed to a BatchGenerator mid-stream.

mlx-lm's BatchGenerator costs more per step than `generate_step` at batch size one (its
batched cache builds masks and offsets every step: measured 720 vs 880 µs CPU per token on
a tiny model here), and one stream at a time is the commonest local use. So a model's first
stream runs here; when a second arrives, `handoff()` returns the token already sampled and
the KV cache with exactly the tokens fed into it, and the stream continues in the batch
with no sample drawn twice, so seeded streams give the same tokens either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import mlx.core as mx
from mlx_lm.generate import generation_stream
from mlx_lm.models.cache import make_prompt_cache

from .prompt_cache import CacheLookup
from .stream import StreamRequest


@dataclass
class Handoff:
    cache: list[Any]
    cache_tokens: list[int]  # exactly what the cache holds
    next_prompt: list[int]  # still to feed: the rest of the prompt, or the sampled token
    remaining_tokens: int  # generation budget left


class SoloDecoder:
    def __init__(
        self,
        model: Any,
        request: StreamRequest,
        lookup: CacheLookup,
        stop_ids: set[int],
        prefill_chunk_tokens: int,
    ) -> None:
        self.stream_id = request.stream_id
        self.request = request
        self._model = model
        self.stop_ids = stop_ids
        self._chunk = prefill_chunk_tokens
        self.cache: list[Any] = (
            lookup.cache if lookup.cache is not None else make_prompt_cache(model)
        )
        self.cache_tokens: list[int] = list(request.prompt_tokens[: lookup.cached_tokens])
        self._prompt: list[int] = list(lookup.remaining)
        self._sampled: mx.array | None = None  # sampled, not yet fed
        self._logprobs: mx.array | None = None
        self.generated = 0

    def step(self) -> tuple[int, mx.array, str | None] | None:
        """One prefill chunk (None), or the next token with "stop"/"length"/None."""
        with mx.stream(generation_stream):
            if len(self._prompt) > 1:
                chunk = self._prompt[: min(self._chunk, len(self._prompt) - 1)]
                self._model(mx.array(chunk)[None], cache=self.cache)
                mx.eval([c.state for c in self.cache])
                self.cache_tokens += chunk
                self._prompt = self._prompt[len(chunk) :]
                return None
            if self._sampled is None:
                self._sampled, self._logprobs = self._forward(mx.array(self._prompt))
                self.cache_tokens += self._prompt
                self._prompt = []
            sampled, logprobs = self._sampled, self._logprobs
            assert logprobs is not None
            ahead = self.generated + 1 < self.request.max_tokens
            if ahead:
                # Feed the sampled token before reading it back: the next step computes
                # while Python handles this one, as in generate_step.
                self._sampled, self._logprobs = self._forward(sampled)
                mx.async_eval(self._sampled, self._logprobs)  # type: ignore[no-untyped-call]
            token = cast(int, sampled.item())
            if ahead:
                self.cache_tokens.append(token)
            self.generated += 1
            done = None
            if token in self.stop_ids:
                done = "stop"
            elif self.generated >= self.request.max_tokens:
                done = "length"
            return token, logprobs, done

    def handoff(self) -> tuple[tuple[int, mx.array, str | None] | None, Handoff | None]:
        """Stop decoding here. Returns the token already sampled (if any) and what a batch
        needs to go on, or None for the latter when the stream ended with that token."""
        if self._sampled is None:
            return None, Handoff(
                self.cache, self.cache_tokens, self._prompt, self.request.max_tokens
            )
        assert self._logprobs is not None
        token = cast(int, self._sampled.item())
        self.generated += 1
        if token in self.stop_ids:
            return (token, self._logprobs, "stop"), None
        if self.generated >= self.request.max_tokens:
            return (token, self._logprobs, "length"), None
        rest = self.request.max_tokens - self.generated
        return (token, self._logprobs, None), Handoff(self.cache, self.cache_tokens, [token], rest)

    def _forward(self, fed: mx.array) -> tuple[mx.array, mx.array]:
        logits = self._model(fed.reshape(1, -1), cache=self.cache)[:, -1, :]
        if self.request.logits_processors:
            fed_tokens = cast(list[int], fed.reshape(-1).tolist())
            context = mx.array(self.cache_tokens + fed_tokens)
            for processor in self.request.logits_processors:
                logits = processor(context, logits)
        logprobs = logits - mx.logsumexp(logits, keepdims=True)
        return self.request.sampler(logprobs), logprobs.squeeze(0)
