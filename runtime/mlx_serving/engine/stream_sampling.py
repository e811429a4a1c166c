"""A stream's sampling, built from its request: the settings it asks for, mlx-lm's sampler
and logits processors for them (sampling.py), and the guidance mask, last."""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.methods import GenerateParams
from .guidance import StreamGuidance
from .sampling import LogitsProcessor, Sampler, SamplingSettings, make_processors, make_sampler


@dataclass(frozen=True)
class StreamSampling:
    settings: SamplingSettings
    sampler: Sampler
    processors: list[LogitsProcessor]


def stream_sampling(params: GenerateParams, guidance: StreamGuidance | None) -> StreamSampling:
    settings = SamplingSettings(
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        min_p=params.min_p,
        seed=params.seed,
        repetition_penalty=params.repetition_penalty,
        repetition_context_size=params.repetition_context_size,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        logit_bias=params.logit_bias,
    )
    processors = make_processors(settings)
    if guidance is not None:
        processors.append(guidance.mask)  # last, so no later processor can lift it
    return StreamSampling(settings, make_sampler(settings), processors)
