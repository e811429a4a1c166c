"""What handlers share: the engine, the settings and the process lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from ..config import Settings
from ..engine import Engine
from ..native_bridge.blas import BlasStatus
from ..native_bridge.metrics import collector_status
from ..telemetry import Telemetry


@dataclass(frozen=True)
class NativeStatus:
    """Which native parts are active, and why each is or is not."""

    active: dict[str, bool] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def detect(cls, blas: BlasStatus) -> NativeStatus:
        try:
            from .. import _native  # type: ignore[attr-defined]  # noqa: F401

            extension, note = True, "loaded"
        except ImportError as exc:
            extension, note = False, f"not built: {exc}"
        metrics_active, metrics_note = collector_status()
        return cls(
            active={
                "blas_bridge": blas.active,
                "extension": extension,
                "metrics_collector": metrics_active,
            },
            notes={
                "blas_bridge": blas.reason,
                "extension": note,
                "metrics_collector": metrics_note,
            },
        )


@dataclass
class RuntimeContext:
    engine: Engine
    settings: Settings
    request_shutdown: Callable[[], None]
    # Sends notifications (method, params) that belong to no stream, e.g. runtime.progress.
    notify: Callable[[list[tuple[str, msgspec.Struct]]], None] = lambda _: None
    native: NativeStatus = field(default_factory=NativeStatus)
    telemetry: Telemetry = field(default_factory=Telemetry)
    restart_count: int = 0
    # Method names and feature flags advertised by runtime/info.
    capabilities: list[str] = field(default_factory=list)
