"""load_model on every rank at once, through mlx-lm's sharded loading.

Each rank resolves the model on its own host and checks it can take its part; the ranks
then compare verdicts in one gather, so a rank that lacks the files fails the load with
its reason instead of leaving the others waiting inside `sharded_load`'s collectives.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from ..engine.config_sizes import check_config_sizes, safetensors_header
from ..engine.loader import LoadedModel, ShardPlan, load_model, resolve_model_dir
from ..protocol.errors import ModelLoadError
from .channel import RECORD_BYTES, Channel
from .ops import Load

INDEX = "model.safetensors.index.json"


class RanksRefused(ModelLoadError):
    """Every rank declined the load for the same reasons: the group is still in step."""


class _Verdict(msgspec.Struct, array_like=True):
    strategy: str
    parameter_count: int
    error: str


def load_on_all_ranks(channel: Channel, op: Load, cache_dir: Path) -> LoadedModel:
    """Run by every rank for the same `Load`, in step. Raises ModelLoadError on every rank
    when any rank cannot load (naming the ranks and why)."""
    plan: ShardPlan | None = None
    model_dir = Path()
    try:
        model_dir = resolve_model_dir(op.model_id, op.local_path, op.revision, cache_dir / "gguf")
        plan = plan_shards(model_dir, op, channel, cache_dir)
        verdict = _Verdict(plan.strategy, plan.parameter_count, "")
    except Exception as exc:
        verdict = _Verdict("", 0, f"{type(exc).__name__}: {exc}"[: RECORD_BYTES - 64])
    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder(_Verdict)
    verdicts = [decoder.decode(v) for v in channel.gather(encoder.encode(verdict))]
    failures = [f"rank {rank}: {v.error}" for rank, v in enumerate(verdicts) if v.error]
    if not failures and len({v.strategy for v in verdicts}) > 1:
        failures = [f"the ranks disagree on the strategy: {[v.strategy for v in verdicts]}"]
    if failures:
        raise RanksRefused(
            f"cannot load '{op.model_id}' on every rank: " + "; ".join(failures),
            model_id=op.model_id,
        )
    assert plan is not None
    return load_model(
        op.model_id,
        model_dir,
        context_length=op.context_length,
        trust_remote_code=op.trust_remote_code,
        draft=op.draft,
        dtype=op.dtype,
        shard=plan,
    )


def plan_shards(model_dir: Path, op: Load, channel: Channel, cache_dir: Path) -> ShardPlan:
    """Which strategy (the requested one, else tensor when the architecture can shard,
    else pipeline), checked against the architecture as mlx-lm builds it."""
    from mlx_lm.utils import get_total_parameters
    from mlx_lm.utils import load_model as build_lazily

    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"no config.json in {model_dir}", model_id=op.model_id)
    check_config_sizes(op.model_id, model_dir)  # building even lazily follows the layer count
    model, _ = build_lazily(
        model_dir, lazy=True, strict=False, trust_remote_code=op.trust_remote_code
    )
    can_pipeline = hasattr(model, "model") and hasattr(model.model, "pipeline")
    can_tensor = hasattr(model, "shard")
    strategy = op.strategy or ("tensor" if can_tensor else "pipeline")
    if not {"tensor": can_tensor, "pipeline": can_pipeline}[strategy]:
        supported = [s for s, ok in (("pipeline", can_pipeline), ("tensor", can_tensor)) if ok]
        model_type = _model_type(model_dir)
        raise ModelLoadError(
            f"{model_type} models do not support {strategy} parallelism in mlx-lm"
            + (f" (they support: {', '.join(supported)})" if supported else ""),
            model_id=op.model_id,
        )
    weights_dir = model_dir
    if strategy == "pipeline":
        weights_dir = with_weight_index(model_dir, cache_dir / "distributed")
    return ShardPlan(
        strategy=strategy,
        group=channel.group,
        weights_dir=weights_dir,
        parameter_count=int(get_total_parameters(model)),
    )


def with_weight_index(model_dir: Path, shadow_root: Path) -> Path:
    """A folder holding the model with a `model.safetensors.index.json`, which pipeline
    loading reads to pick each rank's files: the model's own folder when it has one, else
    a folder of links to its files plus an index written from the weights' headers (the
    model's folder may be read-only, e.g. the Hugging Face cache, and stays untouched)."""
    if (model_dir / INDEX).is_file():
        return model_dir
    weights = sorted(model_dir.glob("model*.safetensors"))
    if not weights:
        raise ModelLoadError(f"no model*.safetensors weights in {model_dir}")
    stamp = "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights)
    key = hashlib.sha256(f"{model_dir}|{stamp}".encode()).hexdigest()[:20]
    shadow = shadow_root / key
    if (shadow / INDEX).is_file():
        return shadow
    shadow_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=shadow_root))
    try:
        for entry in model_dir.iterdir():
            os.symlink(entry.resolve(), staging / entry.name)
        weight_map = {name: path.name for path in weights for name in _tensor_names(path)}
        index: dict[str, Any] = {"metadata": {}, "weight_map": weight_map}
        (staging / INDEX).write_text(json.dumps(index, indent=1))
        try:
            staging.rename(shadow)
        except OSError:  # another rank on this host got there first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return shadow


def _tensor_names(path: Path) -> list[str]:
    return list(safetensors_header(path))


def _model_type(model_dir: Path) -> str:
    try:
        return str(json.loads((model_dir / "config.json").read_text()).get("model_type"))
    except (OSError, ValueError):
        return "these"
