"""How long the text of some token ids can be in a JSON answer, found without decoding
them: detokenize refuses up front what its answer line could not hold, instead of
decoding millions of ids (~240 bytes of memory each) only to fail on the answer's size.

The bound is the sum of each id's own decoded text, JSON-escaped, plus one byte: decoding
ids together never makes more text than that. Bytes of one character split over several
ids each decode alone to a replacement character at least as long as their share, and a
decoder adds at most one byte per id between them (a SentencePiece id loses its leading
space when decoded alone; WordPiece joins words with a space).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)


class DecodedSizes:
    """The JSON bytes each id of one tokenizer may add to a decoded text."""

    def __init__(self, per_id: npt.NDArray[np.int64]) -> None:
        self._per_id = per_id

    def bound(self, tokens: list[int]) -> int:
        """At least the JSON bytes of the text `tokens` decode to (quotes left out)."""
        if not tokens or not len(self._per_id):
            return 0
        ids = np.fromiter(tokens, dtype=np.int64, count=len(tokens))
        # Ids past the tokenizer are refused later as out of the vocabulary; here they
        # only need some size.
        np.clip(ids, 0, len(self._per_id) - 1, out=ids)
        return int(self._per_id[ids].sum())


_lock = threading.Lock()
# Per tokenizer object, so a model loaded again under the same id is measured again.
_sizes: weakref.WeakKeyDictionary[Any, DecodedSizes] = weakref.WeakKeyDictionary()


def decoded_sizes(tokenizer: Any) -> DecodedSizes | None:
    """The sizes for an mlx-lm tokenizer wrapper (or a Hugging Face tokenizer), measured
    once per tokenizer; None if it cannot decode ids one by one."""
    with _lock:
        known = _sizes.get(tokenizer)
        if known is not None:
            return known
        try:
            sizes = DecodedSizes(_measure(tokenizer))
        except Exception:
            log.exception("cannot measure the decoded size of each token id")
            return None
        _sizes[tokenizer] = sizes
        return sizes


def _measure(tokenizer: Any) -> npt.NDArray[np.int64]:
    hf_tokenizer = getattr(tokenizer, "_tokenizer", tokenizer)
    count = len(hf_tokenizer)
    backend = getattr(hf_tokenizer, "_tokenizer", None)  # a fast tokenizer's Rust core
    ids = [[i] for i in range(count)]
    if backend is not None and hasattr(backend, "decode_batch"):
        texts: list[str] = backend.decode_batch(ids, skip_special_tokens=False)
    else:
        texts = [hf_tokenizer.decode(one) for one in ids]
    encode = msgspec.json.encode
    # Quotes (2 bytes) left out, one byte of joining added.
    return np.fromiter((len(encode(text)) - 1 for text in texts), dtype=np.int64, count=count)
