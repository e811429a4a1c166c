"""runtime.yaml: loading, precedence, errors that name the key, and the runtime's start."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import msgspec
import pytest
import yaml

from mlx_serving.config import ConfigError, Settings, load_settings, settings_from_environment
from mlx_serving.protocol.export import build_schemas
from mlx_serving.testing.client import RuntimeClient

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runtime.yaml"
    path.write_text(text)
    return path


def _docs_example() -> str:
    text = (ROOT / "docs" / "CONFIG.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_no_file_gives_the_defaults() -> None:
    settings = load_settings(None, {})
    assert msgspec.to_builtins(settings) == msgspec.to_builtins(Settings())
    assert settings.limits.max_frame_bytes == 16 * 1024 * 1024
    assert settings.cache_dir == Path.home() / ".cache" / "mlx-serving"
    assert settings_from_environment({}).limits == settings.limits


def test_the_prompt_cache_folder_is_in_the_cache_folder_unless_placed(tmp_path: Path) -> None:
    cache = load_settings(None, {"MLX_SERVING_CACHE_DIR": str(tmp_path)})
    assert cache.scheduler.prompt_cache_dir == str(tmp_path / "prompt-cache")
    placed = _write(tmp_path, "scheduler:\n  prompt_cache_dir: kv\n")
    assert load_settings(placed, {}).scheduler.prompt_cache_dir == str(tmp_path / "kv")
    off = _write(tmp_path, 'scheduler:\n  prompt_cache_dir: ""\n')
    assert load_settings(off, {}).scheduler.prompt_cache_dir == ""
    by_variable = {"MLX_SERVING_SCHEDULER__PROMPT_CACHE_DIR": "''"}
    assert load_settings(None, by_variable).scheduler.prompt_cache_dir == ""


def test_documented_example_is_the_defaults_and_validates_against_the_schema(
    tmp_path: Path,
) -> None:
    text = _docs_example()
    loaded = load_settings(_write(tmp_path, text), {})
    defaults = msgspec.to_builtins(Settings())
    assert msgspec.to_builtins(loaded) == defaults

    schema = build_schemas()["runtime_config.json"]
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(text), schema)
    assert not jsonschema.Draft202012Validator(schema).is_valid({"json_rpc": {"max_frame": 1}})


def test_precedence_file_environment_then_variables(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
json_rpc: {max_active_streams: 10, max_tokens: 100}
logging: {level: debug}
security: {allowed_model_roots: [models, /abs]}
environments:
  production:
    json_rpc: {max_active_streams: 20}
    security: {allowed_model_roots: [/srv/models]}
""",
    )
    base = load_settings(path, {})
    assert base.limits.max_active_streams == 10
    assert base.logging.level == "DEBUG"
    # Relative paths in the file are relative to the file's folder.
    assert base.security.allowed_model_roots == [str(tmp_path / "models"), "/abs"]
    assert base.environment is None

    production = load_settings(path, {"MLX_SERVING_ENV": "production"})
    assert production.environment == "production"
    assert production.limits.max_active_streams == 20
    assert production.limits.max_tokens == 100  # untouched keys keep the file's value
    assert production.security.allowed_model_roots == ["/srv/models"]  # lists replace
    assert production.environments == {}

    overridden = load_settings(
        path,
        {
            "MLX_SERVING_ENV": "production",
            "MLX_SERVING_JSON_RPC__MAX_ACTIVE_STREAMS": "30",
            "MLX_SERVING_SECURITY__ALLOW_TRUST_REMOTE_CODE": "true",
            "MLX_SERVING_SECURITY__ALLOWED_MODEL_ROOTS": "[/a, /b]",
            "MLX_SERVING_CACHE_DIR": str(tmp_path / "cache"),
            "MLX_SERVING_LOG_LEVEL": "warning",
            "MLX_SERVING_CONFIG": "/nonexistent/ignored-when-a-path-is-given.yaml",
        },
    )
    assert overridden.limits.max_active_streams == 30
    assert overridden.security.allow_trust_remote_code is True
    assert overridden.security.allowed_model_roots == ["/a", "/b"]
    assert overridden.cache_dir == tmp_path / "cache"
    assert overridden.logging.level == "WARNING"


