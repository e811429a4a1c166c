"""What a generation stream asks for, and where its output goes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from ..arrival import arrival as arrival_order
from .chat.response import ChatOutput
from .guidance import StreamGuidance
from .loader import LoadedModel
from .sampling import LogitsProcessor, Sampler, SamplingSettings


@dataclass
class StreamRequest:
    stream_id: str
    model: LoadedModel
    prompt_tokens: list[int]
    max_tokens: int
    sampler: Sampler
    logits_processors: list[LogitsProcessor]
    stop_sequences: list[str]
    stop_token_ids: frozenset[int]
    logprobs: bool = False
    top_logprobs: int = 0
    include_cumulative_text: bool = False
    draft: LoadedModel | None = None  # speculative decoding with this model's proposals
    num_draft_tokens: int = 3
    # What built `sampler` and `logits_processors`: the other ranks of a distributed
    # runtime rebuild them from it.
    sampling: SamplingSettings | None = None
    guidance: StreamGuidance | None = None  # structured output; its mask is in logits_processors
    # How the text splits into text, reasoning and tool calls (chat requests with tools or
    # `reasoning: "separate"`); None: the text streams as generated.
    chat_output: ChatOutput | None = None
    submitted_at: float = field(default_factory=time.perf_counter)
    # Its request's place in the order requests were read: admission follows it.
    arrival: int = field(default_factory=arrival_order)

    def runs_on(self, model: LoadedModel) -> bool:
        return self.model is model or self.draft is model

    def retired(self) -> str | None:
        """Why the stream cannot run: its model (or draft) was retired after it was
        prepared (replaced or unloaded); None while both serve."""
        if self.draft is not None and self.draft.retirement.reason is not None:
            return self.draft.retirement.reason
        return self.model.retirement.reason


class StreamSink(Protocol):
    """Receives the notifications of one scheduler step, in order, as one batch."""

    def emit(self, notifications: list[tuple[str, msgspec.Struct]]) -> None: ...
