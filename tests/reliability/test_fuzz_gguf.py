"""Broken GGUF files, loaded through the real runtime process: each is refused with -32001
and the reason, and a bystander model's stream runs on unaffected.

The runtime is a child process, so a file that crashed it would fail this test with the
file's label rather than take pytest down with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from tests.gguf.crafted_gguf import Variant, lies, truncations
from tests.gguf.tiny_gguf import ByteVocab, TinyModel
from tests.reliability.bystander import (
    BYSTANDER_TOKENS,
    assert_bystander_unaffected,
    start_bystander,
)

from gguf import GGMLQuantizationType as Q
from mlx_serving.demo import smollm2_gguf
from mlx_serving.testing.client import RuntimeClient


def demo_cuts() -> Iterable[Variant]:
    """The demo model cut inside its token list and inside its tensor table (1,770,000
    bytes, like an interrupted download: MLX's reader crashed on it)."""
    path = smollm2_gguf()
    if path is None:
        return
    with path.open("rb") as whole:
        head = whole.read(1_770_000)
    yield Variant("demo-cut@600000", head[:600_000])
    yield Variant("demo-cut@1770000", head)


def refuse_all(client: RuntimeClient, variants: Iterable[Variant], directory: Path) -> int:
    """Load each variant once; every answer must be -32001 naming the model."""
    tried = 0
    for variant in variants:
        path = variant.write(directory)
        try:
            frame = client.request("load_model", {"model_id": "broken", "local_path": str(path)})
        except (ConnectionError, TimeoutError):
            log = "\n".join(client.stderr_lines[-30:])
            pytest.fail(f"no answer to loading {variant.label}: rc {client.process.poll()}\n{log}")
        assert frame.get("error", {}).get("code") == -32001, (variant.label, frame)
        assert frame["error"]["data"]["model_id"] == "broken"
        assert "Internal" not in frame["error"]["message"], (variant.label, frame)
        path.unlink()
        tried += 1
    return tried


def test_broken_gguf_files_are_refused_while_a_bystander_streams(
    llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = TinyModel(types={"attn_q": Q.Q4_0, "ffn_up": Q.Q8_0}, alignment=64).write(
        tmp_path / "source.gguf", ByteVocab()
    )
    cuts, fields, demo = list(truncations(source)), list(lies(source)), list(demo_cuts())
    variants = [*cuts, *fields, *demo]
    files = tmp_path / "broken"
    files.mkdir()
    env = {"MLX_SERVING_CACHE_DIR": str(tmp_path / "cache")}
    with RuntimeClient(env=env) as client:
        stream_id = start_bystander(client, llama_dir)
        started = time.monotonic()
        tried = refuse_all(client, variants, files)
        elapsed = time.monotonic() - started
        assert_bystander_unaffected(client, stream_id)
        # The real file still loads after all that: nothing refused it for the wrong reason.
        client.call("load_model", {"model_id": "tiny", "local_path": str(source)})
    assert client.process.returncode == 0
    with capsys.disabled():
        print(
            f"\n[fuzz-gguf] {tried} broken GGUF files ({len(cuts)} cut at a "
            f"boundary, {len(fields)} with one field lying, {len(demo)} cuts of the demo model) "
            f"refused with -32001 in {elapsed:.1f} s; 0 crashes; bystander stream of "
            f"{BYSTANDER_TOKENS} tokens ended with 'length'"
        )
