"""Where the engine thread's time goes per token, on a model small enough that the
runtime's own per-token work shows (bench_throughput's tiny model).

    python bench/profile_engine.py [--tokens 3000] [--top 30]

Runs the Engine in-process with the real notification sink and writer (frames go to
/dev/null), against in-process `mlx_lm.stream_generate` on the same model, then prints a
cProfile of the engine thread (both runs). No client, no pipe: what is left is the engine's cost.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "runtime"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=3000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)

    import mlx_lm
    from mlx_lm.sample_utils import make_logits_processors

    from mlx_serving.config import Settings
    from mlx_serving.engine import scheduler as scheduler_module
    from mlx_serving.engine.engine import Engine
    from mlx_serving.protocol.methods import GenerateParams, LoadModelParams
    from mlx_serving.server import NotificationSink
    from mlx_serving.testing import make_model
    from mlx_serving.transport import FrameWriter

    workdir = Path(tempfile.mkdtemp(prefix="profile-engine-"))
    model_dir = make_model(workdir / "tiny", "llama", hidden_size=64, num_layers=2, seed=3)
    no_eos = {2: -100.0}

    profile = cProfile.Profile()
    run = scheduler_module.Scheduler._run

    def profiled_run(self: scheduler_module.Scheduler) -> None:
        profile.enable()
        try:
            run(self)
        finally:
            profile.disable()

    scheduler_module.Scheduler._run = profiled_run  # type: ignore[method-assign]
    writer = FrameWriter(os.open(os.devnull, os.O_WRONLY), 8 << 20)
    ended = threading.Event()
    sink = NotificationSink(writer)
    emit = sink.emit

    def watching_emit(notifications: list[tuple[str, object]]) -> None:
        emit(notifications)  # type: ignore[arg-type]
        if any(name == "stream.event" for name, _ in notifications):
            ended.set()

    sink.emit = watching_emit  # type: ignore[method-assign]
    engine = Engine(Settings(), sink)
    engine.load(LoadModelParams(model_id="m", local_path=str(model_dir)))
    rates = {}
    for label in ("warm-up", "engine"):
        ended.clear()
        params = GenerateParams(
            model_id="m", prompt="hello", max_tokens=args.tokens, temperature=0, logit_bias=no_eos
        )
        request = engine.prepare_stream(params)
        started = time.perf_counter()
        engine.start(request)
        ended.wait(600)
        rates[label] = args.tokens / (time.perf_counter() - started)
    engine.shutdown()

    model, tokenizer = mlx_lm.load(str(model_dir))
    processors = make_logits_processors(logit_bias=no_eos)
    for label in ("warm-up", "stream_generate"):
        started = time.perf_counter()
        count = sum(
            1
            for _ in mlx_lm.stream_generate(
                model, tokenizer, "hello", max_tokens=args.tokens, logits_processors=processors
            )
        )
        rates[label] = count / (time.perf_counter() - started)

    engine_us = 1e6 / rates["engine"]
    reference_us = 1e6 / rates["stream_generate"]
    print(f"engine in-process: {rates['engine']:.0f} tok/s ({engine_us:.0f} us/token)")
    print(f"stream_generate:   {rates['stream_generate']:.0f} tok/s ({reference_us:.0f} us/token)")
    print(f"engine cost per token: {engine_us - reference_us:.0f} us\n")
    for key in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats(key).print_stats(args.top)
        print(text.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
