"""Settings of one runtime process: `runtime.yaml`, its environments and the process
environment, validated into one Struct (settings.py).

Precedence, lowest first: the defaults; the config file (`--config FILE` or
`MLX_SERVING_CONFIG`); the file's `environments.<name>` overlay selected by `MLX_SERVING_ENV`
(or the file's own `environment` key); the legacy variables `MLX_SERVING_CACHE_DIR` and
`MLX_SERVING_LOG_LEVEL`; then `MLX_SERVING_<SECTION>__<KEY>` variables, one per key, whose
values are read as YAML scalars or flow collections (`8`, `true`, `[/models, /srv/models]`)
(config_env.py). An error names the file or variable and the key's path.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from .config_env import environment_overrides, key_origin
from .msgspec_errors import read_failure

# Every name of settings.py stays importable from here, where callers have always found it.
from .settings import (
    Bytes,
    ConfigError,
    DistributedConfig,
    DownloadConfig,
    JsonRpcLimits,
    Limits,
    LoggingConfig,
    LogLevel,
    MiB,
    ModelsConfig,
    Positive,
    PythonRuntimeConfig,
    SchedulerConfig,
    SecurityConfig,
    Settings,
    StreamRegistryConfig,
    TelemetryConfig,
    VisionConfig,
    default_cache_dir,
)

CONFIG_ENV = "MLX_SERVING_CONFIG"
ENVIRONMENT_ENV = "MLX_SERVING_ENV"

# Keys holding paths: relative ones in the file are relative to the file's folder.
_PATH_KEYS: list[tuple[tuple[str, ...], bool]] = [
    (("models", "cache_dir"), False),
    (("download", "cache_dir"), False),
    (("security", "allowed_model_roots"), True),
    (("distributed", "hostfile"), False),
    (("scheduler", "prompt_cache_dir"), False),
]
# Folders that "" switches off instead of naming the config file's own folder.
_OFF_WHEN_EMPTY = {("scheduler", "prompt_cache_dir")}


def load_settings(
    config_path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """The effective settings: defaults, the config file (`config_path`, else
    `$MLX_SERVING_CONFIG`), its selected environment, then the environment's overrides.
    Raises ConfigError naming the file or variable and the key path."""
    env = os.environ if environ is None else environ
    path = config_path or env.get(CONFIG_ENV) or None
    document: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = f"config file {path}"
        document = _read_document(Path(path), source)
    environments = document.pop("environments", None) or {}
    if not isinstance(environments, dict):
        raise ConfigError(f"{source}: environments: expected a mapping of name to settings")
    _validate(document, source)
    for name, overlay in environments.items():
        prefix = f"environments.{name}"
        if not isinstance(overlay, dict):
            raise ConfigError(f"{source}: {prefix}: expected a mapping")
        for key in ("environment", "environments"):
            if key in overlay:
                raise ConfigError(f"{source}: {prefix}.{key}: not allowed inside an environment")
        _validate(_normalise(overlay), source, prefix)
        _resolve_paths(overlay, Path(path).parent if path else None)
    _resolve_paths(document, Path(path).parent if path else None)

    selected = env.get(ENVIRONMENT_ENV) or document.get("environment")
    if selected:
        if path is None:
            raise ConfigError(
                f"{ENVIRONMENT_ENV}={selected}: no config file to take environments from "
                f"(--config FILE or {CONFIG_ENV})"
            )
        if selected not in environments:
            defined = ", ".join(sorted(environments)) or "none"
            origin = ENVIRONMENT_ENV if env.get(ENVIRONMENT_ENV) else source
            raise ConfigError(
                f"{origin}: no environment {selected!r} in {source} (defined: {defined})"
            )
        document = _merge(document, environments[selected])
        document["environment"] = selected

    overrides, origins = environment_overrides(env)
    document = _merge(document, _normalise(overrides))
    settings = _convert(document, lambda key_path: key_origin(key_path, origins, source))
    _resolve_paths_after_env(settings)
    return settings


def settings_from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings for a runtime started without `--config`: `$MLX_SERVING_CONFIG` if set,
    and the environment's overrides."""
    return load_settings(None, environ)


def _read_document(path: Path, source: str) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    return _normalise(data)


def _normalise(document: dict[str, Any]) -> dict[str, Any]:
    """Case-insensitive log levels, as the environment variable always had."""
    logging_section = document.get("logging")
    if isinstance(logging_section, dict) and isinstance(logging_section.get("level"), str):
        logging_section["level"] = logging_section["level"].upper()
    return document


def _validate(document: dict[str, Any], source: str, prefix: str = "") -> None:
    _convert(document, lambda _: source, prefix)


def _convert(
    document: dict[str, Any], origin_of: Callable[[str], str], prefix: str = ""
) -> Settings:
    try:
        return msgspec.convert(document, Settings)
    except msgspec.ValidationError as exc:
        key_path, message = _describe(exc)
        full_path = ".".join(p for p in (prefix, key_path) if p) or "(top level)"
        raise ConfigError(f"{origin_of(key_path)}: {full_path}: {message}") from None


_QUOTED = re.compile(r"`([^`]*)`")


def _describe(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's "Expected `int`, got `str` - at `$.a.b`" as ("a.b", "expected int, got
    str"); an unknown key is reported at its own path."""
    failure = read_failure(exc)
    if failure.kind == "unknown_field":
        return failure.path, "unknown key"
    message = _QUOTED.sub(r"\1", failure.message)
    return failure.path, message[:1].lower() + message[1:]


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) replaces."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _resolve_paths(document: dict[str, Any], base: Path | None) -> None:
    for keys, is_list in _PATH_KEYS:
        section = document.get(keys[0])
        if not isinstance(section, dict) or section.get(keys[1]) is None:
            continue
        value = section[keys[1]]
        if keys in _OFF_WHEN_EMPTY and value == "":
            continue
        if is_list and isinstance(value, list):
            section[keys[1]] = [_path(item, base) for item in value]
        elif not is_list:
            section[keys[1]] = _path(value, base)


def _path(value: Any, base: Path | None) -> Any:
    if not isinstance(value, str):
        return value  # left for validation to report
    path = Path(value).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return str(path)


def _resolve_paths_after_env(settings: Settings) -> None:
    """Paths from variables: `~` expanded, relative to the working directory."""
    settings.models.cache_dir = str(Path(settings.models.cache_dir).expanduser().absolute())
    if settings.download.cache_dir is not None:
        settings.download.cache_dir = str(Path(settings.download.cache_dir).expanduser().absolute())
    settings.security.allowed_model_roots = [
        str(Path(root).expanduser().absolute()) for root in settings.security.allowed_model_roots
    ]
    if settings.scheduler.prompt_cache_dir:
        folder = Path(settings.scheduler.prompt_cache_dir).expanduser().absolute()
        settings.scheduler.prompt_cache_dir = str(folder)


__all__ = [
    "CONFIG_ENV",
    "ENVIRONMENT_ENV",
    "Bytes",
    "ConfigError",
    "DistributedConfig",
    "DownloadConfig",
    "JsonRpcLimits",
    "Limits",
    "LogLevel",
    "LoggingConfig",
    "MiB",
    "ModelsConfig",
    "Positive",
    "PythonRuntimeConfig",
    "SchedulerConfig",
    "SecurityConfig",
    "Settings",
    "StreamRegistryConfig",
    "TelemetryConfig",
    "VisionConfig",
    "default_cache_dir",
    "load_settings",
    "settings_from_environment",
]
