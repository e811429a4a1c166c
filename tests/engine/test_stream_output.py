"""A stream's final event reports how its text really ended."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from mlx_serving.engine.detokenize import TextAssembler
from mlx_serving.engine.loader import load_model
from mlx_serving.engine.stream import StreamRequest
from mlx_serving.engine.stream_output import ActiveStream


def test_stop_sequence_completed_by_the_final_flush_ends_with_stop(llama_dir: Path) -> None:
    loaded = load_model(
        "llama", llama_dir, context_length=None, trust_remote_code=False, draft=False
    )
    tokens = loaded.tokenizer.encode(": ", add_special_tokens=False)
    request = StreamRequest(
        stream_id="s",
        model=loaded,
        prompt_tokens=[1],
        max_tokens=len(tokens),
        sampler=lambda x: x,
        logits_processors=[],
        stop_sequences=[": "],
        stop_token_ids=frozenset(),
    )
    stream = ActiveStream(
        request=request, assembler=TextAssembler(loaded.tokenizer.detokenizer, [": "])
    )
    out: list = []
    for token in tokens:
        stream.count_token()
        stream.add_token(token, mx.zeros((8,)), out)
    # The budget ran out with the trailing space still held by the detokenizer.
    stream.finish(out, reason="length")
    final = out[-1][1]
    assert final.finish_reason == "stop"
    assert "".join(c.token for name, c in out if name == "stream.chunk") == ""
