"""The one check that the token ids a client sends exist in a model's vocabulary.

MLX indexes without bounds checks: an id outside [0, vocab) in a logit bias, a stop list or
a prompt reads or writes past the end of an array (a negative one wraps around, a large
one can crash the process). Every id from a request passes through here before MLX sees it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..protocol.errors import InvalidParams


def vocab_size(loaded: Any) -> int:
    """The size of the model's embedding and logits: the bound for every token id."""
    size = loaded.config.get("vocab_size")
    if isinstance(size, int) and size > 0:
        return size
    return int(len(loaded.tokenizer.vocab))


def check_token_ids(field: str, ids: Iterable[int] | Mapping[int, Any], vocab: int) -> None:
    """Refuse the first id outside [0, vocab) with -32602 naming where it is
    (`field[index]` in a list, `field.ID` for a mapping's keys)."""
    keyed = isinstance(ids, Mapping)
    for index, token in enumerate(ids):
        if not 0 <= token < vocab:
            where = f"{field}.{token}" if keyed else f"{field}[{index}]"
            raise InvalidParams(
                where, f"token id {token} is outside the vocabulary [0, {vocab})", "out_of_range"
            )
