"""Settings of one runtime process. Defaults follow PROTOCOL.md; `runtime.yaml` and
environment overrides will fill this same Struct."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

MiB = 1024 * 1024


class Limits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # 16 MiB lets a 10 MiB image through base64-encoded.
    max_frame_bytes: int = 16 * MiB
    # Results (large tokenize answers) may be long; our TS client accepts up to this.
    max_output_line_bytes: int = 16 * MiB
    max_tokens: int = 4096
    max_temperature: float = 2.0
    max_prompt_bytes: int = 1 * MiB
    max_active_streams: int = 64
    request_workers: int = 8
    # Bytes of frames waiting for stdout; a client that stops reading pauses generation
    # (and answers) here instead of growing memory.
    outbound_queue_bytes: int = 8 * MiB


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    limits: Limits = msgspec.field(default_factory=Limits)
    # compat clients expect `cumulative_text` in every chunk; it costs O(n^2) bytes.
    compat_cumulative_text: bool = False
    cache_dir: Path = msgspec.field(default_factory=lambda: Path.home() / ".cache" / "mlx-serving")


def settings_from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults with the environment's overrides (`MLX_SERVING_CACHE_DIR`)."""
    env = os.environ if environ is None else environ
    settings = Settings()
    if env.get("MLX_SERVING_CACHE_DIR"):
        settings.cache_dir = Path(env["MLX_SERVING_CACHE_DIR"]).expanduser()
    return settings
