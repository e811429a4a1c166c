"""The config's load_model defaults and bounds, through the real runtime process."""

from __future__ import annotations

from pathlib import Path

from mlx_serving.testing.client import RuntimeClient


def test_default_context_length_and_max_loaded_models(llama_dir: Path) -> None:
    env = {
        "MLX_SERVING_MODELS__MAX_LOADED_MODELS": "1",
        "MLX_SERVING_MODELS__DEFAULT_CONTEXT_LENGTH": "100",
    }
    with RuntimeClient(env=env) as client:
        loaded = client.call("load_model", {"model_id": "a", "local_path": str(llama_dir)})
        assert loaded["context_length"] == 100  # capped by the config's default
        named = {"model_id": "a", "local_path": str(llama_dir), "context_length": 200}
        assert client.call("load_model", named)["context_length"] == 200  # reload: same slot

        refused = client.request("load_model", {"model_id": "b", "local_path": str(llama_dir)})
        assert refused["error"]["code"] == -32001
        assert "models.max_loaded_models" in refused["error"]["message"]

        client.call("unload_model", {"model_id": "a"})
        assert client.call("load_model", {"model_id": "b", "local_path": str(llama_dir)})
