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
from .input_limits import TokenizeRoom, require_decodable


def tokenize_methods(context: RuntimeContext) -> dict[str, Method]:
    engine = context.engine
    max_line = context.settings.limits.max_output_line_bytes

    def tokenize(params: TokenizeParams) -> TokenizeResult:
        TokenizeRoom(max_line).take("text", params.text)
        return engine.tokenize(params.model_id, params.text, params.add_special_tokens)

    def detokenize(params: DetokenizeParams) -> DetokenizeResult:
        tokenizer = engine.residency.require(params.model_id).tokenizer
        require_decodable(tokenizer, params.tokens, max_line)
        return engine.detokenize(params.model_id, params.tokens, params.skip_special_tokens)

    def batch_tokenize(params: BatchTokenizeParams) -> BatchResult:
        # One answer line for every entry: an entry whose text no longer fits fails alone.
        room = TokenizeRoom(max_line, entries=len(params.requests))

        def tokenize_entry(entry: tuple[int, TokenizeParams]) -> TokenizeResult:
            index, request = entry
            room.take(f"requests[{index}].text", request.text)
            return engine.tokenize(request.model_id, request.text, request.add_special_tokens)

        return BatchResult(results=run_each(list(enumerate(params.requests)), tokenize_entry))

    return {
        "tokenize": Method(TokenizeParams, tokenize),
        "detokenize": Method(DetokenizeParams, detokenize),
        "batch_tokenize": Method(BatchTokenizeParams, batch_tokenize),
    }
