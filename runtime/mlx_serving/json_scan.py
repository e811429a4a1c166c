"""The top level of a JSON text, read without recursion.

msgspec decodes nesting to a fixed depth and past it raises RecursionError for the whole
text, so a request nested deeply anywhere (even in a member nobody reads) would lose its
id, and a batch holding one such entry would lose every entry. This reads only the top
level: the members of an object, the elements of an array, stepping over nested values by
counting brackets. The dispatcher falls back on it after such a RecursionError.

It does not validate what it steps over (msgspec decodes what it returns); it only gives
up, with None, on text whose top level is not well formed. Its work is bounded (text size
and regex steps), so that a hostile frame cannot hold the reader thread.
"""

from __future__ import annotations

import re

# Longer text is not scanned: ~0.2 s at most on a slow core for this much, in any shape.
MAX_TEXT_BYTES = 1 << 20
# Steps one scan may take (a top-level item or a run of one nested value each): ~50 ms on a
# slow core. A frame that needs more (tens of kilobytes of brackets opening and closing in
# turn, outside strings) is given up on; what it nests is a thousand levels or a million.
STEP_BUDGET = 1 << 14

_WHITESPACE = re.compile(rb"[ \t\r\n]*")
# Both run on text whose escaped quotes and backslashes are blanked out (see _Scanner), so
# every quote left opens or closes a string.
_STRING = re.compile(rb'"[^"]*"')
_SCALAR = re.compile(rb"[^,\]}\s]+")
# Runs over a nested value. A string without brackets in it travels inside a run, so that
# `[[[…`, `{"a":{"a":…` or `[1,[2,…` is one run however deep; a string holding brackets is
# stepped over on its own.
_OPENING_RUN = re.compile(rb'(?:[^"\]}]+|"[^"\[\]{}]*")+')
_CLOSING_RUN = re.compile(rb'(?:[^"\[{]+|"[^"\[\]{}]*")+')
_OPENERS = b"[{"
_CLOSERS = b"]}"


class _OutOfSteps(Exception):
    pass


class _Scanner:
    def __init__(self, original: bytes) -> None:
        self.original = original
        # Escape pairs blanked out, left to right as a decoder reads them (`\\` before `\"`),
        # keeping every offset: a regex then finds a string's end in one match however
        # many escapes it holds.
        self.text = original.replace(b"\\\\", b"__").replace(b'\\"', b"__")
        self.steps = STEP_BUDGET

    def step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise _OutOfSteps

    def skip_whitespace(self, pos: int) -> int:
        match = _WHITESPACE.match(self.text, pos)
        assert match is not None  # the pattern matches the empty string
        return match.end()

    def value_end(self, pos: int) -> int | None:
        """Where the value starting at `pos` ends, or None if it does not."""
        first = self.text[pos : pos + 1]
        if first == b'"':
            match = _STRING.match(self.text, pos)
            return match.end() if match else None
        if first and first in _OPENERS:
            return self._nested_end(pos)
        match = _SCALAR.match(self.text, pos)
        return match.end() if match else None

    def _nested_end(self, pos: int) -> int | None:
        text = self.text
        depth = 0
        while pos < len(text):
            self.step()
            if text[pos] in _CLOSERS:
                match = _CLOSING_RUN.match(text, pos)
                assert match is not None
                closers = self._closers(pos, match.end())
                if closers >= depth:
                    return self._closer_end(pos, depth)
                depth -= closers
            elif (match := _OPENING_RUN.match(text, pos)) is not None:
                depth += text.count(b"[", pos, match.end()) + text.count(b"{", pos, match.end())
            elif (match := _STRING.match(text, pos)) is None:
                return None
            pos = match.end()
        return None

    def _closers(self, start: int, end: int) -> int:
        return self.text.count(b"]", start, end) + self.text.count(b"}", start, end)

    def _closer_end(self, start: int, nth: int) -> int:
        """Just past the `nth` closing bracket from `start` (a closing run holds it)."""
        low, high = start + 1, len(self.text)
        while low < high:
            middle = (low + high) // 2
            if self._closers(start, middle) >= nth:
                high = middle
            else:
                low = middle + 1
        return low

    def items(self, opener: bytes, closer: bytes) -> list[tuple[bytes | None, bytes]] | None:
        """The (key, raw value) pairs of the top-level object (`{`, `}`), or the
        (None, raw element) pairs of the top-level array (`[`, `]`)."""
        text = self.text
        pos = self.skip_whitespace(0)
        if text[pos : pos + 1] != opener:
            return None
        pos = self.skip_whitespace(pos + 1)
        found: list[tuple[bytes | None, bytes]] = []
        if text[pos : pos + 1] == closer:
            return found if self.skip_whitespace(pos + 1) == len(text) else None
        while True:
            self.step()
            key = None
            if opener == b"{":
                match = _STRING.match(text, pos)
                if match is None:
                    return None
                key = self.original[match.start() + 1 : match.end() - 1]
                pos = self.skip_whitespace(match.end())
                if text[pos : pos + 1] != b":":
                    return None
                pos = self.skip_whitespace(pos + 1)
            end = self.value_end(pos)
            if end is None:
                return None
            found.append((key, self.original[pos:end]))
            pos = self.skip_whitespace(end)
            separator = text[pos : pos + 1]
            if separator == closer:
                return found if self.skip_whitespace(pos + 1) == len(text) else None
            if separator != b",":
                return None
            pos = self.skip_whitespace(pos + 1)


def member(text: bytes, key: str) -> bytes | None:
    """The raw value of the top-level object's member `key` (the last one, as a decoder
    keeps it), or None: no such member, no object, or a top level not well formed."""
    if len(text) > MAX_TEXT_BYTES:
        return None
    try:
        items = _Scanner(text).items(b"{", b"}")
    except _OutOfSteps:
        return None
    wanted = key.encode()
    values = [value for name, value in items or () if name == wanted]
    return values[-1] if values else None


def elements(text: bytes) -> list[bytes] | None:
    """The raw elements of the top-level array, or None if the text is no well-formed
    array at its top level."""
    if len(text) > MAX_TEXT_BYTES:
        return None
    try:
        items = _Scanner(text).items(b"[", b"]")
    except _OutOfSteps:
        return None
    return None if items is None else [value for _, value in items]
