"""How many prompt tokens one engine step may prefill.

A step decodes one token for every running stream and spends the rest of its time on
prefill, so the gap between a decoding stream's tokens stays near `max_step_ms` however
long the prompts beside it are (vLLM and SGLang bound their steps by a token budget the
same way). The budget is in tokens, sized from what this model measured on this machine:
prefill throughput and decode time per step, as moving averages. With nobody decoding the
step is allowed longer (prefill is then all there is to do), still bounded so that a
cancel or a shutdown waits for at most one such chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .prefill_cost import PrefillCost

# With nothing decoding, a step may take this many times max_step_ms.
IDLE_STEP_FACTOR = 4.0
# Prefill gets at least as long as decoding takes, even when that fills max_step_ms (a big
# batch on a CPU): the decoders' gap at most doubles while prompts wait, within the 3x
# their median that fair prefill allows. A fifth of max_step_ms beside 30 decoding
# streams let one short prompt in per step (32 sent together: 6 s to the last first token).
# With more prompts waiting than streams decoding, it gets that much longer again, up to
# an idle step: each step costs the batch about the same whatever its size (50 ms for 10
# or 32 streams of the bench model on this CPU), so every step a prompt waits is a step
# the others decode at a fraction of their batch; 32 prompts admitted one a step took 132
# steps and 8.8 s to decode 64 tokens each, admitted eight a step 68 steps and 4.9 s.
DECODE_PREFILL_SHARE = 1.0
MIN_CHUNK_TOKENS = 16
# Before anything was measured.
FIRST_CHUNK_TOKENS = 256
SMOOTHING = 0.5
# Each chunk of a prompt attends to a longer context than the last, so it costs more per
# token than the rate measured so far: with streams decoding, plan for this share of the
# spare time only.
DECODING_MARGIN = 0.75


@dataclass
class StepBudget:
    max_step_s: float
    max_chunk_tokens: int
    fixed_tokens: int | None = None  # a fixed budget instead of the measured one
    prefill_tokens_per_s: float | None = None
    # The fastest prefill measured: what a disk restore has to beat. The moving average
    # sinks whenever a new chunk shape compiles (0.1-0.5 s on a GPU), which would make a
    # fast machine look slow and send its KV to disk for nothing.
    peak_prefill_tokens_per_s: float | None = None
    decode_s: float = 0.0
    # Chunk cost against length and context; sizes chunks once it can (prefill_cost.py).
    cost: PrefillCost = field(default_factory=PrefillCost)

    def tokens(self, decoding: bool, context: int = 0, backlog: float = 1.0) -> int:
        """The prompt tokens a step may prefill; `context`: tokens the next prompt to be
        fed already holds in its cache; `backlog`: prompts waiting per decoding stream."""
        if self.fixed_tokens is not None:
            return self.fixed_tokens
        rate = self.prefill_tokens_per_s
        if rate is None:
            return min(FIRST_CHUNK_TOKENS, self.max_chunk_tokens)
        if decoding:
            share = self.decode_s * DECODE_PREFILL_SHARE * max(1.0, backlog)
            # However many wait, a decoding stream's gap stays within an idle step's length
            # (or one decode more, where a decode alone is longer).
            share = min(share, max(self.max_step_s * IDLE_STEP_FACTOR, self.decode_s))
            spare = max(self.max_step_s - self.decode_s, share)
            spare *= DECODING_MARGIN
        else:
            spare = self.max_step_s * IDLE_STEP_FACTOR
        fitted = self.cost.tokens_within(spare, context)
        tokens = fitted if fitted is not None else int(spare * rate)
        return max(MIN_CHUNK_TOKENS, min(self.max_chunk_tokens, tokens))

    def record_decode(self, seconds: float) -> None:
        self.decode_s += SMOOTHING * (seconds - self.decode_s)

    def record_prefill(self, tokens: int, seconds: float, attended: float | None = None) -> None:
        """`attended`: the sum over the prompts fed of n * (c + n / 2), n tokens fed after
        c cached (prefill_cost.py); without it only the plain rate learns."""
        # Chunks too small to time well would only add noise.
        if tokens < MIN_CHUNK_TOKENS or seconds <= 0:
            return
        if attended is not None:
            self.cost.record(tokens, attended, seconds)
        rate = tokens / seconds
        if self.peak_prefill_tokens_per_s is None or rate > self.peak_prefill_tokens_per_s:
            self.peak_prefill_tokens_per_s = rate
        previous = self.prefill_tokens_per_s
        self.prefill_tokens_per_s = (
            rate if previous is None else previous + SMOOTHING * (rate - previous)
        )
