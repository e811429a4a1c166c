"""Short prompts waiting together are prefilled as one padded batch: one pass over the
weights for up to eight of them.

Alone, a prompt of a few dozen tokens costs a whole pass over the weights, so 32 short
prompts sent together cost 32 passes, and only one or two fit a step's budget beside the
streams already decoding: they waited up to 6 s here for what mlx_lm.server (which
prefills eight at a time) starts in one. Long prompts stay single-sequence (prefill.py):
padding them is what made two 4k-token prompts take 5.7x one on a GPU. Only fresh
prompts (no cached or shared prefix: their rows would have to be aligned mid-sequence; a
short prompt's small cache hit is let go for this, `feeds_whole`) with plain `KVCache`
layers are grouped; each row's keys and values are copied out of the padded batch into a
cache of its own, which then goes on as any finished prefill does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import mlx.core as mx
from mlx_lm.generate import generation_stream
from mlx_lm.models.cache import BatchKVCache

from .shared_prefix import sliceable

if TYPE_CHECKING:
    from .prefill import Prefill

# At most this many prompt tokens to feed: a prompt this short costs about a pass over the
# weights alone, whatever its length.
SHORT_PROMPT_TOKENS = 128
# mlx-lm's BatchGenerator prefills up to eight prompts in one batch too.
MAX_GROUP = 8
# A step's first group is not held to the step's budget: a group of eight prompts admitted
# one or two a step (what a budget beside a busy batch allows on a CPU) pays a pass over
# the weights for each, and a copy of the whole batch's KV for each to join it
# (BatchKVCache.extend) and again to leave (filter), since they then end in different
# steps. 32 prompts of 60 tokens sent together, one or two a step: 9.7 s to decode 64
# tokens each; a whole group a step: 5.3 s. The streams decoding beside them wait for at
# most one group's prefill, as in mlx_lm.server, which prefills eight before decoding.
WHOLE_GROUP = MAX_GROUP * SHORT_PROMPT_TOKENS


def feeds_whole(prefill: Prefill) -> bool:
    """A short prompt the prompt cache holds less than half of is better fed whole, so it
    can join a group: unrelated prompts often share their first few tokens with an
    earlier one (32 prompts of random words each had 2-11 cached, and none was grouped),
    and the few tokens saved cost a pass over the weights of its own."""
    prompt = len(prefill.request.prompt_tokens)
    cached = len(prefill.cache_tokens)
    return 0 < prompt - 1 <= SHORT_PROMPT_TOKENS and 0 < 2 * cached < prompt


def _groupable(prefill: Prefill) -> bool:
    to_feed = len(prefill.remaining) - 1
    return (
        prefill.leader is None
        and not prefill.cache_tokens
        and 0 < to_feed <= SHORT_PROMPT_TOKENS
        and sliceable(prefill.cache)
    )


def short_group(waiting: Iterable[Prefill], budget: int, room: int) -> list[Prefill]:
    """The oldest waiting prompts, in order, that can be prefilled together: short, fresh,
    at most `room` of them, padded to the longest within `budget` tokens. Fewer than two
    is no group (the single-sequence path takes it)."""
    group: list[Prefill] = []
    width = 0
    for prefill in waiting:
        if len(group) == min(MAX_GROUP, room) or not _groupable(prefill):
            break
        wider = max(width, len(prefill.remaining) - 1)
        if wider * (len(group) + 1) > budget:
            break
        group.append(prefill)
        width = wider
    return group if len(group) > 1 else []


def prefill_together(model: Any, group: list[Prefill]) -> int:
    """Feed every prompt of `group` but its last token in one left-padded batch; each then
    holds its own cache. Returns the tokens computed, padding included."""
    counts = [len(p.remaining) - 1 for p in group]
    width = max(counts)
    rows = [[0] * (width - n) + p.remaining[:n] for p, n in zip(group, counts, strict=True)]
    layers = len(group[0].cache)
    batch = [BatchKVCache([width - n for n in counts]) for _ in range(layers)]
    with mx.stream(generation_stream):
        model(mx.array(rows), cache=batch)
        caches = [[layer.extract(i) for layer in batch] for i in range(len(group))]
        mx.eval([[(c.keys, c.values) for c in cache] for cache in caches])
    del batch
    mx.clear_cache()  # the padded batch and its activations are garbage now
    for prefill, count, cache in zip(group, counts, caches, strict=True):
        prefill.adopt(cache, count)
    return width * len(group)
