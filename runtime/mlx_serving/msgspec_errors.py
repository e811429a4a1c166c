"""Where a msgspec.ValidationError happened, and what it says, read from its message.

msgspec reports the location only inside the message text ("Expected `int`, got `str` -
at `$.a.b[0]`"), so it must be parsed; this module is the one place that knows msgspec's
wording. tests/test_msgspec_errors.py pins every form read here: a msgspec release that
rewords them fails that test instead of giving users errors without a field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import msgspec

# missing_field / unknown_field: an object lacks a required field or has one the type
# forbids; out_of_range: a value outside a bound (ge, le, gt, lt, a length); wrong_type:
# a value of another JSON type; invalid: anything else (an enum or tag value, a number too
# large to represent).
FailureKind = Literal["missing_field", "unknown_field", "out_of_range", "wrong_type", "invalid"]

# " - at `$.a.b`", or " - at `key` in `$.a`" for a mapping's key; absent at the top level.
_LOCATION = re.compile(r" - at (`key` in )?`\$\.?([^`]*)`$")
_NAMED_FIELD = re.compile(r"^Object (missing required|contains unknown) field `([^`]*)`")
_BOUNDS = (">=", "<=", " > ", " < ", "length")


@dataclass(frozen=True)
class ValidationFailure:
    # Dotted path of the offending value ("a.b[0]"; "" for the whole document). For a
    # missing or unknown field, the field's own path.
    path: str
    # msgspec's message without the location: "Expected `int`, got `str`".
    message: str
    kind: FailureKind
    # The failure is in a key of the mapping at `path`, not in a value.
    in_key: bool = False


def read_failure(exc: msgspec.ValidationError) -> ValidationFailure:
    text = str(exc)
    location = _LOCATION.search(text)
    path = location.group(2) if location else ""
    message = text[: location.start()] if location else text
    in_key = bool(location and location.group(1))
    named = _NAMED_FIELD.match(message)
    kind: FailureKind
    if named:
        kind = "missing_field" if named.group(1) == "missing required" else "unknown_field"
        return ValidationFailure(_join(path, named.group(2)), message, kind, in_key)
    if any(bound in message for bound in _BOUNDS):
        kind = "out_of_range"
    elif message.startswith("Expected"):
        kind = "wrong_type"
    else:
        kind = "invalid"
    return ValidationFailure(path, message, kind, in_key)


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field
