"""How much a request may hand the tokenizer, checked before any of it is tokenized.

Tokenizing costs about 280 bytes of memory per byte of text (the tokenizer's offsets and
alignments, then Python's lists), so the work must be bounded before it starts:
- tokenize and batch_tokenize take no more text than their answer line holds in the worst
  case (below); more could never be answered;
- detokenize takes no more ids than its answer line holds (engine/decoded_sizes.py);
- generate's prompt, or its messages, take at most `json_rpc.max_prompt_bytes`.
Each refusal is a -32602 naming the field, its size and the limit.
"""

from __future__ import annotations

import msgspec

from ..engine.decoded_sizes import decoded_sizes
from ..protocol.errors import InvalidParams
from ..protocol.methods import GenerateParams, TextPart

# The most a tokenize answer spends per byte of text. Each token costs its id and a comma
# in `tokens` (7 bytes below a million ids) and its string, quoted, and a comma in
# `token_strings`; a token costs the most per byte of text when it covers one byte: a byte
# fallback token such as `<0xE2>`, or a control character escaped as `\u0001` (9 bytes
# each). So 16, for every tokenizer making at most one token per byte of text (byte-level
# BPE, SentencePiece, WordPiece). A normalizer that expands text (NFKC turns U+FDFA's 3
# bytes into 33) can do worse; the answer's own line check still catches that. Measured
# on the test tokenizer: 7.6 for text of one token per byte, 5.0 for English.
ANSWER_BYTES_PER_TEXT_BYTE = 16
# The rest of an answer line: the envelope and id, the special tokens a tokenizer adds.
ANSWER_FIXED_BYTES = 64 * 1024
# What each batch_tokenize entry adds: `{"success":true,"result":{…},"error":null,…}`.
BATCH_ENTRY_BYTES = 128
# What a chat template adds around each message (ChatML 25 bytes, Llama 3's 47).
MESSAGE_MARKUP_BYTES = 64


def utf8_size(text: str) -> int:
    # An ASCII str's length is its size in bytes: no copy needed for the common case.
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


class TokenizeRoom:
    """The text one tokenize answer line has room for, taken request by request (the
    entries of a batch_tokenize share one line)."""

    def __init__(self, max_output_line_bytes: int, entries: int = 1) -> None:
        room = max_output_line_bytes - ANSWER_FIXED_BYTES - entries * BATCH_ENTRY_BYTES
        self.limit = max(room // ANSWER_BYTES_PER_TEXT_BYTE, 0)
        self._left = self.limit
        self._entries = entries

    def take(self, field: str, text: str) -> None:
        size = utf8_size(text)
        if size > self._left:
            shared = "" if self._entries == 1 else f" ({self._left} left of what the batch shares)"
            raise InvalidParams(
                field,
                f"{size} bytes of text; tokenize takes at most {self.limit}{shared}, as its "
                f"answer may cost {ANSWER_BYTES_PER_TEXT_BYTE} bytes per byte of text and must "
                "fit json_rpc.max_output_line_bytes: split the text",
                "out_of_range",
            )
        self._left -= size


def require_decodable(tokenizer: object, tokens: list[int], max_output_line_bytes: int) -> None:
    """detokenize: the text of `tokens` must fit one answer line."""
    sizes = decoded_sizes(tokenizer)
    if sizes is None:
        return  # the answer's own line check still applies
    room = max_output_line_bytes - ANSWER_FIXED_BYTES
    bound = sizes.bound(tokens)
    if bound > room:
        raise InvalidParams(
            "tokens",
            f"{len(tokens)} tokens may decode to {bound} bytes of text; an answer holds at "
            f"most {room} (json_rpc.max_output_line_bytes): send fewer tokens",
            "out_of_range",
        )


def require_prompt_within(params: GenerateParams, max_prompt_bytes: int) -> None:
    """generate: the prompt, or the messages with their template's markup, must be at most
    `max_prompt_bytes`."""
    if params.messages:
        size = 0
        for message in params.messages:
            size += MESSAGE_MARKUP_BYTES + utf8_size(message.role)
            if isinstance(message.content, str):
                size += utf8_size(message.content)
            elif message.content is not None:  # null beside an assistant's tool_calls
                size += sum(utf8_size(p.text) for p in message.content if isinstance(p, TextPart))
            for call in message.tool_calls or []:
                size += utf8_size(call.function.name) + utf8_size(call.function.arguments)
        # The tools' definitions are rendered into the prompt too.
        size += len(msgspec.json.encode(params.tools)) if params.tools else 0
        field = "messages"
        what = (
            f"{len(params.messages)} messages of {size} bytes (counting "
            f"{MESSAGE_MARKUP_BYTES} per message for the chat template, and the tools)"
        )
    else:
        size = utf8_size(params.prompt)
        field = "prompt"
        what = f"{size} bytes"
    if size > max_prompt_bytes:
        raise InvalidParams(
            field,
            f"{what}; at most {max_prompt_bytes} (json_rpc.max_prompt_bytes)",
            "out_of_range",
        )
