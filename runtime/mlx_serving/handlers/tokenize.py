"""tokenize, detokenize, batch_tokenize."""

from __future__ import annotations

from ..dispatch import Method
from ..protocol.methods import (
    BatchResult,
    BatchTokenizeParams,
    DetokenizeParams,
    DetokenizeResult,
    TokenizeParams,
    TokenizeResult,
)
from .batch import run_each
from .context import RuntimeContext


def tokenize_methods(context: RuntimeContext) -> dict[str, Method]:
    engine = context.engine

    def tokenize(params: TokenizeParams) -> TokenizeResult:
        return engine.tokenize(params.model_id, params.text, params.add_special_tokens)

    def detokenize(params: DetokenizeParams) -> DetokenizeResult:
        return engine.detokenize(params.model_id, params.tokens, params.skip_special_tokens)

    def batch_tokenize(params: BatchTokenizeParams) -> BatchResult:
        return BatchResult(results=run_each(params.requests, tokenize))

    return {
        "tokenize": Method(TokenizeParams, tokenize),
        "detokenize": Method(DetokenizeParams, detokenize),
        "batch_tokenize": Method(BatchTokenizeParams, batch_tokenize),
    }
