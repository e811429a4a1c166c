"""`MLX_SERVING_<SECTION>__<KEY>` variables and the legacy ones as a partial settings
document, and which variable set a key (errors name the variable, not the file)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .settings import ConfigError

ENV_PREFIX = "MLX_SERVING_"
# Variables that predate runtime.yaml, and the key each one sets.
LEGACY_ENV = {
    "MLX_SERVING_CACHE_DIR": ("models", "cache_dir"),
    "MLX_SERVING_LOG_LEVEL": ("logging", "level"),
}


def environment_overrides(
    env: Mapping[str, str],
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """`MLX_SERVING_<SECTION>__<KEY>=value` as a partial document, and which variable set
    each key path."""
    import yaml

    overrides: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    entries: list[tuple[str, tuple[str, ...]]] = [
        (name, keys) for name, keys in LEGACY_ENV.items() if env.get(name)
    ]
    entries += sorted(
        (name, tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__")))
        for name in env
        if name.startswith(ENV_PREFIX) and "__" in name
    )
    for name, keys in entries:
        raw = env[name]
        if name in LEGACY_ENV:
            value: Any = raw.upper() if keys == ("logging", "level") else raw
        else:
            if not all(keys):
                raise ConfigError(f"environment variable {name}: empty key in the name")
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError as exc:
                raise ConfigError(f"environment variable {name}: not a YAML value: {exc}") from None
        node = overrides
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {name}: {'.'.join(keys)} conflicts")
            node = child
        node[keys[-1]] = value
        origins[keys] = f"environment variable {name}"
    return overrides, origins


def key_origin(key_path: str, origins: Mapping[tuple[str, ...], str], source: str) -> str:
    """The variable that set `key_path` (or a key above it), else the file."""
    keys = tuple(re.split(r"[.\[]", key_path)) if key_path else ()
    for length in range(len(keys), 0, -1):
        if keys[:length] in origins:
            return origins[keys[:length]]
    # A variable that set a key below one whose type is wrong (`LEVEL__X` under a string).
    below = [name for set_keys, name in origins.items() if set_keys[: len(keys)] == keys]
    return below[0] if keys and below else source
