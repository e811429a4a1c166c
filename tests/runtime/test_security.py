"""load_model's security rules, through the real runtime process: trust_remote_code only
when the config allows it, model paths confined to the allowed roots (no `..` or symlink
escape), and errors that never echo what a file holds."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlx_serving.testing.client import RuntimeClient

SECRET = "TOP-SECRET-7f3a9c"


def _load(client: RuntimeClient, **params: Any) -> dict[str, Any]:
    return client.request("load_model", {"model_id": "m", **params})


def _error(frame: dict[str, Any]) -> dict[str, Any]:
    assert "error" in frame, frame
    error: dict[str, Any] = frame["error"]
    return error


@pytest.fixture(scope="module")
def default_runtime() -> Iterator[RuntimeClient]:
    with RuntimeClient() as client:
        yield client


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory, llama_dir: Path) -> dict[str, Path]:
    """An allowed root holding a model, a symlink out, and a folder with one file linking
    out; the test model itself and a secret file lie outside."""
    base = tmp_path_factory.mktemp("security")
    root = base / "allowed"
    root.mkdir()
    shutil.copytree(llama_dir, root / "llama")
    outside = base / "outside"
    shutil.copytree(llama_dir, outside)
    secret = base / "secret.txt"
    secret.write_text(SECRET)
    (root / "link-out").symlink_to(outside, target_is_directory=True)
    mixed = root / "mixed"
    shutil.copytree(llama_dir, mixed)
    (mixed / "config.json").unlink()
    (mixed / "config.json").symlink_to(secret)
    (root / "secret-link.gguf").symlink_to(secret)
    return {"root": root, "outside": outside, "secret": secret}


@pytest.fixture(scope="module")
def confined_runtime(layout: dict[str, Path]) -> Iterator[RuntimeClient]:
    env = {
        "MLX_SERVING_SECURITY__ALLOWED_MODEL_ROOTS": json.dumps([str(layout["root"])]),
        "MLX_SERVING_SECURITY__ALLOW_TRUST_REMOTE_CODE": "true",
    }
    with RuntimeClient(env=env) as client:
        yield client


def test_trust_remote_code_is_refused_by_default(
    default_runtime: RuntimeClient, llama_dir: Path
) -> None:
    error = _error(_load(default_runtime, local_path=str(llama_dir), trust_remote_code=True))
    assert error["code"] == -32602
    assert error["data"]["field"] == "trust_remote_code"
    assert "security.allow_trust_remote_code" in error["message"]
    # Without it the same model loads.
    assert "result" in _load(default_runtime, local_path=str(llama_dir))


def test_trust_remote_code_when_the_config_allows_it(
    confined_runtime: RuntimeClient, layout: dict[str, Path]
) -> None:
    frame = _load(
        confined_runtime, local_path=str(layout["root"] / "llama"), trust_remote_code=True
    )
    assert frame["result"]["state"] == "ready"
    assert frame["result"]["cached_path"] == str((layout["root"] / "llama").resolve())


@pytest.mark.parametrize(
    "reference",
    [
        "outside",  # plainly outside
        "root/../outside",  # `..` out of the root
        "root/link-out",  # a symlinked folder pointing out
        "root/mixed",  # a folder inside whose config.json links out
        "root/secret-link.gguf",  # a symlinked file pointing out
        "root/../does-not-exist",  # outside and missing: same answer, no existence probe
    ],
)
def test_paths_outside_the_allowed_roots_are_refused(
    confined_runtime: RuntimeClient, layout: dict[str, Path], reference: str
) -> None:
    head, _, rest = reference.partition("/")
    path = str(layout[head] / rest) if rest else str(layout[head])
    for params in ({"local_path": path}, {"model_id": path}):
        frame = confined_runtime.request("load_model", {"model_id": "m", **params})
        error = _error(frame)
        assert error["code"] == -32001, error
        assert "allowed model roots" in error["message"]
        assert SECRET not in json.dumps(frame)
    # The runtime keeps serving.
    assert confined_runtime.call("runtime/state")["active_streams"] == 0


def test_a_model_under_the_root_generates(
    confined_runtime: RuntimeClient, layout: dict[str, Path]
) -> None:
    confined_runtime.call(
        "load_model", {"model_id": "ok", "local_path": str(layout["root"] / "llama")}
    )
    out = confined_runtime.generate(
        {"model_id": "ok", "prompt": "hello", "max_tokens": 3, "temperature": 0}
    )
    assert out["event"]["finish_reason"] in ("stop", "length")


def test_errors_never_echo_file_contents(
    default_runtime: RuntimeClient, llama_dir: Path, tmp_path: Path
) -> None:
    cases = {
        "config.json": SECRET + "{not json",
        "tokenizer.json": SECRET + "[[[",
        "model.safetensors": SECRET * 100,
    }
    for name, content in cases.items():
        folder = tmp_path / name
        shutil.copytree(llama_dir, folder)
        (folder / name).write_text(content)
        frame = _load(default_runtime, local_path=str(folder))
        error = _error(frame)
        assert error["code"] == -32001, (name, error)
        assert SECRET not in json.dumps(frame), (name, error)
