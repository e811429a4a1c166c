"""A stream decoded with a draft model: mlx-lm's `speculative_generate_step`, on its own.

mlx-lm's BatchGenerator has no speculative path, so each drafted stream runs alone,
stepped by the same engine thread between batch steps. Under greedy sampling its output is
exactly the target model's (the draft only proposes; the target verifies every token).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import mlx.core as mx
from mlx_lm.generate import speculative_generate_step
from mlx_lm.models.cache import make_prompt_cache

from .batch_lane import LaneToken
from .stream import StreamRequest


class SpeculativeLane:
    def __init__(self, request: StreamRequest, draft_model: Any, num_draft_tokens: int) -> None:
        self.stream_id = request.stream_id
        self.accepted = 0
        self._stop_ids = set(request.stop_token_ids) | set(request.model.tokenizer.eos_token_ids)
        self._tokens: Iterator[tuple[int, mx.array, bool]] = speculative_generate_step(
            mx.array(request.prompt_tokens),
            request.model.model,
            draft_model,
            num_draft_tokens=num_draft_tokens,
            max_tokens=request.max_tokens,
            sampler=request.sampler,
            logits_processors=request.logits_processors or None,
            prompt_cache=make_prompt_cache(request.model.model) + make_prompt_cache(draft_model),
        )
        self._generated = 0
        self._max_tokens = request.max_tokens

    def step(self) -> LaneToken | None:
        """The next token, or None when the generator ran out (the budget is spent)."""
        try:
            token, logprobs, from_draft = next(self._tokens)
        except StopIteration:
            return None
        token = int(token)
        self._generated += 1
        if from_draft:
            self.accepted += 1
        done: Literal["stop", "length"] | None = None
        if token in self._stop_ids:
            done = "stop"
        elif self._generated >= self._max_tokens:
            done = "length"
        return LaneToken(self.stream_id, token, logprobs, done)
