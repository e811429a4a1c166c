"""Without a working mlx-vlm the vision methods are not advertised, and a call says which
extra to install. (The other vision tests need it installed; this one fakes its absence.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlx_serving.handlers import vision as vision_handlers
from mlx_serving.testing.client import RuntimeClient


def test_not_installed_means_not_advertised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vision_handlers, "vision_installed", lambda: False)
    assert vision_handlers.unadvertised_vision_methods() == vision_handlers.VISION_METHODS


def test_an_mlx_vlm_that_does_not_import(tmp_path: Path) -> None:
    broken = tmp_path / "mlx_vlm"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('simulated: no mlx-vlm here')\n")
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    with RuntimeClient(env={"PYTHONPATH": path}) as client:
        error = client.request("load_vision_model", {"model_id": "v", "local_path": "."})["error"]
        assert error["code"] == -32099
        assert "mlx-serving[vision]" in error["message"] and "simulated" in error["message"]
        capabilities = client.call("runtime/info")["capabilities"]
        assert "load_vision_model" not in capabilities
        assert "generate_with_image" not in capabilities
        error = client.request(
            "generate_with_image", {"model_id": "v", "prompt": "x", "image": "AAAA"}
        )["error"]
        assert error["code"] == -32099 and "mlx-serving[vision]" in error["message"]
        assert "generate" in capabilities  # text generation is unaffected
