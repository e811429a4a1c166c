"""Generated models for the benchmarks that need more than `make_model` gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx

from mlx_serving.testing.make_model import make_model

# Scale of the extra layers' output projections: small enough that the draft (layer 0
# alone) agrees with most greedy tokens, large enough that the target still differs.
QUIET_LAYER_SCALE = 0.02


def make_speculative_pair(root: str | Path, *, hidden: int, layers: int) -> None:
    """`spec-target`: a llama of `layers` layers; `spec-draft`: its first layer alone, with
    the same embeddings, head and tokenizer. The target's other layers write little into
    the residual stream, so the draft is a good (not perfect) predictor of the target."""
    root = Path(root)
    target = make_model(
        root / "spec-target", "llama", hidden_size=hidden, num_layers=layers, seed=11
    )
    weights = mx.load(str(target / "model.safetensors"))
    for name in list(weights):
        if name.startswith("model.layers.") and int(name.split(".")[2]) > 0:
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                weights[name] = weights[name] * QUIET_LAYER_SCALE
    mx.save_safetensors(str(target / "model.safetensors"), weights, {"format": "mlx"})

    draft = root / "spec-draft"
    shutil.copytree(target, draft)
    kept = {
        name: value
        for name, value in weights.items()
        if not name.startswith("model.layers.") or int(name.split(".")[2]) == 0
    }
    mx.save_safetensors(str(draft / "model.safetensors"), kept, {"format": "mlx"})
    config = json.loads((draft / "config.json").read_text())
    config["num_hidden_layers"] = 1
    (draft / "config.json").write_text(json.dumps(config, indent=2))
