"""A generate request's prompt: which of its forms it uses (exactly one must be given), the
tokens it encodes to, and room for them and the output in the model's context."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.errors import InvalidParams
from ..protocol.methods import GenerateParams
from .loader import LoadedModel
from .token_ids import check_token_ids, vocab_size

if TYPE_CHECKING:
    from .chat import ChatPlan


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


def encode_prompt(params: GenerateParams, loaded: LoadedModel, chat: ChatPlan) -> list[int]:
    """The prompt tokens of a text model's request: as sent, the messages rendered with
    the chat template, or the prompt text encoded."""
    require_one_prompt(params)
    tokenizer = loaded.tokenizer
    if params.prompt_tokens:
        check_token_ids("prompt_tokens", params.prompt_tokens, vocab_size(loaded))
        return list(params.prompt_tokens)
    if params.messages:
        tokens = chat.prompt_tokens(params.messages)
        field = "messages"
    else:
        # The same rule as mlx_lm.stream_generate: add BOS unless the prompt carries it.
        bos = tokenizer.bos_token
        add_special = bos is None or not params.prompt.startswith(bos)
        tokens = tokenizer.encode(params.prompt, add_special_tokens=add_special)
        field = "prompt"
        if not tokens:
            raise InvalidParams("prompt", "the prompt encodes to no tokens")
    # A tokenizer can know more ids (added tokens) than the model embeds.
    check_token_ids(field, tokens, vocab_size(loaded))
    return tokens


def require_room(loaded: LoadedModel, prompt_tokens: int, max_tokens: int) -> None:
    """The prompt and every token asked for must fit the model's context."""
    if prompt_tokens + max_tokens > loaded.context_length:
        raise InvalidParams(
            "max_tokens",
            f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) "
            f"exceeds the model's context length {loaded.context_length}",
            "out_of_range",
        )
