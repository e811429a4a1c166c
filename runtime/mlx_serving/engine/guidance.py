"""Structured output with llguidance: a request's `guidance` (JSON Schema, regex or a Lark
grammar) becomes a matcher over the model's tokenizer, and the matcher's token mask becomes
one more logits processor of the stream. mlx-lm's BatchGenerator calls each row's own
processors inside the batched step, so constrained and free streams share one batch.

A JSON Schema stream's final text is checked again with `jsonschema` (regex and grammar
streams by replaying the text through a fresh matcher); `stream.stats.guidance_valid`
reports the verdict.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import jsonschema
import llguidance
import llguidance.hf
import mlx.core as mx
import numpy as np
import numpy.typing as npt
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

from ..protocol.errors import GuidanceError, InvalidParams
from ..protocol.methods import Guidance, JsonSchemaGuidance, RegexGuidance
from .guidance_probe import PROBE_STEPS, token_lengths, walk_failure
from .loader import LoadedModel

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

log = logging.getLogger(__name__)

# Advertised in runtime/info capabilities, one per `guidance.mode`.
CAPABILITIES = ("guidance:grammar", "guidance:json_schema", "guidance:regex")

# Fixed separators as Python's json.dumps writes them. With llguidance's default flexible
# whitespace a model may spend its whole budget on blanks between tokens of the same JSON.
# A schema's own "x-guidance" object (llguidance's JSON options) overrides these.
JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}

# llguidance explains a grammar error with the offending line and a caret; enough to act on.
_MAX_REASON_CHARS = 2000


@dataclass
class StreamGuidance:
    """One stream's constraint: the matcher its masks come from, and the final check."""

    tokenizer: llguidance.LLTokenizer
    matcher: llguidance.LLMatcher
    # The matcher before any token, for replaying the final text of a regex/grammar stream.
    initial: llguidance.LLMatcher
    schema_validator: Any = None  # a jsonschema validator for json_schema streams
    mask: TokenMask = field(init=False)

    def __post_init__(self) -> None:
        self.mask = TokenMask(self.matcher, self.tokenizer)

    @property
    def failure(self) -> str | None:
        """Why the stream cannot satisfy its constraint, once the matcher failed."""
        if self.mask.error is None:
            return None
        return f"structured output failed: the guidance matcher gave up: {self.mask.error}"

    def validate(self, text: str) -> bool:
        """Whether the final text satisfies the request's schema, regex or grammar."""
        if self.schema_validator is not None:
            try:
                value = json.loads(text)
            except ValueError:
                return False
            return bool(self.schema_validator.is_valid(value))
        checker = self.initial.deep_copy()
        tokens = self.tokenizer.tokenize_str(text)
        return checker.consume_tokens(tokens) and checker.is_accepting()


@mx.compile
def _apply_bitmask(words: mx.array, logits: mx.array) -> mx.array:
    """Logits where the bit of the token is set, -inf elsewhere. Compiled into one fused
    kernel: 5-7x faster than the same ops one by one at vocabularies of 50-150k."""
    bits = (words[..., None] >> mx.arange(32, dtype=mx.uint32)) & 1
    allowed = bits.reshape(words.shape[0], -1)[:, : logits.shape[-1]].astype(mx.bool_)
    return mx.where(allowed, logits, -mx.inf)


