"""Text deltas concatenate to the decoded text, cut before the first stop sequence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlx_lm.utils import load_tokenizer

from mlx_serving.engine.detokenize import PendingToken, TextAssembler


@pytest.fixture(scope="module")
def tokenizer(llama_dir: Path) -> Any:
    return load_tokenizer(llama_dir)


def run(tokenizer: Any, tokens: list[int], stops: list[str]) -> tuple[list[PendingToken], bool]:
    assembler = TextAssembler(tokenizer.detokenizer, stops)
    released: list[PendingToken] = []
    for token in tokens:
        released += assembler.add(PendingToken(token_id=token, text=""))
        if assembler.stopped:
            return released, True
    # The detokenizer may hold text (a trailing space) until the end: a stop sequence can
    # complete only when the stream is flushed.
    released += assembler.finish()
    return released, assembler.stopped


def streamed_text(tokenizer: Any, tokens: list[int]) -> str:
    """The text mlx-lm's own streaming detokenizer gives (as in `stream_generate`)."""
    detokenizer = tokenizer.detokenizer
    detokenizer.reset()
    for token in tokens:
        detokenizer.add_token(token)
    detokenizer.finalize()
    return str(detokenizer.text)


TEXTS = st.text(
    alphabet=st.sampled_from(list("abc xyz_(){}:\n") + ["é", "東", "京", "😀", "🚀", "ñ"]),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=TEXTS, stop_start=st.integers(0, 39), stop_len=st.integers(1, 6), use_stop=st.booleans()
)
def test_deltas_concatenate_and_stop_text_is_never_emitted(
    tokenizer: Any, text: str, stop_start: int, stop_len: int, use_stop: bool
) -> None:
    tokens = tokenizer.encode(text, add_special_tokens=False)
    full = streamed_text(tokenizer, tokens)
    stops = [full[stop_start : stop_start + stop_len]] if use_stop and full[stop_start:] else []
    released, stopped = run(tokenizer, tokens, stops)
    emitted = "".join(t.text for t in released)
    if stops:
        assert stopped
        assert emitted == full[: full.find(stops[0])]
    else:
        assert emitted == full
        # One chunk per token: no token id is sent twice, none is lost.
        assert [t.token_id for t in released] == tokens


def test_multibyte_character_split_across_tokens_is_held_back(tokenizer: Any) -> None:
    emoji = tokenizer.encode("😀", add_special_tokens=False)
    byte_tokens = [t for t in emoji]
    if len(byte_tokens) < 2:
        pytest.skip("the test tokenizer merged the emoji into one token")
    assembler = TextAssembler(tokenizer.detokenizer, [])
    assert assembler.add(PendingToken(token_id=byte_tokens[0], text="")) == []
    released: list[PendingToken] = []
    for token in byte_tokens[1:]:
        released += assembler.add(PendingToken(token_id=token, text=""))
    assert "".join(t.text for t in released) == "😀"
    assert [t.token_id for t in released] == byte_tokens
