"""Turn a stream of token ids into text deltas that concatenate to the final text.

mlx-lm's streaming detokenizer already holds back partial UTF-8 sequences. On top of it
this keeps back the chunks whose text might be the start of a stop sequence, so that stop
text is never emitted, and cuts the text at the first complete stop sequence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PendingToken:
    token_id: int
    text: str
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None


@dataclass
class TextAssembler:
    detokenizer: Any  # mlx_lm StreamingDetokenizer
    stop_sequences: list[str]
    pending: deque[PendingToken] = field(default_factory=deque)
    stopped: bool = False

    def __post_init__(self) -> None:
        self.detokenizer.reset()
        self._last_token_id = 0
        self._hold = max((len(s) for s in self.stop_sequences), default=1) - 1

    def add(self, token: PendingToken) -> list[PendingToken]:
        """Add one generated token; return the tokens whose text is now safe to emit."""
        self._last_token_id = token.token_id
        self.detokenizer.add_token(token.token_id)
        token.text = self.detokenizer.last_segment
        self.pending.append(token)
        if not self.stop_sequences:
            # What _release would do, without joining and searching the text each token:
            # hold only tokens whose bytes end mid-character (all that is ever pending here).
            if not token.text:
                return []
            released = list(self.pending)
            self.pending.clear()
            return released
        return self._release(final=False)

    def finish(self) -> list[PendingToken]:
        """Flush everything still held (the stream ended without a stop sequence)."""
        self.detokenizer.finalize()
        tail = self.detokenizer.last_segment
        if tail:
            if self.pending:
                self.pending[-1].text += tail
            else:
                # The tail belongs to the last token, already sent: resend its id with it.
                self.pending.append(PendingToken(token_id=self._last_token_id, text=tail))
        return self._release(final=True)

    def _release(self, *, final: bool) -> list[PendingToken]:
        text = "".join(t.text for t in self.pending)
        cut = min((i for i in (text.find(s) for s in self.stop_sequences) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._take_upto(cut, truncate=True)
        if final:
            return self._take_upto(len(text), truncate=False)
        released = self._take_upto(len(text) - self._unsafe_suffix(text), truncate=False)
        # A token whose bytes end mid-character has no text yet: keep it, so that the text
        # it completes (or the replacement char a final flush yields) lands in its own chunk.
        while released and not released[-1].text:
            self.pending.appendleft(released.pop())
        return released

    def _unsafe_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that begins some stop sequence."""
        for length in range(min(self._hold, len(text)), 0, -1):
            suffix = text[-length:]
            if any(s.startswith(suffix) for s in self.stop_sequences):
                return length
        return 0

    def _take_upto(self, limit: int, *, truncate: bool) -> list[PendingToken]:
        released: list[PendingToken] = []
        consumed = 0
        while self.pending:
            token = self.pending[0]
            end = consumed + len(token.text)
            if end <= limit:
                released.append(self.pending.popleft())
                consumed = end
            elif truncate:
                # Tokens wholly inside the stop sequence are dropped, not sent empty.
                if limit > consumed:
                    token.text = token.text[: limit - consumed]
                    released.append(token)
                break
            else:
                break
        if truncate:
            self.pending.clear()
        return released