class TokenMask:
    """The logits processor of a constrained stream.

    Each call first advances the matcher by the token the batch fed in (the one sampled at
    the previous step; the first call sees the prompt's last token and consumes nothing),
    then masks every token the grammar does not allow next. Once the grammar is complete
    only EOS remains allowed, so the stream ends with finish_reason "stop"; if the matcher
    fails, only EOS remains allowed too, and `error` says the stream failed.
    """

    def __init__(self, matcher: llguidance.LLMatcher, tokenizer: llguidance.LLTokenizer) -> None:
        self._matcher = matcher
        self._eos = list(tokenizer.eos_tokens)
        self._bitmask = allocate_token_bitmask(1, tokenizer.vocab_size)
        self._started = False
        # The matcher's error once it failed; the stream then ends with it (never `stop`).
        self.error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        matcher = self._matcher
        # The mask depends on the token sampled at the previous step: read it first (reading
        # after the launch below would wait for the whole forward pass queued before it).
        token = cast(int, tokens[-1].item()) if self._started else None
        self._started = True
        # Then start this step's forward pass, so it runs while the mask is computed (the
        # matcher releases the GIL) instead of after it. This can hide at most the mask's
        # own time (15-250 us per token); on an H100 the gain was within run-to-run noise.
        mx.async_eval(logits)  # type: ignore[no-untyped-call]
        if token is not None:
            matcher.consume_token(token)
        fill_next_token_bitmask(matcher, self._bitmask)
        if matcher.is_error():
            self._force_eos(matcher.get_error())
        # Only vocab/8 bytes of bitmask leave the host; MLX unpacks them.
        words = mx.array(self._bitmask).view(mx.uint32)
        missing = -(-logits.shape[-1] // 32) - words.shape[-1]
        if missing > 0:  # the model has more logits than the tokenizer has tokens
            words = mx.concatenate([words, mx.zeros((1, missing), dtype=mx.uint32)], axis=-1)
        masked: mx.array = _apply_bitmask(words, logits)
        return masked

    def _force_eos(self, error: str) -> None:
        # The matcher gave up (a grammar it cannot hold, see guidance_probe.py) or was fed
        # a token it refused (a tokenizer mismatch): end the stream rather than sample from
        # nothing. Its text is then no match, so the stream ends with this error.
        if self.error is None:
            log.warning("guidance matcher failed, ending the stream: %s", error[:500])
            self.error = _first_line(error)
        self._bitmask[:] = 0
        words = self._bitmask.view(np.uint32)
        for token in self._eos:
            words[0, token // 32] |= np.uint32(1 << (token % 32))


class GuidanceCompiler:
    """Compiles request guidance against a model's tokenizer. llguidance's view of a
    tokenizer takes up to a second to build for a large vocabulary, so it is made once per
    loaded model and kept until the model is unloaded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vocabularies: dict[str, tuple[LoadedModel, _Vocabulary]] = {}

    def compile(self, spec: Guidance, loaded: LoadedModel, vocab_size: int) -> StreamGuidance:
        """Raises InvalidParams naming the field and the reason when the schema, regex or
        grammar is invalid, uses a feature llguidance does not implement, or is more than
        its matcher can hold on a short walk (guidance_probe.py)."""
        grammar, field_name, validator = _grammar(spec)
        vocabulary = self._vocabulary(loaded, vocab_size)
        tokenizer = vocabulary.tokenizer
        matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidParams(field_name, _reason(spec, matcher.get_error()))
        failure = walk_failure(matcher, vocabulary.lengths, list(tokenizer.eos_tokens))
        if failure is not None:
            raise InvalidParams(field_name, _too_complex(spec, failure))
        return StreamGuidance(
            tokenizer=tokenizer,
            matcher=matcher,
            initial=matcher.deep_copy(),
            schema_validator=validator,
        )

    def compile_grammar(
        self, grammar: str, field_name: str, loaded: LoadedModel, vocab_size: int
    ) -> StreamGuidance:
        """A Lark grammar the runtime built (a forced tool call, chat/grammar.py). What can
        fail in it came from the request (a tool's parameters schema): `field_name` names
        that. The final text is checked by replaying it through the grammar."""
        vocabulary = self._vocabulary(loaded, vocab_size)
        tokenizer = vocabulary.tokenizer
        matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if matcher.is_error():
            reason = f"cannot be compiled for constrained output: {matcher.get_error()}"
            raise InvalidParams(field_name, _first_line(reason))
        failure = walk_failure(matcher, vocabulary.lengths, list(tokenizer.eos_tokens))
        if failure is not None:
            reason = f"more than the constrained-output matcher can hold: {failure}"
            raise InvalidParams(field_name, _first_line(reason))
        return StreamGuidance(tokenizer=tokenizer, matcher=matcher, initial=matcher.deep_copy())

    def forget(self, model_id: str) -> None:
        with self._lock:
            self._vocabularies.pop(model_id, None)

    def _vocabulary(self, loaded: LoadedModel, vocab_size: int) -> _Vocabulary:
        with self._lock:
            cached = self._vocabularies.get(loaded.model_id)
            if cached is not None and cached[0] is loaded:
                return cached[1]
            wrapper = loaded.tokenizer
            hf_tokenizer = getattr(wrapper, "_tokenizer", wrapper)
            try:
                tokenizer = llguidance.hf.from_tokenizer(
                    hf_tokenizer,
                    # The mask must cover every logit; ids past the tokenizer stay masked.
                    n_vocab=max(vocab_size, len(hf_tokenizer)),
                    # Every EOS id (a list needs llguidance >= 1.9), as the batch stops on.
                    eos_token=sorted(wrapper.eos_token_ids) or None,
                )
            except Exception as exc:
                # llguidance reads fast (tokenizers-backed) Hugging Face tokenizers only.
                raise GuidanceError(
                    f"structured output cannot use this model's tokenizer: {exc}",
                    model_id=loaded.model_id,
                ) from exc
            vocabulary = _Vocabulary(tokenizer, token_lengths(tokenizer))
            self._vocabularies[loaded.model_id] = (loaded, vocabulary)
            return vocabulary


@dataclass(frozen=True)
class _Vocabulary:
    """llguidance's view of one model's tokenizer, and the bytes each token stands for."""

    tokenizer: llguidance.LLTokenizer
    lengths: npt.NDArray[np.int64]


def _grammar(spec: Guidance) -> tuple[str, str, Any]:
    """The llguidance grammar of a request, the field it came from, and for a JSON Schema
    the jsonschema validator the final text is checked with."""
    if isinstance(spec, JsonSchemaGuidance):
        validator = _schema_validator(spec.schema)
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                spec.schema, defaults=JSON_OPTIONS
            )
        except ValueError as exc:
            raise InvalidParams("guidance.schema", str(exc)[:_MAX_REASON_CHARS]) from exc
        return grammar, "guidance.schema", validator
    if isinstance(spec, RegexGuidance):
        return llguidance.LLMatcher.grammar_from_regex(spec.pattern), "guidance.pattern", None
    try:
        # Lark as llguidance reads it; GBNF (llama.cpp's grammars) is converted first.
        grammar = llguidance.grammar_from("grammar", spec.grammar)
    except ValueError as exc:
        raise InvalidParams("guidance.grammar", str(exc)[:_MAX_REASON_CHARS]) from exc
    return grammar, "guidance.grammar", None


def _schema_validator(schema: dict[str, Any]) -> Any:
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        raise InvalidParams(
            f"guidance.schema{path}", f"invalid JSON Schema: {exc.message}"[:_MAX_REASON_CHARS]
        ) from exc
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def _too_complex(spec: Guidance, error: str) -> str:
    what = {JsonSchemaGuidance: "JSON Schema", RegexGuidance: "regex"}.get(type(spec), "grammar")
    return (
        f"{what} is more than the constrained-output matcher can hold "
        f"(it gave up within {PROBE_STEPS} tokens: {_first_line(error)})"
    )


def _first_line(error: str) -> str:
    # llguidance appends its parser state and the grammar: long, and no help to a client.
    return error.strip().split("\n", 1)[0][:_MAX_REASON_CHARS]


def _reason(spec: Guidance, error: str) -> str:
    error = error.strip()[:_MAX_REASON_CHARS]
    if isinstance(spec, JsonSchemaGuidance):
        if error.startswith(("Unimplemented keys", "Unknown format")):
            return f"JSON Schema feature not supported for constrained output: {error}"
        return f"JSON Schema cannot be compiled: {error}"
    if isinstance(spec, RegexGuidance):
        return f"invalid regex: {error}"
    return f"invalid grammar: {error}"
