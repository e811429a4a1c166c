"""Which of a generate request's prompt forms it uses: exactly one must be given."""

from __future__ import annotations

from ..protocol.errors import InvalidParams
from ..protocol.methods import GenerateParams


def require_one_prompt(params: GenerateParams) -> None:
    given = [
        name
        for name, value in (
            ("prompt", params.prompt),
            ("prompt_tokens", params.prompt_tokens),
            ("messages", params.messages),
        )
        if value
    ]
    if len(given) != 1:
        raise InvalidParams(
            "prompt",
            "exactly one of prompt, prompt_tokens or messages must be non-empty"
            + (f" (got {', '.join(given)})" if given else ""),
            "missing" if not given else "invalid",
        )