def test_config_path_from_the_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "scheduler: {max_batch_size: 4}\n")
    settings = settings_from_environment({"MLX_SERVING_CONFIG": str(path)})
    assert settings.scheduler.max_batch_size == 4


def test_yaml_off_is_a_bool_for_blas(tmp_path: Path) -> None:
    path = _write(tmp_path, "python_runtime: {blas: off}\n")
    assert load_settings(path, {}).python_runtime.blas is False


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (
            "json_rpc:\n  max_frame_bytes: big\n",
            {},
            "json_rpc.max_frame_bytes: expected int, got str",
        ),
        ("json_rpc:\n  max_frame_byte: 1\n", {}, "json_rpc.max_frame_byte: unknown key"),
        ("jsonrpc: {}\n", {}, "jsonrpc: unknown key"),
        ("scheduler: {max_batch_size: 0}\n", {}, "scheduler.max_batch_size: expected int >= 1"),
        (
            "security: {allowed_model_roots: [1]}\n",
            {},
            "security.allowed_model_roots[0]: expected str",
        ),
        (
            "environments:\n  prod:\n    logging: {level: loud}\n",
            {},
            "environments.prod.logging.level: invalid enum value 'LOUD'",
        ),
        (
            "environments:\n  prod:\n    environments: {}\n",
            {},
            "environments.prod.environments: not allowed inside an environment",
        ),
        ("environments:\n  prod: {}\n", {"MLX_SERVING_ENV": "prd"}, "no environment 'prd'"),
        (
            "",
            {"MLX_SERVING_JSON_RPC__MAX_FRAME_BYTES": "lots"},
            "environment variable MLX_SERVING_JSON_RPC__MAX_FRAME_BYTES: "
            "json_rpc.max_frame_bytes: expected int, got str",
        ),
        (
            "",
            {"MLX_SERVING_JSON_RPC__MAX_FRAME_BYTEZ": "1"},
            "MLX_SERVING_JSON_RPC__MAX_FRAME_BYTEZ: json_rpc.max_frame_bytez: unknown key",
        ),
        ("- a list\n", {}, "expected a mapping of sections"),
        ("a: [\n", {}, "not valid YAML"),
    ],
)
def test_errors_name_the_source_and_key_path(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path, env)
    assert expected in str(raised.value)


def test_environment_without_a_file_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no config file"):
        load_settings(None, {"MLX_SERVING_ENV": "production"})


# -- through the runtime process -----------------------------------------------------------


def _serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlx_serving", "serve", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "runtime"), **(env or {})},
    )


def test_a_bad_config_stops_the_runtime_before_it_serves(tmp_path: Path) -> None:
    path = _write(tmp_path, "json_rpc:\n  max_frame_bytes: big\n")
    done = _serve(["--config", str(path)])
    assert done.returncode == 2
    assert done.stdout == ""
    assert "json_rpc.max_frame_bytes: expected int, got str" in done.stderr
    assert "MLX Runtime ready" not in done.stderr

    done = _serve([], {"MLX_SERVING_CONFIG": str(tmp_path / "missing.yaml")})
    assert done.returncode == 2
    assert "cannot read" in done.stderr


def test_runtime_info_shows_the_effective_config(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "json_rpc: {max_active_streams: 5}\n"
        "environments:\n  test:\n    scheduler: {max_batch_size: 3}\n",
    )
    env = {"MLX_SERVING_ENV": "test", "MLX_SERVING_JSON_RPC__MAX_TOKENS": "77"}
    with RuntimeClient(args=["serve", "--config", str(path)], env=env) as client:
        info = client.call("runtime/info")
    config = info["config"]
    assert config["environment"] == "test"
    assert config["json_rpc"]["max_active_streams"] == 5
    assert config["json_rpc"]["max_tokens"] == 77
    assert config["scheduler"]["max_batch_size"] == 3
    assert config["environments"] == {}
    assert info["limits"]["max_active_streams"] == 5  # the settings are the ones in force
    json.dumps(config)
