"""The solo decoder gives mlx-lm's own `generate_step` tokens, step for step, on a tiny
generated model: greedy, with logits processors whose output depends on the context they
see (penalties), and with part of the prompt already in the cache; and a handoff gives the
batch exactly what the cache holds."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import make_prompt_cache

from mlx_serving.engine.loader import LoadedModel, load_model
from mlx_serving.engine.prefill import Prefill
from mlx_serving.engine.prompt_cache import CacheLookup
from mlx_serving.engine.sampling import SamplingSettings, make_processors, make_sampler
from mlx_serving.engine.solo_decoder import SoloDecoder
from mlx_serving.engine.stream import StreamRequest

PROMPT = [1, 57, 301, 44, 999, 12, 57, 8, 57, 640, 33, 101, 5, 77]
TOKENS = 24


@pytest.fixture(scope="module")
def loaded(llama_dir: Path) -> LoadedModel:
    return load_model("m", llama_dir, context_length=None, trust_remote_code=False, draft=False)


def settings(**overrides: object) -> SamplingSettings:
    base: dict[str, object] = {
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": 0.0,
        "seed": None,
        "repetition_penalty": None,
        "repetition_context_size": 20,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "logit_bias": None,
    }
    return SamplingSettings(**(base | overrides))  # type: ignore[arg-type]


PROCESSED = [
    pytest.param(settings(), id="greedy"),
    pytest.param(settings(repetition_penalty=1.5, logit_bias={2: -100.0}), id="repetition"),
    pytest.param(
        settings(presence_penalty=1.2, frequency_penalty=0.7, repetition_context_size=8),
        id="presence-frequency",
    ),
]


def expected(loaded: LoadedModel, sampling: SamplingSettings) -> list[int]:
    steps = generate_step(
        mx.array(PROMPT),
        loaded.model,
        max_tokens=TOKENS,
        sampler=make_sampler(sampling),
        logits_processors=make_processors(sampling),
    )
    return [int(token) for token, _ in steps]


def request(loaded: LoadedModel, sampling: SamplingSettings) -> StreamRequest:
    return StreamRequest(
        stream_id="s",
        model=loaded,
        prompt_tokens=list(PROMPT),
        max_tokens=TOKENS,
        sampler=make_sampler(sampling),
        logits_processors=make_processors(sampling),
        stop_sequences=[],
        stop_token_ids=frozenset(),
    )


def solo(loaded: LoadedModel, sampling: SamplingSettings, cached: int = 0) -> SoloDecoder:
    """A decoder after the prompt's prefill; `cached` prompt tokens came from a cache."""
    cache = None
    if cached:
        cache = make_prompt_cache(loaded.model)
        loaded.model(mx.array(PROMPT[:cached])[None], cache=cache)
        mx.eval([c.state for c in cache])
    lookup = CacheLookup(cache, cached, PROMPT[cached:])
    prefill = Prefill(loaded.model, request(loaded, sampling), lookup, stop_ids=set())
    prefill.run(len(PROMPT))
    assert prefill.done
    return SoloDecoder(loaded.model, prefill)


def decoded(decoder: SoloDecoder, count: int) -> list[int]:
    tokens = []
    for _ in range(count):
        token, _, _ = decoder.step()
        tokens.append(token)
    return tokens


@pytest.mark.parametrize("sampling", PROCESSED)
def test_tokens_equal_generate_step(loaded: LoadedModel, sampling: SamplingSettings) -> None:
    want = expected(loaded, sampling)
    assert len(set(want)) > 3  # a varied sequence, not one token repeated
    assert decoded(solo(loaded, sampling), TOKENS) == want


@pytest.mark.parametrize("sampling", PROCESSED)
def test_a_cached_prefix_changes_nothing(loaded: LoadedModel, sampling: SamplingSettings) -> None:
    # The processors still see the whole prompt, cached part included.
    assert decoded(solo(loaded, sampling, cached=9), TOKENS) == expected(loaded, sampling)


def test_the_last_token_says_length(loaded: LoadedModel) -> None:
    decoder = solo(loaded, settings())
    verdicts = [decoder.step()[2] for _ in range(TOKENS)]
    assert verdicts == [None] * (TOKENS - 1) + ["length"]


def test_a_stop_token_ends_the_stream(loaded: LoadedModel) -> None:
    want = expected(loaded, settings())
    stop = want[5]
    first = want.index(stop)
    decoder = solo(loaded, settings())
    decoder.stop_ids = {stop}
    verdicts = [decoder.step()[2] for _ in range(first + 1)]
    assert verdicts == [None] * first + ["stop"]


def test_a_handoff_carries_on_where_the_decoder_stopped(loaded: LoadedModel) -> None:
    sampling = settings(repetition_penalty=1.5)
    want = expected(loaded, sampling)
    decoder = solo(loaded, sampling)
    before = decoded(decoder, 10)
    (token, _, done), handoff = decoder.handoff()
    assert before + [token] == want[:11] and done is None
    assert handoff is not None
    # The cache holds the prompt and every token fed; the sampled one is still to feed.
    assert handoff.cache_tokens == PROMPT + want[:10]
    assert handoff.cache[0].offset == len(handoff.cache_tokens)
    assert handoff.next_prompt == [want[10]]
    assert handoff.remaining_tokens == TOKENS - 11
