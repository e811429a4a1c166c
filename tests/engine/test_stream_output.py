"""A stream's final event reports how its text really ended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import msgspec
import msgspec.structs
import pytest

from mlx_serving.engine.detokenize import TextAssembler
from mlx_serving.engine.loader import LoadedModel, load_model
from mlx_serving.engine.stream import StreamRequest
from mlx_serving.engine.stream_output import ActiveStream, TextWork, made


@pytest.fixture(scope="module")
def loaded(llama_dir: Path) -> LoadedModel:
    return load_model("llama", llama_dir, context_length=None, trust_remote_code=False, draft=False)


def _stream(loaded: Any, max_tokens: int, stop: list[str], logprobs: bool = False) -> ActiveStream:
    request = StreamRequest(
        stream_id="s",
        model=loaded,
        prompt_tokens=[1],
        max_tokens=max_tokens,
        sampler=lambda x: x,
        logits_processors=[],
        stop_sequences=stop,
        stop_token_ids=frozenset(),
        logprobs=logprobs,
    )
    return ActiveStream(
        request=request, assembler=TextAssembler(loaded.tokenizer.detokenizer, stop)
    )


def test_stop_sequence_completed_by_the_final_flush_ends_with_stop(loaded: LoadedModel) -> None:
    tokens = loaded.tokenizer.encode(": ", add_special_tokens=False)
    stream = _stream(loaded, len(tokens), [": "])
    out: list = []
    for token in tokens:
        stream.count_token()
        stream.add_token(token, mx.zeros((8,)), out)
    # The budget ran out with the trailing space still held by the detokenizer.
    stream.finish(out, reason="length")
    final = out[-1][1]
    assert final.finish_reason == "stop"
    assert "".join(c.token for name, c in out if name == "stream.chunk") == ""


def test_text_made_later_is_the_text_made_at_once(loaded: LoadedModel) -> None:
    """A stream without stop sequences hands out TextWork; run in order (made), it gives
    exactly the notifications the stream would have made on the spot."""
    tokens = loaded.tokenizer.encode("héllo wörld, ünïcode 日本語 text", add_special_tokens=False)

    def run(later: bool) -> list:
        stream = _stream(loaded, len(tokens), [], logprobs=True)
        assert stream.text_later
        stream.text_later = later
        out: list = []
        for token in tokens:
            stream.count_token()
            stream.add_token(token, mx.log(mx.full((loaded.tokenizer.vocab_size,), 0.5)), out)
        stream.finish(out, reason="length")
        if later:
            assert all(type(item) is TextWork for item in out)
            assert [item.ends for item in out] == [None] * len(tokens) + ["s"]
        return made(out)

    now, later = run(False), run(True)
    timed = ("time_to_first_token", "total_time", "tokens_per_second", "queue_time")
    untimed = {name: 0.0 for name in timed}

    def same(out: list) -> list:
        return [
            (name, msgspec.structs.replace(p, **untimed) if name == "stream.stats" else p)
            for name, p in out
        ]

    assert same(later) == same(now)
    text = "".join(p.token for name, p in later if name == "stream.chunk")
    assert text == loaded.tokenizer.decode(tokens)
    assert later[-1][1].finish_reason == "length"
