"""One prompt filled into its own KV cache, a chunk at a time, as a single sequence.

Prompts are prefilled one after another, oldest first, each alone: no padding mask, so
attention takes its fused path, and the prompt that came first is never slowed down by
the ones behind it (mlx-lm's BatchGenerator prefills up to 8 prompts as one padded batch:
two 4k-token prompts sent together took 5.7x one alone on an H200, and both waited for
both). The last prompt token is left unfed: the decoder feeds it to get the first logits.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.generate import generation_stream
from mlx_lm.models.cache import make_prompt_cache

from .prompt_cache import CacheLookup
from .shared_prefix import prefix_views
from .stream import StreamRequest


class Prefill:
    def __init__(
        self, model: Any, request: StreamRequest, lookup: CacheLookup, stop_ids: set[int]
    ) -> None:
        self.request = request
        self.stop_ids = stop_ids
        self._model = model
        self.cache: list[Any] = (
            lookup.cache if lookup.cache is not None else make_prompt_cache(model)
        )
        self.cache_tokens: list[int] = list(request.prompt_tokens[: lookup.cached_tokens])
        self.remaining: list[int] = list(lookup.remaining)  # never empty
        # An older waiting prompt whose KV this one takes its first `shared_tokens` from
        # once that prompt's prefill is done (shared_prefix.py).
        self.leader: Prefill | None = None
        self.shared_tokens = 0

    @property
    def stream_id(self) -> str:
        return self.request.stream_id

    def follow(self, leader: Prefill, shared_tokens: int) -> None:
        """Take the first `shared_tokens` prompt tokens from `leader` instead of prefilling
        them; until then this prompt holds nothing (a prompt-cache hit is let go)."""
        self.leader, self.shared_tokens = leader, shared_tokens
        self.let_cache_go()

    def let_cache_go(self) -> None:
        """Start from an empty cache: the whole prompt is to be fed."""
        self.cache = make_prompt_cache(self._model)
        self.cache_tokens = []
        self.remaining = list(self.request.prompt_tokens)

    def take_shared(self) -> None:
        """The leader's prefill is done, or it was taken out early: take views of what it
        holds of the shared prefix (all of it, unless it left before filling it)."""
        leader, self.leader = self.leader, None
        if leader is None:
            return
        tokens = min(self.shared_tokens, len(leader.cache_tokens))
        if tokens == 0:
            return
        self.cache = prefix_views(leader.cache, tokens)
        self.cache_tokens = list(self.request.prompt_tokens[:tokens])
        self.remaining = list(self.request.prompt_tokens[tokens:])

    @property
    def context(self) -> int:
        """Tokens its cache will hold when its next chunk is fed (the shared prefix of a
        follower that has not taken it yet)."""
        return self.shared_tokens if self.leader is not None else len(self.cache_tokens)

    @property
    def done(self) -> bool:
        """Only the last prompt token is left: ready to decode."""
        return len(self.remaining) <= 1

    def adopt(self, cache: list[Any], count: int) -> None:
        """Its next `count` prompt tokens were fed elsewhere (short_prompts.py) into
        `cache`, which holds them after those already in its own cache."""
        self.cache = cache
        self.cache_tokens += self.remaining[:count]
        self.remaining = self.remaining[count:]

    def run(self, max_tokens: int) -> int:
        """Feed up to `max_tokens` more prompt tokens; returns how many were fed."""
        if self.leader is not None:  # first come, first served: the leader is done by now
            self.take_shared()
        count = min(max_tokens, len(self.remaining) - 1)
        if count <= 0:
            return 0
        chunk, self.remaining = self.remaining[:count], self.remaining[count:]
        with mx.stream(generation_stream):
            self._model(mx.array(chunk)[None], cache=self.cache)
            mx.eval([c.state for c in self.cache])
        # As generate_step does between chunks: the chunk's activations are garbage now.
        mx.clear_cache()
        self.cache_tokens += chunk
        return count
