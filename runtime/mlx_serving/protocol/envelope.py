"""JSON-RPC 2.0 frames: the envelope around every request, response and notification.

`id` and `params` stay `msgspec.Raw` while the envelope is checked: ids are echoed
byte-for-byte (big integers and floats survive untouched) and params are decoded once,
by the Struct of the method they belong to.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import ErrorObject

UNSET = msgspec.UNSET


class RequestFrame(msgspec.Struct, kw_only=True):
    jsonrpc: str
    method: str
    id: msgspec.Raw | msgspec.UnsetType = UNSET
    params: msgspec.Raw | msgspec.UnsetType = UNSET

    @property
    def is_notification(self) -> bool:
        return self.id is UNSET


class ResultFrame(msgspec.Struct, kw_only=True):
    jsonrpc: str = "2.0"
    id: msgspec.Raw
    result: Any


class ErrorFrame(msgspec.Struct, kw_only=True):
    jsonrpc: str = "2.0"
    id: msgspec.Raw
    error: ErrorObject


class NotificationFrame(msgspec.Struct, kw_only=True):
    jsonrpc: str = "2.0"
    method: str
    params: Any


NULL_ID = msgspec.Raw(b"null")


def valid_id(raw: msgspec.Raw) -> bool:
    """JSON-RPC ids are strings, numbers or null; objects, arrays and booleans are not."""
    first = bytes(raw)[:1]
    return first == b'"' or first == b"-" or first.isdigit() or bytes(raw) == b"null"
