"""What handlers share: the engine, the settings and the process lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import Settings
from ..engine import Engine


@dataclass
class RuntimeContext:
    engine: Engine
    settings: Settings
    request_shutdown: Callable[[], None]
    restart_count: int = 0
    # Method names and feature flags advertised by runtime/info.
    capabilities: list[str] = field(default_factory=list)
