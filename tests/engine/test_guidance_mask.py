"""The guidance mask as a logits processor, in process, with the test tokenizer: what it
lets through at each step, how it feeds the matcher, and its edge cases."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import msgspec
import pytest
from mlx_lm.utils import load_tokenizer

from mlx_serving.engine.detokenize import TextAssembler
from mlx_serving.engine.guidance import GuidanceCompiler, StreamGuidance
from mlx_serving.engine.loader import LoadedModel
from mlx_serving.engine.stream import StreamRequest
from mlx_serving.engine.stream_output import ActiveStream
from mlx_serving.protocol.errors import InvalidParams
from mlx_serving.protocol.methods import Guidance
from mlx_serving.protocol.notifications import StreamFailed

EOS = 2  # <|im_end|> in the test tokenizer


@pytest.fixture(scope="module")
def loaded(llama_dir: Path) -> LoadedModel:
    return LoadedModel(
        model_id="llama",
        model=None,
        tokenizer=load_tokenizer(llama_dir),
        path=llama_dir,
        config={"vocab_size": 1024},
        context_length=4096,
        parameter_count=0,
        dtype="float32",
        draft=False,
    )


def compile_guidance(
    loaded: LoadedModel, guidance: dict[str, object], vocab_size: int = 1024
) -> StreamGuidance:
    return GuidanceCompiler().compile(msgspec.convert(guidance, Guidance), loaded, vocab_size)


def allowed(guidance: StreamGuidance, history: list[int], width: int = 1024) -> set[int]:
    masked = guidance.mask(mx.array(history), mx.zeros((1, width)))
    return {i for i, v in enumerate(masked[0].tolist()) if v == 0.0}


def test_each_call_feeds_the_last_token_then_masks(loaded: LoadedModel) -> None:
    guidance = compile_guidance(loaded, {"mode": "regex", "pattern": "(yes|no)"})
    tokenizer = loaded.tokenizer
    # First call: the prompt's last token, which the grammar must not see.
    first = allowed(guidance, [tokenizer.encode("prompt")[-1]])
    assert first and EOS not in first
    assert all(tokenizer.decode([t]) in ("y", "ye", "yes", "n", "no") for t in first)
    history = tokenizer.encode("yes")
    # Feed the tokens of "yes" one call at a time: then only EOS remains.
    for token in history:
        remaining = allowed(guidance, [token])
    assert remaining == {EOS}
    assert not guidance.mask.failed


def test_logits_past_the_tokenizer_stay_masked(loaded: LoadedModel) -> None:
    guidance = compile_guidance(loaded, {"mode": "regex", "pattern": "[a-z ]{1,40}"}, 1100)
    masked = guidance.mask(mx.array([0]), mx.zeros((1, 1100)))[0].tolist()
    assert all(v == float("-inf") for v in masked[1024:])
    assert any(v == 0.0 for v in masked[:1024])


def test_a_refused_token_ends_the_stream_with_eos(loaded: LoadedModel) -> None:
    guidance = compile_guidance(loaded, {"mode": "regex", "pattern": "[0-9]{3}"})
    allowed(guidance, [0])
    letter = loaded.tokenizer.encode("x")[0]
    assert allowed(guidance, [letter]) == {EOS}
    assert guidance.mask.failed


@pytest.mark.parametrize(
    ("guidance", "valid", "invalid"),
    [
        (
            {"mode": "json_schema", "schema": {"type": "array", "maxItems": 2}},
            "[1, 2]",
            "[1, 2, 3]",
        ),
        ({"mode": "regex", "pattern": "[A-Z]{2}-[0-9]{2}"}, "AB-12", "AB-123"),
        ({"mode": "grammar", "grammar": 'start: "a"+ "b"'}, "aaab", "aaa"),
    ],
)
def test_final_text_check(
    loaded: LoadedModel, guidance: dict[str, object], valid: str, invalid: str
) -> None:
    compiled = compile_guidance(loaded, guidance)
    assert compiled.validate(valid)
    assert not compiled.validate(invalid)
    assert compiled.validate(valid)  # the check never moves the stream's own matcher


def test_json_uses_fixed_separators_unless_the_schema_says_otherwise(
    loaded: LoadedModel,
) -> None:
    def accepts(guidance: StreamGuidance, text: str) -> bool:
        matcher = guidance.initial.deep_copy()
        tokens = guidance.tokenizer.tokenize_str(text)
        return matcher.consume_tokens(tokens) and matcher.is_accepting()

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    compact = compile_guidance(loaded, {"mode": "json_schema", "schema": schema})
    assert accepts(compact, '{"a": 1}')
    assert not accepts(compact, '{ "a": 1 }')
    assert not accepts(compact, '{"a":1}')
    flexible = {**schema, "x-guidance": {"whitespace_flexible": True}}
    assert accepts(
        compile_guidance(loaded, {"mode": "json_schema", "schema": flexible}), '{ "a" :  1 }'
    )


def test_a_grammar_the_matcher_cannot_hold_is_refused_up_front(loaded: LoadedModel) -> None:
    # It compiles; only some tokens in would the matcher give up. A short walk shows it.
    with pytest.raises(InvalidParams) as raised:
        compile_guidance(loaded, {"mode": "regex", "pattern": "([a-z]{1,50}){1,50}x"})
    assert raised.value.field == "guidance.pattern"
    assert "too many expressions constructed" in raised.value.message


def test_a_matcher_that_gives_up_mid_stream_fails_the_stream(loaded: LoadedModel) -> None:
    # 300 letters first: beyond the walk's reach, so the matcher gives up only mid-stream.
    guidance = compile_guidance(
        loaded, {"mode": "regex", "pattern": "[a-z]{300}([a-z]{1,50}){1,50}x"}
    )
    history = [0]
    for _ in range(400):
        permitted = allowed(guidance, history[-1:])
        if guidance.mask.failed:
            break
        history.append(max(permitted - {EOS}, key=lambda t: len(loaded.tokenizer.decode([t]))))
    assert permitted == {EOS}  # the matcher forces the end...
    assert guidance.failure is not None and "too many expressions" in guidance.failure
    request = StreamRequest(
        stream_id="s",
        model=loaded,
        prompt_tokens=[0],
        max_tokens=1000,
        sampler=lambda x: x,
        logits_processors=[guidance.mask],
        stop_sequences=[],
        stop_token_ids=frozenset(),
        guidance=guidance,
    )
    stream = ActiveStream(
        request=request, assembler=TextAssembler(loaded.tokenizer.detokenizer, [])
    )
    out: list[tuple[str, msgspec.Struct]] = []
    stream.finish(out, reason="stop")  # ...which the batch reports as a stop token
    event = out[-1][1]
    assert isinstance(event, StreamFailed), event
    assert event.error == guidance.failure
