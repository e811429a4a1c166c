"""The example transcripts in protocol/fixtures hold against the real runtime."""

from __future__ import annotations

from pathlib import Path

from tests.protocol.replay import replay

from mlx_serving.testing.client import RuntimeClient


def test_jsonrpc_conformance_transcript(runtime: RuntimeClient) -> None:
    assert replay(runtime, "jsonrpc_conformance.jsonl", {}) >= 10


def test_generate_stream_transcript(llama_dir: Path) -> None:
    with RuntimeClient() as client:
        assert replay(client, "generate_stream.jsonl", {"$MODEL_DIR": str(llama_dir)}) >= 5
