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

    @property
    def stream_id(self) -> str:
        return self.request.stream_id

    @property
    def done(self) -> bool:
        """Only the last prompt token is left: ready to decode."""
        return len(self.remaining) <= 1

    def run(self, max_tokens: int) -> int:
        """Feed up to `max_tokens` more prompt tokens; returns how many were fed."""
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
