"""Request sampling parameters → mlx-lm samplers and logits processors.

mlx-lm's filters (top-p, top-k, min-p) and penalties are used as they are. Only the final
draw is ours: mlx-lm's categorical sampler uses MLX's global random state, which streams
sharing one process would disturb for each other; a per-stream key makes a seed give the
same tokens whatever else runs beside it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import mlx.core as mx
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    greedy_sampler,
    make_logits_processors,
)

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    seed: int | None
    repetition_penalty: float | None
    repetition_context_size: int
    presence_penalty: float
    frequency_penalty: float
    logit_bias: dict[int, float] | None


def make_sampler(settings: SamplingSettings) -> Sampler:
    if settings.temperature == 0:
        return cast(Sampler, greedy_sampler)
    filters: list[Callable[[mx.array], mx.array]] = []
    if 0 < settings.top_p < 1.0:
        filters.append(lambda x: apply_top_p(x, settings.top_p))
    if settings.min_p > 0:
        filters.append(lambda x: apply_min_p(x, settings.min_p))
    if settings.top_k > 0:
        filters.append(lambda x: apply_top_k(x, settings.top_k))
    seed = settings.seed if settings.seed is not None else secrets.randbits(32)
    key = mx.random.key(seed)
    inverse_temperature = 1.0 / settings.temperature

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        for apply in filters:
            logprobs = apply(logprobs)
        key, draw_key = mx.random.split(key)
        return mx.random.categorical(logprobs * inverse_temperature, key=draw_key)

    return sample


def make_processors(settings: SamplingSettings) -> list[LogitsProcessor]:
    processors: list[LogitsProcessor] = make_logits_processors(
        logit_bias=settings.logit_bias,
        repetition_penalty=settings.repetition_penalty,
        repetition_context_size=settings.repetition_context_size,
        presence_penalty=settings.presence_penalty or None,
        presence_context_size=settings.repetition_context_size,
        frequency_penalty=settings.frequency_penalty or None,
        frequency_context_size=settings.repetition_context_size,
    )
    return processors
