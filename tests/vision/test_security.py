"""load_vision_model goes through load_model's security checks, and never imports Python
from a model folder unless trust_remote_code is asked for and allowed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("mlx_vlm", reason="the vision tests need the `vision` extra (mlx-vlm)")

from mlx_serving.testing.client import RuntimeClient  # noqa: E402


def test_model_file_is_not_imported_without_trust_remote_code(
    vision_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "custom"
    shutil.copytree(vision_dir, model)
    marker = tmp_path / "ran"
    (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_file": "evil.py"}))
    with RuntimeClient() as client:
        error = client.request("load_vision_model", {"model_id": "v", "local_path": str(model)})
        assert error["error"]["code"] == -32001
        assert "trust_remote_code" in error["error"]["message"]
        refused = client.request(
            "load_vision_model",
            {"model_id": "v", "local_path": str(model), "trust_remote_code": True},
        )
        assert refused["error"]["code"] == -32602
        assert refused["error"]["data"]["field"] == "trust_remote_code"
    assert not marker.exists()


def test_allowed_model_roots_apply(vision_dir: Path, tmp_path: Path) -> None:
    env = {"MLX_SERVING_SECURITY__ALLOWED_MODEL_ROOTS": f"[{tmp_path}]"}
    with RuntimeClient(env=env) as client:
        error = client.request(
            "load_vision_model", {"model_id": "v", "local_path": str(vision_dir)}
        )
        assert error["error"]["code"] == -32001
        assert "allowed model roots" in error["error"]["message"]
