"""download_model and mlx-serving-download against a local stand-in of the Hub
(mlx_serving.testing.fake_hub): download, resume, reuse of the cache, offline mode, errors,
progress notifications, and a load + generate from what was downloaded."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlx_serving.testing.client import RuntimeClient
from mlx_serving.testing.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[1]
REPO = "tests/llama"


@pytest.fixture(scope="module")
def hub(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    published = tmp_path_factory.mktemp("published")
    shutil.copytree(llama_dir, published, dirs_exist_ok=True)
    (published / "extra.bin").write_bytes(b"\0" * 4096)  # not an MLX file: not fetched
    (published / "modeling_custom.py").write_text("raise SystemExit('never fetched')\n")
    with FakeHub() as server:
        server.add_folder(REPO, published)
        yield server


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-home")


def _hub_env(hub: FakeHub, hf_home: Path, **extra: str) -> dict[str, str]:
    return {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def online(hub: FakeHub, hf_home: Path) -> Iterator[RuntimeClient]:
    env = _hub_env(hub, hf_home, MLX_SERVING_DOWNLOAD__PROGRESS_INTERVAL_S="0")
    with RuntimeClient(env=env) as client:
        yield client


def test_a_broken_transfer_resumes_where_it_stopped(online: RuntimeClient, hub: FakeHub) -> None:
    # Large enough that the client has written part of it when the connection drops.
    weights = random.Random(0).randbytes(24 * 1024 * 1024)
    hub.add_files("tests/big", {"config.json": b"{}", "model.safetensors": weights})
    hub.cut_once["model.safetensors"] = 20 * 1024 * 1024
    result = online.call("download_model", {"repo_id": "tests/big"}, timeout=120)
    assert (Path(result["local_path"]) / "model.safetensors").read_bytes() == weights
    gets = [
        r
        for r in hub.requests
        if r.path == "/tests/big/resolve/" + result["commit"] + "/model.safetensors"
        and r.method == "GET"
    ]
    assert len(gets) == 2 and gets[0].range is None
    assert gets[1].range is not None and gets[1].range.startswith("bytes=")
    assert int(gets[1].range.removeprefix("bytes=").split("-")[0]) > 0  # not from the start
    progress = [
        n["params"]
        for n in online.notifications
        if n["method"] == "runtime.progress" and n["params"]["model_id"] == "tests/big"
    ]
    assert any(0 < p["done"] < p["total"] for p in progress)  # seen while under way
    assert progress[-1]["done"] == progress[-1]["total"] == result["total_bytes"]


def test_download_reports_progress_then_loads_and_generates(
    online: RuntimeClient, hub: FakeHub, llama_dir: Path
) -> None:
    request_id = online.send("download_model", {"repo_id": REPO})
    result = online.response(request_id, timeout=120)["result"]

    folder = Path(result["local_path"])
    assert result["commit"] == hub.repos[REPO].commit == folder.name
    fetched = sorted(p.name for p in folder.iterdir())
    assert fetched == sorted(p.name for p in llama_dir.iterdir())  # no extra.bin, no .py
    for name in fetched:
        assert (folder / name).read_bytes() == (llama_dir / name).read_bytes()

    progress = [
        n["params"]
        for n in online.notifications
        if n["method"] == "runtime.progress" and n["params"]["model_id"] == REPO
    ]
    assert progress and all(p["task"] == "download" and p["unit"] == "B" for p in progress)
    assert progress[-1]["done"] == progress[-1]["total"] == result["total_bytes"] > 0
    assert all(p["done"] <= p["total"] or p["total"] == 0 for p in progress)
    # Every progress line came before the answer.
    lines = [json.loads(line) for line in online.stdout_lines]
    answer = next(i for i, f in enumerate(lines) if f.get("id") == request_id)
    assert max(i for i, f in enumerate(lines) if f.get("method") == "runtime.progress") < answer

    online.call("load_model", {"model_id": "downloaded", "local_path": str(folder)})
    online.call("load_model", {"model_id": "original", "local_path": str(llama_dir)})
    params = {"prompt": "hello world", "max_tokens": 8, "temperature": 0}
    got = online.generate({"model_id": "downloaded", **params})
    want = online.generate({"model_id": "original", **params})
    assert got["tokens"] == want["tokens"] and len(got["tokens"]) > 0


def test_a_second_download_comes_from_the_cache(online: RuntimeClient, hub: FakeHub) -> None:
    first = online.call("download_model", {"repo_id": REPO}, timeout=120)
    before = len(hub.requests)
    second = online.call("download_model", {"repo_id": REPO}, timeout=120)
    assert second["local_path"] == first["local_path"]
    assert not [r for r in hub.requests[before:] if r.method == "GET" and "/resolve/" in r.path]


@pytest.mark.parametrize(
    ("params", "code", "text"),
    [
        ({"repo_id": "tests/missing"}, -32001, "repository 'tests/missing' was not found"),
        ({"repo_id": REPO, "revision": "v9"}, -32001, "revision 'v9' of 'tests/llama'"),
        ({"repo_id": "not a repo id!"}, -32602, "repo_id"),
        ({"repo_id": REPO, "allow_patterns": ["*.gguf"]}, -32001, "matches the allow patterns"),
    ],
)
def test_download_errors(
    online: RuntimeClient, params: dict[str, object], code: int, text: str
) -> None:
    error = online.request("download_model", params, timeout=120)["error"]
    assert error["code"] == code
    assert text in error["message"] or text == error.get("data", {}).get("field")


def test_offline_mode_uses_the_cache_or_says_why_not(
    online: RuntimeClient, hub: FakeHub, hf_home: Path, tmp_path: Path
) -> None:
    cached = online.call("download_model", {"repo_id": REPO}, timeout=120)["local_path"]
    roots = json.dumps([str(hf_home), str(tmp_path / "allowed")])
    env = _hub_env(
        hub, hf_home, HF_HUB_OFFLINE="1", MLX_SERVING_SECURITY__ALLOWED_MODEL_ROOTS=roots
    )
    before = len(hub.requests)
    with RuntimeClient(env=env) as offline:
        assert offline.call("download_model", {"repo_id": REPO})["local_path"] == cached

        empty = str(tmp_path / "allowed" / "empty-cache")
        error = offline.request("download_model", {"repo_id": REPO, "cache_dir": empty})["error"]
        assert error["code"] == -32001
        assert "HF_HUB_OFFLINE is set" in error["message"]

        outside = str(tmp_path / "elsewhere")
        error = offline.request("download_model", {"repo_id": REPO, "cache_dir": outside})["error"]
        assert error["code"] == -32602 and error["data"]["field"] == "cache_dir"

        # The snapshot lies under an allowed root, so it loads.
        offline.call("load_model", {"model_id": "m", "local_path": cached})
    assert len(hub.requests) == before  # offline means no request at all


def test_the_download_command(hub: FakeHub, tmp_path: Path) -> None:
    env = {
        **_hub_env(hub, tmp_path / "hf"),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT / "runtime"),
    }
    command = [sys.executable, "-m", "mlx_serving.download"]
    done = subprocess.run(
        [*command, REPO, "--cache-dir", str(tmp_path / "cache"), "--allow-pattern", "*.json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert folder.is_relative_to(tmp_path / "cache")
    assert sorted(p.suffix for p in folder.iterdir()) == [".json"] * len(list(folder.iterdir()))

    done = subprocess.run(
        [*command, "tests/missing"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1
    assert "repository 'tests/missing' was not found" in done.stderr
    assert done.stdout == ""
