"""embed: vectors for texts."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from .common import NonEmptyStr

# mean: the average of every token's final hidden state (the default); last: the last
# token's (models trained that way, e.g. Qwen3-Embedding); cls: the first token's (encoders
# with a [CLS] token; on a causal model the first token sees only itself).
Pooling = Literal["mean", "last", "cls"]
EmbedText = Annotated[str, Meta(min_length=1)]


class EmbedParams(msgspec.Struct, kw_only=True):
    """One vector per text, in order. The texts' UTF-8 is at most json_rpc.max_prompt_bytes
    in all, and their vectors must fit one answer line (json_rpc.max_output_line_bytes).
    A text over the model's context length is refused (-32602 naming `input[i]`), or cut
    to it when `truncate` is true."""

    model_id: NonEmptyStr
    input: EmbedText | Annotated[list[EmbedText], Meta(min_length=1)]
    pooling: Pooling = "mean"
    normalize: bool = True
    truncate: bool = False


class EmbedResult(msgspec.Struct, kw_only=True):
    """`prompt_tokens`: the tokens embedded, all texts together (after any truncation)."""

    embeddings: list[list[float]]
    dimensions: int
    prompt_tokens: int
