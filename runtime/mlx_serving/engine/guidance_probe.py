"""A short walk through a request's grammar before its stream starts, to refuse up front
what llguidance cannot hold.

llguidance builds its lexer lazily, so a grammar can compile and then exhaust the matcher
some tokens into a stream: `([a-z]{1,50}){1,50}x` compiles, and 15-25 tokens in, the
matcher fails with "too many expressions constructed". The walk takes, at each step, the
longest token the grammar allows (the most text per step pushes the lexer furthest), for
at most PROBE_STEPS tokens or PROBE_SECONDS. A failure on the walk is one a stream could
meet, and the request is refused. What the walk does not reach a stream still may; the
stream then ends with an error event (guidance.TokenMask, stream_output.ActiveStream).

The walk runs on a copy of the stream's matcher. Copies share their lexer, so what the
walk builds a stream need not build again, and what exhausts the walk's lexer would
exhaust the stream's.
"""

from __future__ import annotations

import time

import llguidance
import numpy as np
import numpy.typing as npt
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

# 10-30 ms on the 1,024-token test vocabulary; the time bound caps large vocabularies.
PROBE_STEPS = 32
PROBE_SECONDS = 0.1


def token_lengths(tokenizer: llguidance.LLTokenizer) -> npt.NDArray[np.int64]:
    """The bytes of text each token id stands for (0 for ids past the vocabulary)."""
    return np.fromiter(
        (len(tokenizer.decode_bytes([i])) for i in range(tokenizer.vocab_size)),
        dtype=np.int64,
        count=tokenizer.vocab_size,
    )


def walk_failure(
    matcher: llguidance.LLMatcher,
    lengths: npt.NDArray[np.int64],
    eos_tokens: list[int],
) -> str | None:
    """The matcher's error if a walk from `matcher`'s state (left as it is) fails, else
    None (the walk completed the grammar or ran out of steps or time)."""
    walker = matcher.deep_copy()
    vocab_size = len(lengths)
    bitmask = allocate_token_bitmask(1, vocab_size)
    deadline = time.perf_counter() + PROBE_SECONDS
    for _ in range(PROBE_STEPS):
        fill_next_token_bitmask(walker, bitmask)
        if walker.is_error():
            return str(walker.get_error())
        bits = np.unpackbits(bitmask.view(np.uint8), bitorder="little")[:vocab_size]
        allowed = bits.astype(bool)
        allowed[eos_tokens] = False
        if not allowed.any():
            return None  # the grammar is complete: only EOS is left
        walker.consume_token(int(np.argmax(np.where(allowed, lengths, -1))))
        if walker.is_error():
            return str(walker.get_error())
        if time.perf_counter() > deadline:
            return None
    return None
