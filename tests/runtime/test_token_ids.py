"""Every token id a client sends is checked against the vocabulary before MLX sees it.

MLX indexes without bounds checks: an unchecked logit_bias key of -50,000,000 crashed the
runtime with SIGSEGV; -1 quietly biased the last token. Each id must be refused with
-32602 naming where it is, and the runtime must keep serving.
"""

from __future__ import annotations

from typing import Any

import pytest

from mlx_serving.testing.client import RuntimeClient

VOCAB = 1024  # the generated llama test model
BAD_IDS = [-50_000_000, -5_000_000, -1, VOCAB, 2**40]


def _generate(**fields: Any) -> dict[str, Any]:
    return {"model_id": "llama", "prompt": "hi", "max_tokens": 3, **fields}


def _cases() -> list[tuple[str, dict[str, Any], str]]:
    cases = []
    for token in BAD_IDS:
        cases += [
            ("generate", _generate(logit_bias={str(token): 100}), "logit_bias"),
            ("generate", _generate(stop_token_ids=[1, token]), "stop_token_ids[1]"),
            ("detokenize", {"model_id": "llama", "tokens": [5, token]}, "tokens[1]"),
            (
                "generate",
                {"model_id": "llama", "prompt_tokens": [1, token], "max_tokens": 3},
                "prompt_tokens[1]",
            ),
        ]
    return cases


@pytest.mark.parametrize(("method", "params", "field"), _cases())
def test_an_id_outside_the_vocabulary_is_refused_and_serving_goes_on(
    runtime: RuntimeClient, method: str, params: dict[str, Any], field: str
) -> None:
    error = runtime.request(method, params)["error"]
    assert error["code"] == -32602, error
    assert error["data"]["field"].startswith(field), error
    # The process is alive and a bias on a real id still works.
    done = runtime.generate(_generate(logit_bias={str(VOCAB - 1): 100}, temperature=0))
    assert done["event"]["finish_reason"] in {"stop", "length"}


def test_the_highest_id_is_accepted(runtime: RuntimeClient) -> None:
    done = runtime.generate(
        _generate(logit_bias={str(VOCAB - 1): 100}, stop_token_ids=[VOCAB - 1], temperature=0)
    )
    assert done["event"]["finish_reason"] == "stop"
