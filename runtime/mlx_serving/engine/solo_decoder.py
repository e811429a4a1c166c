"""One stream decoded alone, step for step as `mlx_lm.generate_step` does, in a form that
can be handed to a BatchGenerator mid-stream.

mlx-lm's BatchGenerator costs more per step than `generate_step` at batch size one (its
batched cache builds masks and offsets every step), and one stream at a time is the
commonest local use. So a model's only decoding stream runs here; when a second one is
ready, `handoff()` returns the token already sampled and the KV cache with exactly the
tokens fed into it, and the stream goes on in the batch with no sample drawn twice, so
seeded streams give the same tokens either way.

Like generate_step, step k+1 is queued before token k is read back, and the context
that logits processors see is kept as an MLX array, so reading a token never waits for
more than its own step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import mlx.core as mx
from mlx_lm.generate import generation_stream

from .prefill import Prefill

Done = Literal["stop", "length"] | None
SoloToken = tuple[int, mx.array, Done]

# generate_step returns MLX's buffer cache to the system this often.
CLEAR_CACHE_EVERY = 256


@dataclass
class Handoff:
    cache: list[Any]
    cache_tokens: list[int]  # exactly what the cache holds
    next_prompt: list[int]  # still to feed: the sampled token
    remaining_tokens: int  # generation budget left


class SoloDecoder:
    def __init__(self, model: Any, prefill: Prefill) -> None:
        request = prefill.request
        self.request = request
        self.stream_id = request.stream_id
        self.stop_ids = prefill.stop_ids
        self.cache = prefill.cache
        self.cache_tokens = prefill.cache_tokens + prefill.remaining
        self._model = model
        self._processors = request.logits_processors
        fed = mx.array(prefill.remaining)
        # What the processors see: every token fed so far (a lazy array, never read back);
        # _forward appends what it feeds. int32 like the fed tokens, even when empty.
        self._context = mx.array(prefill.cache_tokens, dtype=mx.int32) if self._processors else None
        self.generated = 0
        with mx.stream(generation_stream):
            self._pending = self._forward(fed)
        mx.async_eval(*self._pending)  # type: ignore[no-untyped-call]

    def step(self) -> SoloToken:
        """The next token with "stop" / "length" when it ends the stream."""
        sampled, logprobs = self._pending
        self.generated += 1
        ahead = self.generated < self.request.max_tokens
        if ahead:
            # Feed the sampled token before reading it back: the next step computes while
            # Python handles this one.
            with mx.stream(generation_stream):
                self._pending = self._forward(sampled)
            mx.async_eval(*self._pending)  # type: ignore[no-untyped-call]
        token = cast(int, sampled.item())
        if ahead:
            self.cache_tokens.append(token)
        if self.generated % CLEAR_CACHE_EVERY == 0:
            mx.clear_cache()
        return token, logprobs, self._verdict(token)

    def handoff(self) -> tuple[SoloToken, Handoff | None]:
        """Stop decoding here. Returns the token already sampled and what a batch needs to
        go on, or None for the latter when the stream ended with that token."""
        sampled, logprobs = self._pending
        token = cast(int, sampled.item())
        self.generated += 1
        done = self._verdict(token)
        if done is not None:
            return (token, logprobs, done), None
        rest = self.request.max_tokens - self.generated
        return (token, logprobs, None), Handoff(self.cache, self.cache_tokens, [token], rest)

    def _verdict(self, token: int) -> Done:
        if token in self.stop_ids:
            return "stop"
        if self.generated >= self.request.max_tokens:
            return "length"
        return None

    def _forward(self, fed: mx.array) -> tuple[mx.array, mx.array]:
        logits = self._model(fed.reshape(1, -1), cache=self.cache)[:, -1, :]
        if self._context is not None:
            self._context = mx.concatenate([self._context, fed.reshape(-1).astype(mx.int32)])
            for processor in self._processors:
                logits = processor(self._context, logits)
        logprobs = logits - mx.logsumexp(logits, keepdims=True)
        return self.request.sampler(logprobs), logprobs.squeeze(0)
